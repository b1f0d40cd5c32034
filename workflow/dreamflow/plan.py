"""What the workflow runs, computed once from config.yaml: per input, everything the rules look up.

The Snakefile builds one Plan at parse time; the rules name files and parameters from it and hold
no policy of their own. Imports no torch (parsing must stay fast), and nothing of Snakemake, so it
is tested like any other module.
"""

import dataclasses
import os
import shlex
from dataclasses import dataclass, field

from . import config as configuration
from .blend import uses_previous_frame
from .frames import frame_name
from .job import JobSettings, settings_text
from .models import TORCHVISION_WEIGHTS, weights_cache_file
from .sweep import item_dream_settings, sheet_labels, sweep_items


@dataclass(frozen=True)
class Layout:
    """Where every file of the workflow goes: patterns with Snakemake wildcards, and their
    fillers."""

    work: str
    results: str

    @property
    def probe(self):
        return f"{self.work}/{{name}}/probe.json"

    @property
    def frames(self):
        return f"{self.work}/{{name}}/frames"

    @property
    def dreamed(self):
        return f"{self.work}/{{name}}/dreamed/{{frame}}.{{ext}}"

    @property
    def sweep_image(self):
        return f"{self.results}/{{name}}/sweep/{{item}}.{{ext}}"

    @property
    def sweep_sheet(self):
        return f"{self.results}/{{name}}/{{name}}_sweep.png"

    @property
    def video(self):
        return f"{self.results}/{{name}}/{{name}}.mp4"

    @property
    def image(self):
        return f"{self.results}/{{name}}/{{name}}.{{ext}}"

    def log(self, step):
        """The log of a step of one input, e.g. log("dream/{frame}.{ext}")."""
        return f"{self.work}/{{name}}/logs/{step}.log"


@dataclass(frozen=True)
class InputPlan:
    """One input of config.yaml and how it is dreamed."""

    name: str
    path: str
    kind: str  # video, folder or image
    settings: dict  # effective dream, blend, frames, encode, zoom and sweep settings
    layout: Layout
    threads: int  # torch threads of each dream job
    chained: bool  # each dreamed frame starts from the previous dream (blend or zoom)
    job_settings: str  # what every dream job of the input runs with, as stable JSON
    sweep: dict = field(default_factory=dict)  # sweep item -> the job settings that dream it
    sweep_labels: list = field(default_factory=list)  # the contact sheet's label of each item
    weights: str | None = None  # the weights file dream jobs read; None for embedded weights
    model_inputs: dict = field(default_factory=dict)  # guide and weights files of every dream job

    @property
    def frame_format(self):
        return self.settings["frames"]["format"]

    @property
    def zoom_frames(self):
        zoom = self.settings["zoom"]
        return zoom["frames"] if zoom else None

    def previous(self, number):
        """The frame whose dream frame `number` starts from, or None: the chain, per frame."""
        return number - 1 if self.chained and number > 1 else None

    def needs_raw_frame(self, number):
        """Zoom frames after the first dream the previous dream only."""
        return not (self.zoom_frames and number > 1)

    def frame_count(self, extracted):
        """Frames to dream, given how many the extraction made."""
        return self.zoom_frames or extracted

    def raw_frame(self, number):
        return (
            f"{self.layout.frames.format(name=self.name)}/{frame_name(number)}.{self.frame_format}"
        )

    def dreamed_frame(self, number):
        return self.layout.dreamed.format(
            name=self.name, frame=frame_name(number), ext=self.frame_format
        )

    def dreamed_frames(self, extracted):
        return [self.dreamed_frame(n) for n in range(1, self.frame_count(extracted) + 1)]

    def sweep_image(self, item):
        return self.layout.sweep_image.format(name=self.name, item=item, ext=self.frame_format)

    @property
    def result(self):
        if self.sweep:
            return self.layout.sweep_sheet.format(name=self.name)
        if self.kind == "image" and not self.zoom_frames:
            return self.layout.image.format(name=self.name, ext=self.frame_format)
        return self.layout.video.format(name=self.name)

    @property
    def frames_settings(self):
        return settings_text(self.settings["frames"])

    @property
    def encode_settings(self):
        return settings_text({key: self.settings[key] for key in ("frames", "encode")})


def dream_threads(setting, chained, cores):
    """Torch threads per dream job. auto: a chain dreams one frame at a time, so it gets every
    core; independent frames get one thread each and run side by side, which on CPUs beats
    several threads on one small frame."""
    if setting != "auto":
        return setting
    return cores if chained else 1


def weights_file(dream):
    """The weights file a dream job reads: the user's, or the torch cache file of a torchvision
    model (which the fetch_model rule fills); None for embedded weights."""
    if dream["weights"]:
        return dream["weights"]
    if dream["model"] in TORCHVISION_WEIGHTS:
        return weights_cache_file(dream["model"])
    return None


def job_settings(settings):
    """The settings a dream job needs, and nothing else: changing encode settings reruns no
    dream."""
    return JobSettings(
        dream=settings["dream"],
        blend=settings["blend"],
        zoom=settings["zoom"],
        jpg_quality=settings["frames"]["jpg_quality"],
    )


class Plan:
    """The validated config and an InputPlan per input. Raises DreamflowError on bad config."""

    def __init__(self, config, cores):
        self.config = configuration.validate(config)
        kinds = configuration.check_inputs(self.config)
        self.layout = Layout(self.config["work_dir"], self.config["results_dir"])
        self.inputs = {
            name: self._input_plan(name, entry["path"], kinds[name], cores)
            for name, entry in self.config["inputs"].items()
        }

    def _input_plan(self, name, path, kind, cores):
        settings = configuration.settings_for(self.config, name)
        chained = bool(settings["zoom"]) or (
            kind != "image" and uses_previous_frame(settings["blend"])
        )
        threads = dream_threads(self.config["resources"]["dream_threads"], chained, cores)
        job = job_settings(settings)
        sweep, labels = {}, []
        if settings["sweep"]:
            items = sweep_items(settings["sweep"]["layers"])
            labels = sheet_labels(items)
            for item, terms in items.items():
                dream = item_dream_settings(settings["dream"], terms)
                sweep[item] = dataclasses.replace(job, dream=dream).text()
        weights = weights_file(settings["dream"])
        model_inputs = {"guide": settings["dream"]["guide"], "weights": weights}
        return InputPlan(
            name=name,
            path=path,
            kind=kind,
            settings=settings,
            layout=self.layout,
            threads=threads,
            chained=chained,
            job_settings=job.text(),
            sweep=sweep,
            sweep_labels=labels,
            weights=weights,
            model_inputs={key: file for key, file in model_inputs.items() if file},
        )

    def __getitem__(self, name):
        return self.inputs[name]

    def __iter__(self):
        return iter(self.inputs.values())

    @property
    def names(self):
        return list(self.inputs)

    @property
    def uniform_threads(self):
        """The dream threads when every input has the same (the usual case), else None: a number
        spares Snakemake a function call per job."""
        counts = {plan.threads for plan in self}
        return counts.pop() if len(counts) == 1 else None

    @property
    def weights_cache_files(self):
        """Cache files of the torchvision models in use without a weights file of their own."""
        return sorted(
            {
                plan.weights
                for plan in self
                if plan.weights and not plan.settings["dream"]["weights"]
            }
        )

    @property
    def ffmpeg_threads(self):
        return self.config["resources"]["ffmpeg_threads"]

    @property
    def container(self):
        return self.config["container"]


def job_shell_prefix(python_executable, in_container):
    """The prefix of every job's shell command (Snakemake's shell.prefix): bash's strict mode, and
    on the host the folder of the Python running Snakemake first on PATH, so that jobs find its
    `dreamflow` command when the virtual environment is not activated (as in the README's
    commands). In a container, the image's own `dreamflow` runs."""
    prefix = "set -euo pipefail; "
    folder = os.path.dirname(python_executable)
    if in_container or not os.path.exists(os.path.join(folder, "dreamflow")):
        return prefix
    # Snakemake formats the prefix like a shell command: braces in the path must be doubled
    quoted = shlex.quote(folder).replace("{", "{{").replace("}", "}}")
    return f'{prefix}PATH={quoted}:"$PATH"; '
