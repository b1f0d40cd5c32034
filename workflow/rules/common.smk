# Glue between Snakemake and the plan: the plan (dreamflow.plan) decides everything per input;
# this module only builds it once and turns its answers into input and params functions.

import inspect
import re
import time

from snakemake.common import overwrite_function_params
from snakemake.exceptions import IncompleteCheckpointException, WorkflowError
from snakemake.settings.types import DeploymentMethod

from dreamflow import __version__ as DREAMFLOW_VERSION
from dreamflow.errors import DreamflowError
from dreamflow.chains import NODE_PATTERN, parse_node, ranges_text
from dreamflow.frames import count_frames, frame_name
from dreamflow.gpu import run_warning
from dreamflow.joblogs import summary_since
from dreamflow.models import (
    FLOW_WEIGHTS,
    TORCHVISION_WEIGHTS,
    model_of_weights_file,
    torch_cache_dir,
    torch_home,
)
from dreamflow.plan import Plan, job_shell_prefix
from dreamflow import remote
from dreamflow.runlock import claim_run, tidy_after_run
from dreamflow.scenes import read_scenes


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
RUN_STARTED = time.time()

# Inputs given as URLs, {name: url} (see dreamflow.remote). Snakemake asks the server about each
# one on every run anyway (the storage plugin's HEAD request), and when the file is not there it
# stops in several lines that name only the URL: asking first lets the error name the input.
URL_INPUTS = {plan.name: plan.url for plan in PLAN if plan.url}
if workflow.is_main_process:
    for name, url in URL_INPUTS.items():
        try:
            remote.check_available(url)
        except DreamflowError as error:
            raise WorkflowError(
                f"dreamflow: error: config key inputs.{name}.path: {error}"
            ) from None


def url_input(wildcards):
    """A URL input as a storage file that Snakemake does not retrieve: it only asks the server
    for the file's Last-Modified, which reruns the download when newer than the local copy."""
    return storage.http(URL_INPUTS[wildcards.name], retrieve=False)


def end_of_run():
    """Remove what killed jobs or servers left half-written during the run (dreamflow.runlock),
    then print the warnings of this run's jobs and a line per input that failed
    (dreamflow.joblogs)."""
    tidy_after_run((LAYOUT.work, LAYOUT.results))
    folders = {name: LAYOUT.logs_folder(name) for name in PLAN.names}
    warnings, failures = summary_since(folders, RUN_STARTED)
    for line in [line for line in warnings if line not in STARTED_WARNINGS] + failures:
        print(line, file=sys.stderr)


onsuccess:
    end_of_run()


onerror:
    end_of_run()


# A killed run's Snakemake locks would stop this one: the main process (not a job's Snakemake, not
# a dry run, which takes no locks) removes them, and its jobs' half-written files, when no other
# run is alive here (dreamflow.runlock). The working directory (--directory) is current already.
if workflow.is_main_process and not workflow.output_settings.dryrun:
    claim_run(".snakemake", (LAYOUT.work, LAYOUT.results))

IN_CONTAINER = bool(PLAN.container) and (
    DeploymentMethod.APPTAINER in workflow.deployment_settings.deployment_method
)
# A GPU that torch cannot use leaves the run dreaming on the CPU: the main process of a run on this
# machine says so at the start, once (dreamflow.gpu). Jobs on a cluster or in an image may see
# another GPU and torch: their logs say it, and end_of_run prints it once.
STARTED_WARNINGS = []
if workflow.is_main_process and workflow.resource_settings.nodes is None and not IN_CONTAINER:
    warning = run_warning({plan.settings["dream"]["device"] for plan in PLAN})
    if warning:
        print(warning, file=sys.stderr)
        STARTED_WARNINGS.append(warning)

# The torch cache this run fetches weights into goes into every job's command: a job that reads
# another one says so (dreamflow.models.check_workflow_cache).
shell.prefix(
    job_shell_prefix(
        sys.executable,
        IN_CONTAINER,
        (PLAN.config["work_dir"], PLAN.config["results_dir"]),
        torch_home=torch_home(),
    )
)
# Jobs in containers get the cache as a bind (profiles/slurm-apptainer), whose source must exist
# before a container starts, even when every model in use has embedded weights and it stays empty.
if IN_CONTAINER and workflow.is_main_process and not workflow.output_settings.dryrun:
    try:
        os.makedirs(torch_home(), exist_ok=True)
    except OSError as error:
        raise WorkflowError(
            f"dreamflow: error: cannot make the torch cache {torch_home()} (TORCH_HOME): "
            f"{error.strerror}"
        ) from None


wildcard_constraints:
    name="|".join(re.escape(name) for name in PLAN.names),
    frame=NODE_PATTERN,
    ext="png|jpg",
    url_suffix=r"(\.[a-z0-9]{1,10})?",
    item=r"\d\d+-[A-Za-z0-9_.+-]+",
    weights_file="|".join(
        re.escape(file) for _, file in [*TORCHVISION_WEIGHTS.values(), *FLOW_WEIGHTS.values()]
    ),


def per_frame(function):
    """Marks an input or params function that Snakemake calls once per frame job: Snakemake reads
    such a function's signature (inspect.signature) several times per job, a cost that grows with
    the video; reading it once here is Snakemake's own hook for fixed parameters."""
    overwrite_function_params(function, inspect.signature(function).parameters)
    return function


def frames_folder(name):
    """The extracted frames of `name`; asking the checkpoint orders the asking job after extraction."""
    return checkpoints.extract_frames.get(name=name).output.frames


CHAINS = {}  # (name, file the chains come from, its mtime) -> Chains


def chains_of(name):
    """The chains of an input: from its scenes file when it blends (a checkpoint: asking for it
    orders the asking job after scene detection), else from the extracted frames."""
    plan = PLAN[name]
    if plan.blends:
        source = checkpoints.scenes.get(name=name).output.scenes
    else:
        source = frames_folder(name)
    key = (name, source, os.stat(source).st_mtime_ns)
    if key not in CHAINS:
        if plan.blends:
            scenes = read_scenes(source)
            CHAINS[key] = plan.chains(scenes["frames"], scenes["cuts"])
        else:
            CHAINS[key] = plan.chains(plan.frame_count(count_frames(source, plan.frame_format)))
    return CHAINS[key]


def final_frames(wildcards):
    plan = PLAN[wildcards.name]
    return plan.final_frames(chains_of(plan.name))


def chains_params(wildcards, input):
    """The encode and coherence options that name the output frames: the dreamed frames, and the
    crossfades of overlap frames."""
    plan = PLAN[wildcards.name]
    chains = chains_of(plan.name)
    arguments = ["--frames-dir", os.path.dirname(plan.dreamed_frame(1)), "--count", chains.count]
    if chains.seams:
        arguments += ["--seams-dir", plan.seams_folder, "--seams", ranges_text(chains.seams)]
    return [str(argument) for argument in arguments]


def node_chains(plan):
    """The chains a node's input function needs: only blend chains depend on the scenes file."""
    return chains_of(plan.name) if plan.blends else None


CHAIN_GROUPS = {}  # Chains -> (group of each chained node, group of each frame's flow)


def chain_groups(plan):
    """The groups of a blended input's frame steps: one per chain of two or more nodes (a scene,
    or a segment of a long one), named by the input and the chain's first frame. A flow belongs
    to a chain only when that chain alone reads it; an overlap frame's flow is read by both
    segments, and in either one's group it would make the other wait for that whole group."""
    chains = chains_of(plan.name)
    if chains not in CHAIN_GROUPS:
        nodes, first = {}, {}
        for node in chains.nodes():  # in chain order: a node's predecessor comes before it
            previous = chains.previous(*node)
            first[node] = first[previous] if previous else node[0]
            if previous:
                nodes[node] = nodes[previous] = f"chain-{plan.name}-{frame_name(first[node])}"
        flows = {}
        for node, group in nodes.items():
            if chains.previous(*node):  # a blended node, whose blend reads frame N's flow
                flows.setdefault(node[0], set()).add(group)
        CHAIN_GROUPS[chains] = nodes, {n: g.pop() for n, g in flows.items() if len(g) == 1}
    return CHAIN_GROUPS[chains]


def cluster_only(group):
    """A rule's `group`: `group` when the run submits jobs to a cluster (--jobs, which the SLURM
    profiles set; the submitted job's Snakemake on the node gets --jobs too) or is a dry run of one,
    else None. Local runs build no groups, and a plain dry run would, at a cost that grows steeply
    with a chain's length; None spares Snakemake a call per frame job as well."""
    return group if workflow.resource_settings.nodes is not None else None


@per_frame
def chain_group(wildcards):
    """The group of a dream or blend job: its chain, one submission of frames in order, side by
    side with the input's other chains. None (a job of its own, or a task of a job array) for an
    independent frame."""
    plan = PLAN[wildcards.name]
    if plan.zoom_frames:  # each zoom frame starts from the dream before it: one chain
        return f"chain-{plan.name}-{frame_name(1)}"
    if not plan.blends:
        return None
    return chain_groups(plan)[0].get(parse_node(wildcards.frame))


@per_frame
def flow_group(wildcards):
    """The group of a flow job: the chain whose blend reads it, or None for an overlap frame,
    whose flow both segments read (see chain_groups)."""
    return chain_groups(PLAN[wildcards.name])[1].get(int(wildcards.frame))


@per_frame
def dream_frame_inputs(wildcards):
    """The start image (raw frame N, or in a blend chain the blend step's start image), the
    previous dream for zoom frames (the DAG edge: dream N waits for dreamed N-1), the guide image
    and the weights. Dream jobs are only asked for once the frames are extracted and their scenes
    known, so the paths need no checkpoint."""
    plan = PLAN[wildcards.name]
    return plan.dream_inputs(parse_node(wildcards.frame), node_chains(plan))


@per_frame
def dream_frame_settings(wildcards):
    return PLAN[wildcards.name].job_settings


@per_frame
def dream_frame_paths(wildcards, input):
    arguments = ["--number", str(parse_node(wildcards.frame)[0])]
    for key in ("frame", "previous"):
        if key in input.keys():
            arguments += [f"--{key}", input[key]]
    if "start" in input.keys():
        arguments += ["--frame", input.start, "--prepared"]
    return arguments


@per_frame
def dream_frame_threads(wildcards):
    plan = PLAN[wildcards.name]
    return plan.dream_threads(node_chains(plan))


@per_frame
def blend_inputs(wildcards):
    plan = PLAN[wildcards.name]
    return plan.blend_inputs(parse_node(wildcards.frame), chains_of(plan.name))


@per_frame
def blend_settings(wildcards):
    return PLAN[wildcards.name].blend_settings


@per_frame
def blend_paths(wildcards, input):
    arguments = ["--number", str(parse_node(wildcards.frame)[0])]
    for key in ("frame", "previous", "previous_frame", "flow"):
        if key in input.keys():
            arguments += [f"--{key.replace('_', '-')}", input[key]]
    return arguments


@per_frame
def flow_inputs(wildcards):
    return PLAN[wildcards.name].flow_inputs(int(wildcards.frame))


def crossfade_inputs(wildcards):
    """The two dreams of an overlap frame, and the scenes file: the weight comes from the chains,
    and a crossfade submitted on its own (to a cluster) finds them only through its input."""
    plan = PLAN[wildcards.name]
    number = int(wildcards.frame)
    return {
        "old": plan.dreamed_frame(number),
        "new": plan.dreamed_frame(number, lead=True),
        "scenes": checkpoints.scenes.get(name=plan.name).output.scenes,
    }


def crossfade_weight(wildcards):
    return chains_of(wildcards.name).lead_weight(int(wildcards.frame))


def coherence_inputs(wildcards):
    plan = PLAN[wildcards.name]
    inputs = {}
    if plan.blends:
        # the scenes checkpoint first: asking the extraction first failed the job on SLURM
        inputs["scenes"] = checkpoints.scenes.get(name=plan.name).output.scenes
    return {"raw": frames_folder(plan.name), "frames": final_frames(wildcards), **inputs}


def sweep_layer_inputs(wildcards):
    """The frame a sweep cell dreams: an image's, after its extraction; a video's frame at the
    cell's time, grabbed on its own (grab_frame), the video not extracted."""
    plan = PLAN[wildcards.name]
    if not plan.sweep_times:
        frames_folder(wildcards.name)  # orders the job after the extraction
    return {"frame": plan.sweep_frame(wildcards.item), **plan.model_inputs}


def sweep_images(wildcards):
    plan = PLAN[wildcards.name]
    return [plan.sweep_image(item) for item in plan.sweep]


def all_targets(wildcards):
    """Every result, and every file of the frame steps as well, so that a deleted one is always
    made again."""
    targets = []
    for plan in PLAN:
        try:
            if not plan.sweep:
                chains = chains_of(plan.name)
                targets += plan.step_files(chains) + plan.final_frames(chains)
                if plan.measures_coherence:
                    targets += [
                        LAYOUT.coherence.format(name=plan.name),
                        LAYOUT.coherence_plot.format(name=plan.name),
                    ]
            targets.append(plan.result)
            targets += report_files(plan)  # the report's figures (workflow/rules/report.smk)
        except IncompleteCheckpointException as pending:
            # ask this input's checkpoint and go on with the others, rather than stop at the
            # first input not extracted: every input's extraction is then ready at once, and one
            # that fails (a corrupt file) does not hide the others' frame jobs from --keep-going
            targets.append(pending.targetfile)
    return targets
