"""Frame numbering, frame ranges and counting extracted frames."""

import os
import re

FRAME_DIGITS = 6
FRAME_PATTERN = rf"\d{{{FRAME_DIGITS}}}"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def frame_name(number):
    """1-based frame number -> zero-padded stem that sorts correctly as text."""
    if number < 1:
        raise ValueError(f"frame numbers start at 1, got {number}")
    return f"{number:0{FRAME_DIGITS}d}"


def count_frames(folder, frame_format):
    """How many frames of `frame_format` (png, jpg) an extraction left in `folder`."""
    suffix = "." + frame_format
    return sum(1 for entry in os.scandir(folder) if entry.name.endswith(suffix))


def natural_key(name):
    """Sort key that puts 'img2' before 'img10', the order a person expects."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def select_range(frame_count, fps, start=None, end=None, start_time=None, end_time=None):
    """Return (first, last) 1-based inclusive source frame numbers for the requested range.

    start/end are frame numbers; start_time/end_time are seconds (frame k covers
    [(k-1)/fps, k/fps)).
    Raises ValueError with a message naming the config key when the range is empty or out of bounds.
    """
    if frame_count < 1:
        raise ValueError("the input has no frames")
    first = 1
    last = frame_count
    if start is not None:
        first = start
    elif start_time is not None:
        first = int(start_time * fps + 1e-9) + 1
    if end is not None:
        last = min(end, frame_count)
    elif end_time is not None:
        # end_time is exclusive: a frame that starts at end_time is not included
        last = min(frame_count, max(0, int(end_time * fps - 1e-9) + 1))
    if first > frame_count:
        key = "frames.start" if start is not None else "frames.start_time"
        raise ValueError(f"{key} is past the last frame ({frame_count}) of the input")
    if last < first:
        raise ValueError(f"the frame range is empty: first frame {first}, last frame {last}")
    return first, last
