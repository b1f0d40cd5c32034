"""Dream one frame file: read it, blend in the previous dream, dream, write atomically."""

import numpy as np

from . import blend, engine, models, objectives
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
    """A loaded model plus the settings it was loaded for; reusable across frames."""

    def __init__(self, dream_settings, threads=None, pretrained=True):
        import torch

        if threads:
            torch.set_num_threads(threads)
        self.settings = dream_settings
        self.device = pick_device(dream_settings["device"])
        models.check_layers(dream_settings["model"], dream_settings["layers"])
        self.model = models.build(dream_settings["model"], dream_settings["weights"], pretrained=pretrained)
        # channels_last roughly halves conv time on CPU (see DESIGN.md measurements)
        self.model.to(self.device, memory_format=torch.channels_last)
        self.objective = objectives.layers_l2(dream_settings["layers"])
        self.params = engine.DreamParams.from_settings(dream_settings)

    def dream_array(self, array):
        image = to_tensor(array).to(self.device)
        return to_array(engine.dream(self.model, self.objective, image, self.params))


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


def dream_frame_file(dreamer, frame_path, output_path, frame_number, blend_settings,
                     previous_path=None, jpg_quality=95):
    frame = read_rgb(frame_path)
    previous = read_rgb(previous_path) if previous_path else None
    if previous is None and blend.uses_previous_frame(blend_settings) and frame_number > 1:
        raise DreamflowError(f"blend mode {blend_settings['mode']} needs the previous dreamed frame "
                             f"for frame {frame_number}")
    write_rgb(dreamer.dream_array(blended_input(frame, previous, blend_settings, frame_number)),
              output_path, jpg_quality=jpg_quality)
