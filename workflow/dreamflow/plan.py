"""What the workflow runs, computed once from config.yaml: per input, everything the rules look up.

The Snakefile builds one Plan at parse time; the rules name files and parameters from it and hold
no policy of their own. Imports no torch (parsing must stay fast), and nothing of Snakemake, so it
is tested like any other module.
"""

import os
import shlex
from dataclasses import dataclass, field

from . import config as configuration
from . import remote
from .blend import uses_flow, uses_previous_frame
from .chains import Chains, node_name
from .frames import frame_name
from .job import BlendSettings, JobSettings, settings_text
from .models import FLOW_WEIGHTS, TORCHVISION_WEIGHTS, WORKFLOW_TORCH_HOME, weights_cache_file
from .serving.client import PER_RULE_CONTAINER
from .sweep import item_dream_settings, sheet_columns, sweep_cells, time_text


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
    def flow(self):
        """The flow of raw frame {frame} back to the frame before it."""
        return f"{self.work}/{{name}}/flow/{{frame}}.npz"

    @property
    def blended(self):
        """The start image of dream node {frame} (see dreamflow.chains)."""
        return f"{self.work}/{{name}}/blended/{{frame}}.{{ext}}"

    @property
    def seam(self):
        """The crossfaded output of overlap frame {frame}."""
        return f"{self.work}/{{name}}/seams/{{frame}}.{{ext}}"

    @property
    def scenes(self):
        return f"{self.work}/{{name}}/scenes.json"

    @property
    def coherence(self):
        return f"{self.results}/{{name}}/coherence.json"

    @property
    def coherence_plot(self):
        return f"{self.results}/{{name}}/coherence.png"

    @property
    def sweep_image(self):
        return f"{self.results}/{{name}}/sweep/{{item}}.{{ext}}"

    @property
    def sweep_frame(self):
        """The frame of a swept video at {at} seconds."""
        return f"{self.work}/{{name}}/sweep/{{at}}s.{{ext}}"

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
        return f"{self.logs_folder('{name}')}/{step}.log"

    def logs_folder(self, name):
        return f"{self.work}/{name}/logs"


@dataclass(frozen=True)
class InputPlan:
    """One input of config.yaml and how it is dreamed.

    Frames are dreamed as *nodes* (see dreamflow.chains): one per frame, plus a second dream of
    each overlap frame when long chains are split. Blend chains are cut at scene cuts, which are
    known only once the frames are extracted: the functions that depend on them take the input's
    Chains, which the workflow builds from the scenes file.
    """

    name: str
    path: str  # the file its steps read: the input's, or the download of its URL
    kind: str  # video, folder or image
    settings: dict  # effective dream, blend, scenes, frames, encode, zoom and sweep settings
    layout: Layout
    threads: int  # torch threads of each dream job, when the input is one chain or none
    auto_threads: bool  # resources.dream_threads is auto: chains share the cores
    blends: bool  # frames start from the previous dream of their chain (blend step, scenes)
    job_settings: str  # what every dream job of the input runs with, as stable JSON
    blend_settings: str = ""  # what every blend job of the input runs with, as stable JSON
    sweep: dict = field(default_factory=dict)  # sweep cell -> the job settings that dream it
    sweep_labels: list = field(default_factory=list)  # the contact sheet's label of each cell
    sweep_times: dict = field(default_factory=dict)  # a video's sweep cell -> its time in seconds
    sweep_columns: int = 0  # images per row of the contact sheet
    weights: str | None = None  # the weights file dream jobs read; None for embedded weights
    model_inputs: dict = field(default_factory=dict)  # guide and weights files of every dream job
    flow_weights: str | None = None  # the RAFT weights file flow jobs read
    url: str | None = None  # the http(s) URL the input is downloaded from

    @property
    def frame_format(self):
        return self.settings["frames"]["format"]

    @property
    def zoom_frames(self):
        zoom = self.settings["zoom"]
        return zoom["frames"] if zoom else None

    @property
    def flow_method(self):
        """The optical flow of the blend, or None when no flow files are made."""
        return (
            self.settings["blend"]["flow"]
            if self.blends and uses_flow(self.settings["blend"])
            else None
        )

    @property
    def flow_device(self):
        """RAFT runs where the dream runs; the OpenCV methods always on the CPU (so a changed
        device reruns no OpenCV flow)."""
        raft = (self.flow_method or "").startswith("raft")
        return self.settings["dream"]["device"] if raft else "cpu"

    @property
    def scenes_settings(self):
        return settings_text(self.settings["scenes"])

    @property
    def measures_coherence(self):
        """Videos and image folders get a coherence figure; stills, zooms and sweeps do not."""
        return self.kind != "image" and not self.sweep

    def chains(self, count, cuts=()):
        """The chains of `count` frames with scene cuts at `cuts`. Without blending every frame is
        its own chain (a zoom's chain is its own; see dream_inputs)."""
        if not self.blends:
            return Chains(count, cuts=range(2, count + 1))  # every frame on its own
        blend = self.settings["blend"]
        return Chains(count, cuts, blend["max_chain"], blend["overlap"])

    def dream_threads(self, chains):
        """Torch threads per dream job: with dream_threads auto, the cores are shared among the
        chains, which run side by side."""
        if not (self.blends and self.auto_threads):
            return self.threads
        return max(1, self.threads // len(chains.segments))

    def dream_inputs(self, node, chains):
        """The files dream node `node` = (number, lead) reads: its start image (the raw frame, or
        the blend step's start image in a chain, as "start"), the previous dream for zoom
        frames, and the model files."""
        number, lead = node
        inputs = {}
        if self.zoom_frames:
            if number == 1:
                inputs["frame"] = self.raw_frame(1)
            else:
                inputs["previous"] = self.dreamed_frame(number - 1)
        elif self.blends and chains.previous(number, lead):
            inputs["start"] = self.blended_frame(number, lead)
        else:
            inputs["frame"] = self.raw_frame(number)
        inputs.update(self.model_inputs)
        return inputs

    def blend_inputs(self, node, chains):
        """The files the blend of node `node` reads: raw frame N, the dream it continues, and with
        a flow the raw frame before and the pair's flow file."""
        number, lead = node
        previous = chains.previous(number, lead)
        inputs = {"frame": self.raw_frame(number), "previous": self.dreamed_frame(*previous)}
        if self.flow_method:
            inputs["previous_frame"] = self.raw_frame(number - 1)
            inputs["flow"] = self.flow_file(number)
        return inputs

    def flow_inputs(self, number):
        inputs = {"previous_frame": self.raw_frame(number - 1), "frame": self.raw_frame(number)}
        if self.flow_weights:
            inputs["weights"] = self.flow_weights
        return inputs

    def raw_frame(self, number):
        return (
            f"{self.layout.frames.format(name=self.name)}/{frame_name(number)}.{self.frame_format}"
        )

    def dreamed_frame(self, number, lead=False):
        return self.layout.dreamed.format(
            name=self.name, frame=node_name(number, lead), ext=self.frame_format
        )

    def blended_frame(self, number, lead=False):
        return self.layout.blended.format(
            name=self.name, frame=node_name(number, lead), ext=self.frame_format
        )

    def seam_frame(self, number):
        return self.layout.seam.format(
            name=self.name, frame=frame_name(number), ext=self.frame_format
        )

    def flow_file(self, number):
        return self.layout.flow.format(name=self.name, frame=frame_name(number))

    def frame_count(self, extracted):
        """Frames to dream, given how many the extraction made."""
        return self.zoom_frames or extracted

    def step_files(self, chains):
        """Every dream, start image and flow file: each is a target, so that a deleted one is
        always made again (and what depends on it redone), not skipped as an intermediate file
        whose dependants are complete."""
        files = [self.dreamed_frame(*node) for node in chains.nodes()]
        if self.blends:
            linked = [node for node in chains.nodes() if chains.previous(*node)]
            files += [self.blended_frame(*node) for node in linked]
            if self.flow_method:
                files += [self.flow_file(n) for n in sorted({number for number, _ in linked})]
        return files

    def final_frames(self, chains):
        """The frames of the result, in order: dreams, and crossfades at overlaps."""
        seams = set(chains.seams)
        return [
            self.seam_frame(n) if n in seams else self.dreamed_frame(n)
            for n in range(1, chains.count + 1)
        ]

    def sweep_image(self, item):
        return self.layout.sweep_image.format(name=self.name, item=item, ext=self.frame_format)

    def sweep_frame(self, item):
        """The frame sweep cell `item` dreams: a video's frame at the cell's time, grabbed on
        its own, or the image's one frame."""
        if item not in self.sweep_times:
            return self.raw_frame(1)
        at = time_text(self.sweep_times[item])
        return self.layout.sweep_frame.format(name=self.name, at=at, ext=self.frame_format)

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
    def seams_folder(self):
        return os.path.dirname(self.layout.seam.format(name=self.name, frame="f", ext="e"))

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
    """The settings a dream job needs, and nothing else: changing encode or blend settings reruns
    no dream by itself."""
    return JobSettings(
        dream=settings["dream"],
        zoom=settings["zoom"],
        jpg_quality=settings["frames"]["jpg_quality"],
    )


def blend_settings(settings):
    """The settings a blend job needs."""
    unused = BlendSettings.UNUSED_KEYS["blend"]
    return BlendSettings(
        blend={key: value for key, value in settings["blend"].items() if key not in unused},
        start=settings["dream"]["start"],
        seed=settings["dream"]["seed"],
        jpg_quality=settings["frames"]["jpg_quality"],
    )


class Plan:
    """The validated config and an InputPlan per input. Raises DreamflowError on bad config."""

    def __init__(self, config, cores):
        self.config = configuration.validate(config)
        kinds = configuration.check_inputs(self.config)
        self.layout = Layout(
            configuration.unambiguous_path(self.config["work_dir"]),
            configuration.unambiguous_path(self.config["results_dir"]),
        )
        self.inputs = {
            name: self._input_plan(name, entry["path"], kinds[name], cores)
            for name, entry in self.config["inputs"].items()
        }

    def _input_plan(self, name, path, kind, cores):
        settings = configuration.settings_for(self.config, name)
        # a sweep dreams each frame on its own, whatever the blend settings
        single = settings["zoom"] or settings["sweep"]
        blends = not single and kind != "image" and uses_previous_frame(settings["blend"])
        chained = blends or bool(settings["zoom"])
        setting = self.config["resources"]["dream_threads"]
        threads = dream_threads(setting, chained, cores)
        job = job_settings(settings)
        sweep, labels, times, columns = {}, [], {}, 0
        if settings["sweep"]:
            layers, at = settings["sweep"]["layers"], settings["sweep"].get("at")
            cells = sweep_cells(layers, at)
            for item, cell in cells.items():
                dream = item_dream_settings(settings["dream"], cell.terms)
                sweep[item] = job.replace(dream=dream).text()
                labels.append(cell.label)
                if cell.seconds is not None:
                    times[item] = cell.seconds
            columns = sheet_columns(layers, at, settings["sweep"]["columns"])
        weights = weights_file(settings["dream"])
        model_inputs = {"guide": settings["dream"]["guide"], "weights": weights}
        flow = settings["blend"]["flow"]
        url = path if remote.is_url(path) else None
        # what every step reads: the file, or the download of a URL into the work folder
        local_path = (
            remote.local_copy(self.layout.work, name, remote.suffix(url))
            if url
            else configuration.unambiguous_path(path)
        )
        return InputPlan(
            name=name,
            path=local_path,
            url=url,
            kind=kind,
            settings=settings,
            layout=self.layout,
            threads=threads,
            auto_threads=setting == "auto",
            blends=blends,
            job_settings=job.text(),
            blend_settings=blend_settings(settings).text() if blends else "",
            sweep=sweep,
            sweep_labels=labels,
            sweep_times=times,
            sweep_columns=columns,
            weights=weights,
            model_inputs={key: file for key, file in model_inputs.items() if file},
            flow_weights=weights_cache_file(flow) if blends and flow in FLOW_WEIGHTS else None,
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
        """The dream threads when every input has the same, else None: a number spares
        Snakemake a function call per job."""
        if any(plan.blends and plan.auto_threads for plan in self):
            return None  # shared among the chains of the input, known only after scene detection
        counts = {plan.threads for plan in self}
        return counts.pop() if len(counts) == 1 else None

    @property
    def weights_cache_files(self):
        """Cache files of the torchvision models in use without a weights file of their own, and
        of the RAFT flow models in use."""
        dream_files = {
            plan.weights for plan in self if plan.weights and not plan.settings["dream"]["weights"]
        }
        return sorted(dream_files | {plan.flow_weights for plan in self if plan.flow_weights})

    @property
    def ffmpeg_threads(self):
        return self.config["resources"]["ffmpeg_threads"]

    @property
    def container(self):
        return self.config["container"]


def job_shell_prefix(python_executable, in_container, data_dirs=(), torch_home=None):
    """The prefix of every job's shell command (Snakemake's shell.prefix): bash's strict mode; on
    the host the folder of the Python running Snakemake first on PATH, so that jobs find its
    `dreamflow` command when the virtual environment is not activated (as in the README's
    commands; in a container, the image's own `dreamflow` runs); those of `data_dirs` (the
    work and results directories) that lie outside the workflow directory in
    DREAMFLOW_SERVER_ROOTS, the directories besides its own whose files the model server may
    use; and `torch_home`, the torch cache the workflow fetches weights into, for the job to
    check that it reads the same one (models.check_workflow_cache). The prefix runs inside a
    job's container, so what it exports reaches the job whatever the container drops of the
    host's environment; it is not part of what Snakemake compares to decide reruns. In a
    container of its own (`--sdm apptainer`), a job may use a model server that is running but
    never starts one (serving.client.PER_RULE_CONTAINER says why)."""
    prefix = "set -euo pipefail; "
    if in_container:
        prefix += f"export {PER_RULE_CONTAINER}=1; "
    if torch_home:
        prefix += f"export {WORKFLOW_TORCH_HOME}={shlex.quote(torch_home)}; "
    here = os.path.realpath(os.getcwd())  # Snakemake's working directory, the jobs' too
    outside = []
    for directory in map(os.path.realpath, data_dirs):
        if os.path.commonpath([directory, here]) != here and directory not in outside:
            outside.append(directory)
    if outside:
        roots = shlex.quote(os.pathsep.join(outside))  # and those the user gave, if any
        kept = '"${DREAMFLOW_SERVER_ROOTS:+:$DREAMFLOW_SERVER_ROOTS}"'
        prefix += f"export DREAMFLOW_SERVER_ROOTS={roots}{kept}; "
    folder = os.path.dirname(python_executable)
    if not in_container and os.path.exists(os.path.join(folder, "dreamflow")):
        prefix += f'PATH={shlex.quote(folder)}:"$PATH"; '
    # Snakemake formats the prefix like a shell command: braces in the paths must be doubled
    return prefix.replace("{", "{{").replace("}", "}}")
