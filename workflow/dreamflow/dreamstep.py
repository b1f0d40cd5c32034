"""Dream one frame file: read it, pick its input (raw, noise, the blend step's start image, or
zoomed), dream, write atomically."""

import json
import sys

from . import blend, engine, gpu, models, objectives, schedule, transforms
from .errors import DreamflowError
from .images import read_rgb, to_array, to_tensor, write_rgb


def pick_device(name, notes=sys.stderr):
    """The torch device of dream.device `name`. auto takes the CPU when torch cannot use the GPU
    this machine shows, and says why once per process on `notes` (dreamflow.gpu); cuda stops
    with that reason."""
    import torch

    if name == "auto":
        if gpu.problem() is None and torch.cuda.is_available():
            return torch.device("cuda")
        gpu.warn_once(notes)
        return torch.device("cpu")
    if name == "cuda":
        error = gpu.cuda_error()
        if error:
            raise DreamflowError(error)
        if not torch.cuda.is_available():
            raise DreamflowError(
                "config key dream.device: cuda was requested but no CUDA device is available"
            )
    return torch.device(name)


class Dreamer:
    """A loaded model plus the dream settings it was loaded for; reusable across frames.

    The settings are a dream section that passed the config schema (config.validate_section);
    guide, start, tile_size and layer_schedule may be absent and then default to off.
    """

    def __init__(self, dream_settings, threads=None, pretrained=True, channels_last=True):
        import torch

        if threads:
            torch.set_num_threads(threads)
        self.settings = dream_settings
        self.device = pick_device(dream_settings["device"])
        # a model server hands this to each job it dreams, so that the job's log says it too
        fell_back = dream_settings["device"] == "auto" and self.device.type == "cpu"
        self.device_warning = gpu.fallback_warning() if fell_back else None
        model_name = dream_settings["model"]
        self.default_terms = models.resolve_layers(model_name, dream_settings["layers"])
        self.layer_schedule = dream_settings.get("layer_schedule")
        self.start = dream_settings.get("start") or "image"
        try:
            term_lists = schedule.all_term_lists(self.layer_schedule, self.default_terms)
        except ValueError as error:
            raise DreamflowError(f"config key dream.layer_schedule: {error}") from None
        # every layer any frame may use is checked now, not when that frame comes up
        layers = sorted({layer for terms in term_lists for layer in objectives.parse(terms).layers})
        models.check_layers(model_name, layers)
        self.model = models.build(model_name, dream_settings["weights"], pretrained=pretrained)
        if channels_last:
            # channels_last roughly halves convolution time on the CPU
            self.model.to(self.device, memory_format=torch.channels_last)
        else:  # contiguous weights: tests/benchmarks/gpu_check.py measures what channels_last gains
            self.model.to(self.device)
        self.params = engine.DreamParams.from_settings(dream_settings)
        self.guide_features = None
        if dream_settings.get("guide"):
            guide_image = to_tensor(read_rgb(dream_settings["guide"])).to(self.device)
            self.guide_features = objectives.guide_features(self.model, guide_image, layers)
        self._objectives = {}

    def objective_for(self, terms):
        """The objective for a list of terms, built once per distinct list."""
        key = json.dumps(terms, sort_keys=True)
        if key not in self._objectives:
            objective = objectives.parse(terms)
            if self.guide_features is not None:
                objective = objectives.guided(objective, self.guide_features)
            self._objectives[key] = objective
        return self._objectives[key]

    def objective_for_frame(self, frame_number):
        return self.objective_for(
            schedule.layers_for_frame(self.layer_schedule, frame_number, self.default_terms)
        )

    def start_array(self, frame, frame_number=1):
        """What frame N starts from: the frame itself, or seeded noise of its size when start is
        noise."""
        return blend.start_image(frame, self.start, self.params.seed, frame_number)

    def dream_array(self, array, frame_number=1, terms=None):
        """Dream a uint8 (H, W, 3) array with `terms`, or else the objective the layer schedule
        gives `frame_number`."""
        objective = self.objective_for(terms) if terms else self.objective_for_frame(frame_number)
        if self.device.type == "cuda":
            import torch

            # a process-wide switch, and a model server holds dreamers of several settings: set per
            # call. Picks the fastest convolution algorithms per input size after a first timed
            # pass; the choice may differ from run to run, so it is off by default
            torch.backends.cudnn.benchmark = bool(self.settings.get("cudnn_benchmark"))
        image = to_tensor(array).to(self.device)
        return to_array(engine.dream(self.model, objective, image, self.params))


def zoomed_input(previous_dream, zoom):
    """The array to dream for frame N of a zoom animation: dream N-1 zoomed (and turned) a
    little."""
    image = transforms.zoom(
        to_tensor(previous_dream), float(zoom["factor"]), float(zoom.get("angle", 0.0))
    )
    return to_array(image)


def read_input(job):
    """The image a FrameJob starts from, decoded: its frame (raw, or the blend step's start
    image), or for a zoom frame after the first the previous dream, zoomed later by dream_input.
    Separate from the dream so that a model server decodes the next frame while one dreams."""
    if job.settings.zoom and job.number > 1:
        if not job.previous:
            raise DreamflowError(
                f"zoom animation needs the previous dreamed frame for frame {job.number}"
            )
        return read_rgb(job.previous)
    if job.frame is None:
        raise DreamflowError(f"frame {job.number} has no input frame to dream")
    return read_rgb(job.frame)


def dream_input(job, dreamer, array):
    """Dream the array read_input gave for `job`: a zoom frame after the first dreams the zoomed
    previous dream; any other frame its frame, or noise of its size, or the blend step's start
    image as it is when the job says it is prepared."""
    if job.settings.zoom and job.number > 1:
        array = zoomed_input(array, job.settings.zoom)
    elif not job.prepared:
        array = dreamer.start_array(array, job.number)
    return dreamer.dream_array(array, job.number)


def write_output(job, array):
    """Write a FrameJob's dream atomically."""
    write_rgb(array, job.output, jpg_quality=job.settings.jpg_quality)


def run_job(job, dreamer):
    """Dream one FrameJob with a Dreamer loaded for its dream settings; writes job.output
    atomically."""
    write_output(job, dream_input(job, dreamer, read_input(job)))


def dream_in_process(job):
    """Check and run `job` in this process, loading the model for it."""
    from .config import validate_job_settings

    validate_job_settings(job.settings)
    run_job(job, Dreamer(job.settings.dream, threads=job.threads))
