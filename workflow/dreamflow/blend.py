"""The blend step: the image a chained frame starts from, made of its raw frame and the dream of
its predecessor.

Blend factors: f is the share of the previous *dream* (0: no carry-over). With flow none, frame N
starts from (1 - f) * raw N + f * dreamed N-1, the previous dream at the same pixels. With a flow
(the backward optical flow w of the raw pair N-1 -> N, and its reliability mask M), the previous
dream follows the motion:
- carry detail: raw N + f * M * warp(dreamed N-1 - raw N-1, w), the previous dream's detail
  added to the new frame;
- carry frame: raw N + f * M * (warp(dreamed N-1, w) - raw N), the previous dream mixed in.
Where M is 0 (occluded, newly visible, motion boundaries) the frame starts from raw N alone.
With a noise start, "raw" is each frame's seeded noise.
"""

import random
import sys

import numpy as np

from .errors import DreamflowError


def blend_factor(settings, frame_number):
    """f for 1-based `frame_number` under blend `settings` (mode, factor, low, high, period,
    seed)."""
    mode = settings["mode"]
    if mode == "none" or frame_number <= 1:
        return 0.0
    if mode == "constant":
        return float(settings["factor"])
    low, high = float(settings["low"]), float(settings["high"])
    if mode == "loop":
        # triangle wave: low at frame 2, high half a period later, back to low after a period
        period = settings["period"]
        phase = ((frame_number - 2) % period) / period
        return low + (high - low) * (1.0 - abs(2.0 * phase - 1.0))
    if mode == "random":
        # seeded per frame, so a rerun of one frame gets the same factor as the first run
        return random.Random(f"{settings['seed']}:{frame_number}").uniform(low, high)
    raise ValueError(f"unknown blend mode {mode!r}")


def uses_previous_frame(settings):
    return settings["mode"] != "none"


def uses_flow(settings):
    return uses_previous_frame(settings) and settings.get("flow", "none") != "none"


def mix(raw, previous_dream, factor):
    """(1 - factor) * raw + factor * previous_dream, for arrays or tensors of equal shape."""
    return raw * (1.0 - factor) + previous_dream * factor


def start_image(frame, start, seed, number):
    """What frame `number` is dreamed from before any blend: the frame itself, or seeded noise of
    its size (seed + number: every frame its own noise, the same on every rerun)."""
    if start == "image":
        return frame
    from .engine import noise_image
    from .images import to_array

    height, width = frame.shape[:2]
    return to_array(noise_image(height, width, seed + number))


def to_uint8(array):
    return np.clip(np.rint(array), 0, 255).astype(np.uint8)


def blended_start(settings, number, frame, previous_dream, previous_frame=None, motion=None):
    """The uint8 start image of frame `number` (see the module docstring). `settings` is a
    BlendSettings; `motion` is (backward flow, reliable mask) of the raw pair, or None for flow
    none."""
    factor = blend_factor(settings.blend, number)
    base = start_image(frame, settings.start, settings.seed, number).astype(np.float32)
    dream = previous_dream.astype(np.float32)
    if motion is None:
        return to_uint8(mix(base, dream, factor))
    from .flow import warp

    flow, reliable = motion
    weight = factor * reliable[..., None].astype(np.float32)
    if settings.blend["carry"] == "frame":
        carried = warp(dream, flow) - base
    else:
        previous_base = start_image(previous_frame, settings.start, settings.seed, number - 1)
        carried = warp(dream - previous_base.astype(np.float32), flow)
    return to_uint8(base + weight * carried)


def crossfade(old, new, weight):
    """The output of an overlap frame: (1 - weight) * the old segment's dream + weight * the new
    one's."""
    return to_uint8(mix(old.astype(np.float32), new.astype(np.float32), weight))


def _same_size(images):
    sizes = {path: image.shape for path, image in images.items() if image is not None}
    if len(set(sizes.values())) > 1:
        described = ", ".join(f"{path} {shape[1]}x{shape[0]}" for path, shape in sizes.items())
        raise DreamflowError(
            f"images of one blend differ in size ({described}); delete the work files of this "
            "input and rerun"
        )


def run_blend(job, notes=sys.stderr):
    """Run a BlendJob: write the start image of its frame. A flow file that cannot be read is
    computed again from the raw frames and rewritten (never used as it is), with a note."""
    from . import flow as optical_flow
    from .images import read_rgb, write_rgb

    frame, previous_dream = read_rgb(job.frame), read_rgb(job.previous)
    previous_frame = read_rgb(job.previous_frame) if job.previous_frame else None
    _same_size({job.frame: frame, job.previous: previous_dream, job.previous_frame: previous_frame})
    motion = None
    if uses_flow(job.settings.blend):
        try:
            motion = optical_flow.load_flow(job.flow, size=frame.shape[:2])
        except optical_flow.FlowFileError as error:
            print(f"dreamflow: note: {error}; computing it again", file=notes, flush=True)
            method = job.settings.blend["flow"]
            optical_flow.save_flow(
                job.flow, *optical_flow.compute_flow(previous_frame, frame, method), method
            )
            # read back: the file's precision, so the bytes are those of an undamaged file
            motion = optical_flow.load_flow(job.flow, size=frame.shape[:2])
    start = blended_start(job.settings, job.number, frame, previous_dream, previous_frame, motion)
    write_rgb(start, job.output, jpg_quality=job.settings.jpg_quality)


def run_flow(job):
    """Run a FlowJob: the flow of a raw pair, and its reliability mask, into a flow file."""
    from . import flow as optical_flow
    from .images import read_rgb

    backward, reliable = optical_flow.compute_flow(
        read_rgb(job.previous_frame), read_rgb(job.frame), job.method, job.device
    )
    optical_flow.save_flow(job.output, backward, reliable, job.method)
