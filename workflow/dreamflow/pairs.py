"""The report's own figures: raw frames beside their dreams, and where they and the settings of an
input go. Imports no torch."""

import numpy as np
from PIL import Image

from .errors import DreamflowError
from .images import read_rgb
from .sheet import contact_sheet

# wider frames are shrunk: the report embeds the picture, and a few 720p pairs would make it
# several megabytes without showing more of the dream
MAX_WIDTH = 480


def chosen_frames(count, zoom=False):
    """The pairs of an input of `count` result frames: the first, middle and last frame (fewer when
    they coincide), as (raw frame number, result frame number, label) triples. A zoom has only one
    raw frame, where every dream starts from."""
    numbers = sorted({1, (count + 1) // 2, count})
    return [
        (1 if zoom else number, number, f"frame {number}" + (" (zoom of 1)" if zoom else ""))
        for number in numbers
    ]


def pairs_file(results, name="{name}"):
    return f"{results}/{name}/{name}_pairs.jpg"


def settings_file(results, name="{name}"):
    return f"{results}/{name}/{name}_settings.json"


def report_files(plan):
    """The report's figures of an input (an InputPlan). A sweep dreams no frames to pair: its
    contact sheet shows the dreams of the first frame."""
    files = [settings_file(plan.layout.results, plan.name)]
    if not plan.sweep:
        files.append(pairs_file(plan.layout.results, plan.name))
    return files


def pair_files(plan, frames):
    """The raw and the result frames that the pairs of an input (an InputPlan) show, given the
    frames of its result."""
    chosen = chosen_frames(len(frames), zoom=bool(plan.zoom_frames))
    return {
        "raw": [plan.raw_frame(raw) for raw, _, _ in chosen],
        "dreamed": [frames[number - 1] for _, number, _ in chosen],
    }


def pair_labels(plan, frames):
    return [label for _, _, label in chosen_frames(len(frames), zoom=bool(plan.zoom_frames))]


def shrunk(image, width=MAX_WIDTH):
    if image.shape[1] <= width:
        return image
    height = max(1, round(image.shape[0] * width / image.shape[1]))
    return np.asarray(Image.fromarray(image).resize((width, height), Image.LANCZOS))


def before_after(raw_paths, dreamed_paths, labels):
    """One picture of each raw image beside its dream, a pair per row, labelled."""
    if not len(raw_paths) == len(dreamed_paths) == len(labels):
        raise DreamflowError(
            f"{len(raw_paths)} raw images, {len(dreamed_paths)} dreams and {len(labels)} labels"
        )
    images, names = [], []
    for raw, dreamed, label in zip(raw_paths, dreamed_paths, labels, strict=True):
        images += [shrunk(read_rgb(raw)), shrunk(read_rgb(dreamed))]
        names += [f"{label}: before", f"{label}: dreamed"]
    return contact_sheet(images, names, columns=2)
