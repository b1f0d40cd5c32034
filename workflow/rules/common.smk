# Shared parts: config validation (once, before any job) and the helpers input functions use.

import inspect
import re

from snakemake.common import overwrite_function_params
from snakemake.exceptions import WorkflowError

from dreamflow import config as dreamflow_config
from dreamflow.blend import uses_previous_frame
from dreamflow.errors import DreamflowError
from dreamflow.frames import FRAME_PATTERN, frame_name
from dreamflow.models import TORCHVISION_WEIGHTS, torch_cache_dir, weights_cache_file
from dreamflow.naming import safe, terms_label

try:
    _validated = dreamflow_config.validate(config)
    INPUT_KINDS = dreamflow_config.check_inputs(_validated)
except DreamflowError as error:
    raise WorkflowError(f"dreamflow: invalid configuration:\n{error}") from None
config.update(_validated)

SETTINGS = {name: dreamflow_config.settings_for(config, name) for name in config["inputs"]}
WORK = config["work_dir"]
RESULTS = config["results_dir"]

# the job running a rule finds `dreamflow` next to the Python that runs Snakemake
_bin = os.path.dirname(sys.executable)
if os.path.exists(os.path.join(_bin, "dreamflow")):
    os.environ["PATH"] = _bin + os.pathsep + os.environ.get("PATH", "")


wildcard_constraints:
    name="|".join(re.escape(name) for name in config["inputs"]),
    frame=FRAME_PATTERN,
    ext="png|jpg",
    item=r"\d\d+-[A-Za-z0-9_.+-]+",
    weights_file="|".join(re.escape(file) for _, file in TORCHVISION_WEIGHTS.values()),


def input_path(wildcards):
    return config["inputs"][wildcards.name]["path"]


def frame_format(name):
    return SETTINGS[name]["frames"]["format"]


def settings_json(name, *sections):
    return dreamflow_config.canonical_json({s: SETTINGS[name][s] for s in sections})


def dream_job_settings(name, **dream_changes):
    """What a dream job needs, and nothing else: changing encode settings must not rerun dreams."""
    settings = SETTINGS[name]
    return dreamflow_config.canonical_json({
        "dream": {**settings["dream"], **dream_changes}, "blend": settings["blend"],
        "zoom": settings["zoom"], "jpg_quality": settings["frames"]["jpg_quality"]})


# the same for every frame of an input: made once, not once per job
DREAM_SETTINGS = {name: dream_job_settings(name) for name in config["inputs"]}


def frames_folder(name):
    """The extracted frames of `name`; asking the checkpoint orders the asking job after extraction."""
    return checkpoints.extract_frames.get(name=name).output.frames


def extracted_frame(name, number):
    return os.path.join(frames_folder(name), f"{frame_name(number)}.{frame_format(name)}")


def frame_count(name):
    """Frames extracted for `name`; known only once the extract_frames checkpoint has run."""
    folder = frames_folder(name)
    suffix = "." + frame_format(name)
    return sum(1 for entry in os.scandir(folder) if entry.name.endswith(suffix))


def dreamed_frames_of(name):
    zoom = SETTINGS[name]["zoom"]
    count = frame_count(name)  # also orders every dream job after the extraction
    if zoom:
        count = zoom["frames"]
    pattern = rules.dream_frame.output.frame
    ext = frame_format(name)
    return [pattern.format(name=name, frame=frame_name(n), ext=ext) for n in range(1, count + 1)]


def dreamed_frames(wildcards):
    return dreamed_frames_of(wildcards.name)


def per_frame(function):
    """Marks an input or params function that Snakemake calls once per frame job: Snakemake reads
    such a function's signature (inspect.signature) several times per job, a cost that grows with
    the video; reading it once here is Snakemake's own hook for fixed parameters."""
    overwrite_function_params(function, inspect.signature(function).parameters)
    return function


@per_frame
def dream_frame_settings(wildcards):
    return DREAM_SETTINGS[wildcards.name]


def all_cores():
    try:
        return workflow.cores
    except WorkflowError:  # no --cores (a dry run, some cluster set-ups): this machine's
        return os.cpu_count() or 1


def frames_chain(name):
    """Whether each dreamed frame of `name` needs the previous one: zooming, or blending a sequence."""
    settings = SETTINGS[name]
    return bool(settings["zoom"]) or (INPUT_KINDS[name] != "image" and uses_previous_frame(settings["blend"]))


CHAINED = {name: frames_chain(name) for name in config["inputs"]}


def dream_threads_of(name):
    threads = config["resources"]["dream_threads"]
    if threads != "auto":
        return threads
    if CHAINED[name]:
        return all_cores()  # a chain dreams one frame at a time
    # independent frames one per core: on 2 cores a pair takes 1.41 s against 2.04 s one after
    # the other with 2 threads each (small frames use threads poorly)
    return 1


DREAM_THREADS = {name: dream_threads_of(name) for name in config["inputs"]}


@per_frame
def dream_frame_threads(wildcards):
    return DREAM_THREADS[wildcards.name]


# a number when every input has the same (the usual case), so the jobs skip a function call each
DREAM_JOB_THREADS = (next(iter(DREAM_THREADS.values())) if len(set(DREAM_THREADS.values())) == 1
                     else dream_frame_threads)


@per_frame
def dream_frame_inputs(wildcards):
    """The raw frame (none for zoom frames after the first), the previous dream when blending or
    zooming (the chain edge: dream N waits for dreamed N-1), the guide image and the weights."""
    name, number = wildcards.name, int(wildcards.frame)
    settings = SETTINGS[name]
    inputs = {}
    if not (settings["zoom"] and number > 1):
        # dream jobs are only asked for once the extract_frames checkpoint has run, so the path
        # can be named without asking the checkpoint (which is slow, once per job)
        inputs["frame"] = f"{WORK}/{name}/frames/{frame_name(number)}.{wildcards.ext}"
    if number > 1 and CHAINED[name]:
        inputs["previous"] = rules.dream_frame.output.frame.format(
            name=name, frame=frame_name(number - 1), ext=wildcards.ext)
    if settings["dream"]["guide"]:
        inputs["guide"] = settings["dream"]["guide"]
    for weights in weights_file(wildcards):
        inputs["weights"] = weights
    return inputs


@per_frame
def dream_frame_paths(wildcards, input):
    arguments = []
    for key in ("frame", "previous"):
        if key in input.keys():
            arguments += [f"--{key}", input[key]]
    return arguments


def guide_image(wildcards):
    """A guide image is an input, so replacing it reruns the dreams that used it."""
    guide = SETTINGS[wildcards.name]["dream"]["guide"]
    return [guide] if guide else []


def weights_file(wildcards):
    """The weights a dream job reads: the user's file, or the torch cache file fetch_model fills."""
    dream = SETTINGS[wildcards.name]["dream"]
    if dream["weights"]:
        return [dream["weights"]]
    if dream["model"] in TORCHVISION_WEIGHTS:
        return [weights_cache_file(dream["model"])]
    return []


def model_of_weights_file(file):
    return next(model for model, (_, name) in TORCHVISION_WEIGHTS.items() if name == file)


def cache_files_in_use():
    """Cache files of the torchvision models the config uses without a weights file of its own."""
    return sorted({weights_cache_file(s["dream"]["model"]) for s in SETTINGS.values()
                   if s["dream"]["model"] in TORCHVISION_WEIGHTS and not s["dream"]["weights"]})


def sweep_items(name):
    """{wildcard: terms}: one entry per sweep item, numbered so the sheet keeps the config's order."""
    return {f"{index:02d}-{safe(terms_label(terms))}": terms
            for index, terms in enumerate(SETTINGS[name]["sweep"]["layers"], start=1)}


def sweep_images(wildcards):
    pattern = rules.sweep_layer.output.image
    return [pattern.format(name=wildcards.name, item=item, ext=frame_format(wildcards.name))
            for item in sweep_items(wildcards.name)]


def result_path(name):
    if SETTINGS[name]["sweep"]:
        return rules.contact_sheet.output.sheet.format(name=name)
    if INPUT_KINDS[name] == "image" and not SETTINGS[name]["zoom"]:
        return rules.publish_image.output.image.format(name=name, ext=frame_format(name))
    return rules.encode.output.video.format(name=name)


def all_targets(wildcards):
    targets = []
    for name in config["inputs"]:
        if not SETTINGS[name]["sweep"]:
            targets += dreamed_frames_of(name)
        targets.append(result_path(name))
    return targets
