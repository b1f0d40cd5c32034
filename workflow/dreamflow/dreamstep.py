"""Dream one frame file: read it, pick its input (raw, noise, blended or zoomed), dream, write atomically."""

import json

import numpy as np

from . import blend, engine, models, objectives, schedule, transforms
from .errors import DreamflowError
from .images import read_rgb, to_array, to_tensor, write_rgb


def pick_device(name):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise DreamflowError("config key dream.device: cuda was requested but no CUDA device is available")
    return torch.device(name)


class Dreamer:
    """A loaded model plus the settings it was loaded for; reusable across frames.

    Settings keys: model, weights, layers, octaves, octave_scale, iterations, step_size, jitter, seed,
    device, and optionally guide (image path), start ("image" or "noise"), tile_size and
    layer_schedule; the optional ones default to off.
    """

    def __init__(self, dream_settings, threads=None, pretrained=True):
        import torch

        if threads:
            torch.set_num_threads(threads)
        self.settings = dream_settings
        self.device = pick_device(dream_settings["device"])
        model_name = dream_settings["model"]
        self.default_terms = models.resolve_layers(model_name, dream_settings["layers"])
        self.layer_schedule = dream_settings.get("layer_schedule")
        self.start = dream_settings.get("start") or "image"
        if self.start not in ("image", "noise"):
            raise DreamflowError(f"config key dream.start: {self.start!r} is not allowed; "
                                 "allowed values: image, noise")
        try:
            term_lists = schedule.all_term_lists(self.layer_schedule, self.default_terms)
        except ValueError as error:
            raise DreamflowError(f"config key dream.layer_schedule: {error}") from None
        # every layer any frame may use is checked now, not when that frame comes up
        layers = sorted({layer for terms in term_lists for layer in objectives.parse(terms).layers})
        models.check_layers(model_name, layers)
        self.model = models.build(model_name, dream_settings["weights"], pretrained=pretrained)
        # channels_last roughly halves conv time on CPU (see DESIGN.md measurements)
        self.model.to(self.device, memory_format=torch.channels_last)
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
        return self.objective_for(schedule.layers_for_frame(self.layer_schedule, frame_number, self.default_terms))

    def start_array(self, frame, frame_number=1):
        """What frame N starts from: the frame itself, or seeded noise of its size when start is noise."""
        if self.start == "image":
            return frame
        height, width = frame.shape[:2]
        # seed + frame number: every frame gets its own noise, the same on every rerun
        return to_array(engine.noise_image(height, width, self.params.seed + frame_number))

    def dream_array(self, array, frame_number=1, terms=None):
        """Dream a uint8 (H, W, 3) array with `terms`, or else the objective the layer schedule
        gives `frame_number`."""
        objective = self.objective_for(terms) if terms else self.objective_for_frame(frame_number)
        if self.device.type == "cuda":
            import torch

            # a process-wide switch, and a model server holds dreamers of several settings: set per call.
            # Picks the fastest convolution algorithms per input size after a first timed pass; the
            # choice may differ from run to run, so it is off by default (not measured here: no GPU)
            torch.backends.cudnn.benchmark = bool(self.settings.get("cudnn_benchmark"))
        image = to_tensor(array).to(self.device)
        return to_array(engine.dream(self.model, objective, image, self.params))


def blended_input(frame, previous_dream, blend_settings, frame_number):
    """The array to dream for frame N: the raw frame, mixed with dream N-1 when blending is on."""
    factor = blend.blend_factor(blend_settings, frame_number)
    if previous_dream is None or factor == 0.0:
        return frame
    if previous_dream.shape != frame.shape:
        raise DreamflowError(
            f"previous dreamed frame has size {previous_dream.shape[1]}x{previous_dream.shape[0]}, "
            f"frame {frame_number} has {frame.shape[1]}x{frame.shape[0]}; delete the dreamed frames and rerun")
    mixed = blend.mix(frame.astype(np.float32), previous_dream.astype(np.float32), factor)
    return np.clip(np.rint(mixed), 0, 255).astype(np.uint8)


def zoomed_input(previous_dream, zoom):
    """The array to dream for frame N of a zoom animation: dream N-1 zoomed (and turned) a little."""
    image = transforms.zoom(to_tensor(previous_dream), float(zoom["factor"]), float(zoom.get("angle", 0.0)))
    return to_array(image)


def dream_frame_file(dreamer, frame_path, output_path, frame_number, blend_settings,
                     previous_path=None, jpg_quality=95, zoom=None):
    """Dream frame `frame_number` into `output_path`.

    With `zoom` ({"factor": ..., "angle": ...}) every frame after the first dreams the zoomed
    previous dream instead of the (blended) raw frame, so `frame_path` may be None for those.
    """
    if zoom and frame_number > 1:
        if not previous_path:
            raise DreamflowError(f"zoom animation needs the previous dreamed frame for frame {frame_number}")
        source = zoomed_input(read_rgb(previous_path), zoom)
    else:
        if frame_path is None:
            raise DreamflowError(f"frame {frame_number} has no input frame to dream")
        frame = dreamer.start_array(read_rgb(frame_path), frame_number)
        previous = read_rgb(previous_path) if previous_path else None
        if previous is None and blend.uses_previous_frame(blend_settings) and frame_number > 1:
            raise DreamflowError(f"blend mode {blend_settings['mode']} needs the previous dreamed frame "
                                 f"for frame {frame_number}")
        source = blended_input(frame, previous, blend_settings, frame_number)
    write_rgb(dreamer.dream_array(source, frame_number), output_path, jpg_quality=jpg_quality)
