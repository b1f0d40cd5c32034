# Shared parts: config validation (once, before any job) and the helpers input functions use.

import re

from snakemake.exceptions import WorkflowError

from dreamflow import config as dreamflow_config
from dreamflow.blend import uses_previous_frame
from dreamflow.errors import DreamflowError
from dreamflow.frames import FRAME_PATTERN, frame_name

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


def input_path(wildcards):
    return config["inputs"][wildcards.name]["path"]


def frame_format(name):
    return SETTINGS[name]["frames"]["format"]


def settings_json(name, *sections):
    return dreamflow_config.canonical_json({s: SETTINGS[name][s] for s in sections})


def dream_settings_json(wildcards):
    settings = SETTINGS[wildcards.name]
    return dreamflow_config.canonical_json({"dream": settings["dream"], "blend": settings["blend"],
                                            "jpg_quality": settings["frames"]["jpg_quality"]})


def frame_count(name):
    """Frames extracted for `name`; known only once the extract_frames checkpoint has run."""
    folder = checkpoints.extract_frames.get(name=name).output.frames
    suffix = "." + frame_format(name)
    return sum(1 for entry in os.scandir(folder) if entry.name.endswith(suffix))


def dreamed_frames_of(name):
    pattern = rules.dream_frame.output.frame
    ext = frame_format(name)
    return [pattern.format(name=name, frame=frame_name(n), ext=ext) for n in range(1, frame_count(name) + 1)]


def previous_dreamed_frame(wildcards):
    """The blend edge: with blending on, dream N waits for dreamed N-1."""
    number = int(wildcards.frame)
    if number == 1 or not uses_previous_frame(SETTINGS[wildcards.name]["blend"]):
        return []
    return rules.dream_frame.output.frame.format(
        name=wildcards.name, frame=frame_name(number - 1), ext=wildcards.ext)


def result_path(name):
    if INPUT_KINDS[name] == "image":
        return rules.publish_image.output.image.format(name=name, ext=frame_format(name))
    return rules.encode.output.video.format(name=name)


def dreamed_frames(wildcards):
    return dreamed_frames_of(wildcards.name)


def all_targets(wildcards):
    targets = []
    for name in config["inputs"]:
        targets += dreamed_frames_of(name)
        targets.append(result_path(name))
    return targets
