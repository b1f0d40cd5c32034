# dreamflow: videos, image folders and single images in, DeepDream out.
# Entry point: config, the plan, rule modules and the default target. Logic lives in the
# dreamflow package (workflow/dreamflow); rules only name files and parameters.

import os
import sys

from snakemake.exceptions import WorkflowError
from snakemake.utils import min_version

min_version("9.0")

# parse-time code uses the package from this checkout, whatever is installed
sys.path.insert(0, os.path.join(workflow.basedir, "workflow"))
# a chain makes each dreamed frame depend on the one before: Snakemake's DAG walk recurses once
# per link, so long chains need a deeper stack than Python's default 1000
sys.setrecursionlimit(max(sys.getrecursionlimit(), 200_000))

from dreamflow.config import check_config_file
from dreamflow.errors import DreamflowError

try:
    check_config_file("config.yaml")
except DreamflowError as error:
    raise WorkflowError(f"dreamflow: invalid configuration:\n{error}") from None


configfile: "config.yaml"


include: "workflow/rules/common.smk"


# With `--sdm apptainer`, every rule's job runs in this image (config key `container`); null
# leaves every job on the host. It must come before the rules that it applies to.
container: PLAN.container


include: "workflow/rules/models.smk"
include: "workflow/rules/extract.smk"
include: "workflow/rules/dream.smk"
include: "workflow/rules/encode.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        all_targets,
