"""Blend factors per frame (pure arithmetic) and the blend of two frames.

Direction: the dream input of frame N is (1 - f) * raw frame N + f * dreamed frame N-1.
f is the share of the previous *dreamed* frame: 0 means no carry-over, 1 means the video is ignored.
"""

import random


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


def mix(raw, previous_dream, factor):
    """(1 - factor) * raw + factor * previous_dream, for arrays or tensors of equal shape."""
    return raw * (1.0 - factor) + previous_dream * factor
