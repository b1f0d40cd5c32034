# The report (snakemake --report report.html): per input, a category with the result, raw frames
# beside their dreams, the coherence plot, the sweep's contact sheet and the settings. The rules
# that make the results mark them with report(); the two below make the report's own figures, which
# the default target includes (all_targets) so that a plain run leaves nothing for --report to
# miss. No torch.

import json

from dreamflow.pairs import pair_files, pair_labels, pairs_file, report_files, settings_file


report: "../report/workflow.rst"


# seconds of work on small pictures: on a cluster, not worth a submission and a node's start-up each
localrules:
    report_pairs,
    report_settings,


rule report_pairs:
    input:
        unpack(lambda wildcards: pair_files(PLAN[wildcards.name], final_frames(wildcards))),
    output:
        pairs=report(
            pairs_file(LAYOUT.results),
            caption="../report/pairs.rst",
            category="{name}",
            subcategory="Before and after",
            labels={"input": "{name}", "figure": "raw and dreamed frames"},
        ),
    log:
        LAYOUT.log("report_pairs"),
    conda:
        "../../envs/dreamflow.yaml"
    params:
        labels=lambda wildcards: pair_labels(PLAN[wildcards.name], final_frames(wildcards)),
    message:
        "Making the before/after picture of {wildcards.name}"
    shell:
        "dreamflow pairs --raw {input.raw:q} --dreamed {input.dreamed:q}"
        " --labels {params.labels:q} -o {output.pairs:q} 2> {log:q}"


# Written once the result is there: a results folder never holds settings without a result.
rule report_settings:
    input:
        result=lambda wildcards: PLAN[wildcards.name].result,
    output:
        settings=report(
            settings_file(LAYOUT.results),
            caption="../report/settings.rst",
            category="{name}",
            subcategory="Settings",
            labels={"input": "{name}", "figure": "settings"},
        ),
    log:
        LAYOUT.log("report_settings"),
    conda:
        "../../envs/dreamflow.yaml"
    params:
        settings=lambda wildcards: json.dumps(PLAN[wildcards.name].settings, indent=2),
    message:
        "Writing the settings of {wildcards.name}"
    shell:
        "printf '%s\\n' {params.settings:q} > {output.settings:q} 2> {log:q}"
