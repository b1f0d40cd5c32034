# Glue between Snakemake and the plan: the plan (dreamflow.plan) decides everything per input;
# this module only builds it once and turns its answers into input and params functions.

import inspect
import re

from snakemake.common import overwrite_function_params
from snakemake.exceptions import WorkflowError
from snakemake.settings.types import DeploymentMethod

from dreamflow.errors import DreamflowError
from dreamflow.frames import FRAME_PATTERN, count_frames
from dreamflow.models import TORCHVISION_WEIGHTS, model_of_weights_file, torch_cache_dir
from dreamflow.plan import Plan, job_shell_prefix


def all_cores():
    try:
        return workflow.cores
    except WorkflowError:  # no --cores (a dry run, some cluster set-ups): this machine's
        return os.cpu_count() or 1


try:
    PLAN = Plan(config, cores=all_cores())
except DreamflowError as error:
    raise WorkflowError(f"dreamflow: invalid configuration:\n{error}") from None
config.update(PLAN.config)
LAYOUT = PLAN.layout

IN_CONTAINER = bool(PLAN.container) and (
    DeploymentMethod.APPTAINER in workflow.deployment_settings.deployment_method
)
shell.prefix(job_shell_prefix(sys.executable, IN_CONTAINER))


wildcard_constraints:
    name="|".join(re.escape(name) for name in PLAN.names),
    frame=FRAME_PATTERN,
    ext="png|jpg",
    item=r"\d\d+-[A-Za-z0-9_.+-]+",
    weights_file="|".join(re.escape(file) for _, file in TORCHVISION_WEIGHTS.values()),


def per_frame(function):
    """Marks an input or params function that Snakemake calls once per frame job: Snakemake reads
    such a function's signature (inspect.signature) several times per job, a cost that grows with
    the video; reading it once here is Snakemake's own hook for fixed parameters."""
    overwrite_function_params(function, inspect.signature(function).parameters)
    return function


def frames_folder(name):
    """The extracted frames of `name`; asking the checkpoint orders the asking job after extraction."""
    return checkpoints.extract_frames.get(name=name).output.frames


def dreamed_frames_of(name):
    plan = PLAN[name]
    return plan.dreamed_frames(count_frames(frames_folder(name), plan.frame_format))


def dreamed_frames(wildcards):
    return dreamed_frames_of(wildcards.name)


@per_frame
def dream_frame_inputs(wildcards):
    """The raw frame (none for zoom frames after the first), the previous dream when the frame
    chains (the DAG edge: dream N waits for dreamed N-1), the guide image and the weights.
    Dream jobs are only asked for once extract_frames has run, so paths need no checkpoint."""
    plan = PLAN[wildcards.name]
    number = int(wildcards.frame)
    inputs = {}
    if plan.needs_raw_frame(number):
        inputs["frame"] = plan.raw_frame(number)
    previous = plan.previous(number)
    if previous:
        inputs["previous"] = plan.dreamed_frame(previous)
    inputs.update(plan.model_inputs)
    return inputs


@per_frame
def dream_frame_settings(wildcards):
    return PLAN[wildcards.name].job_settings


@per_frame
def dream_frame_paths(wildcards, input):
    arguments = []
    for key in ("frame", "previous"):
        if key in input.keys():
            arguments += [f"--{key}", input[key]]
    return arguments


@per_frame
def dream_frame_threads(wildcards):
    return PLAN[wildcards.name].threads


def sweep_layer_inputs(wildcards):
    plan = PLAN[wildcards.name]
    frames_folder(wildcards.name)  # orders the job after the extraction
    return {"frame": plan.raw_frame(1), **plan.model_inputs}


def sweep_images(wildcards):
    plan = PLAN[wildcards.name]
    return [plan.sweep_image(item) for item in plan.sweep]


def all_targets(wildcards):
    """Every result, and every dreamed frame as well, so that a deleted frame is always redone."""
    targets = []
    for plan in PLAN:
        if not plan.sweep:
            targets += dreamed_frames_of(plan.name)
        targets.append(plan.result)
    return targets
