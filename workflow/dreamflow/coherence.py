"""How temporally coherent a dreamed video is: the warping error of Lai et al. 2018.

The flow and its occlusion mask come from the RAW frames, because the dream itself would fool
the flow estimator. Each dreamed frame is compared with the previous dreamed frame warped along
that flow; the raw video goes through the same flow and mask, so its own error (flow mistakes,
lighting changes) is a baseline. A dream that is painted onto the screen instead of onto the
scene adds error that grows with the square of the dream strength, hence the ratio
(E_warp dreamed - E_warp raw) / strength^2, which lets settings with different strengths be
compared.
"""

import json
import os
import re
import sys

import numpy as np

from .errors import DreamflowError
from .frames import FRAME_DIGITS, frame_name
from .images import atomic_path, read_rgb

PLOT_SIZE = (640, 240)
_BACKGROUND = (255, 255, 255)
_INK = (40, 40, 40)
_GRID = (225, 225, 225)
_CUT = (200, 170, 170)
_DREAMED = (220, 100, 30)
_RAW = (50, 110, 200)


def frame_paths(folder, count=None, suffixes=(".png", ".jpg")):
    """The frames 000001.<suffix>, 000002.<suffix>, ... of `folder` in order.

    Numbering must run from 1 without gaps: a gap means an interrupted run, and measuring across
    it would pair frames that are not neighbours. `count` takes only the first frames.
    """
    folder = os.fspath(folder)
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        raise DreamflowError(f"folder not found: {folder}") from None
    except NotADirectoryError:
        raise DreamflowError(f"not a folder: {folder}") from None
    pattern = re.compile(rf"(\d{{{FRAME_DIGITS}}})({'|'.join(map(re.escape, suffixes))})")
    numbered = {}
    for name in names:
        match = pattern.fullmatch(name)
        if match is None:
            continue
        number = int(match.group(1))
        if number in numbered:
            raise DreamflowError(
                f"{folder} holds frame {number} twice: {numbered[number]} and {name}"
            )
        numbered[number] = name
    if not numbered:
        raise DreamflowError(
            f"no frames ({frame_name(1)}{' or '.join(suffixes)} ...) in folder {folder}"
        )
    if count is not None and count < 1:
        raise DreamflowError(f"frame count must be at least 1, got {count}")
    last = max(numbered) if count is None else count
    for number in range(1, last + 1):
        if number not in numbered:
            raise DreamflowError(f"frame {frame_name(number)} is missing from folder {folder}")
    return [os.path.join(folder, numbered[number]) for number in range(1, last + 1)]


def _mean_squared(frame, warped, reliable):
    """Mean over reliable pixels and the 3 channels; None when no pixel is reliable."""
    if not reliable.any():
        return None
    return float(
        np.square(frame - warped).sum(axis=2)[reliable].mean(dtype=np.float64) / frame.shape[2]
    )


def _mean(values):
    values = [value for value in values if value is not None]
    return float(np.mean(values)) if values else None


def measure(raw_paths, dreamed_paths, scene_starts=(), method="dis", progress=None):
    """The warping error of the dreamed and the raw video, the dream strength and their ratio.

    Frames are read once and only the previous pair is kept, so long videos fit in memory.
    `scene_starts` are 1-based frame numbers that begin a new scene: the pair ending there is
    skipped, since nothing should carry across a cut. `progress(done, total)` is called after
    each frame. Returns a dict ready for JSON.
    """
    from .flow import FLOW_METHODS, compute_flow, warp

    raw_paths = [os.fspath(path) for path in raw_paths]
    dreamed_paths = [os.fspath(path) for path in dreamed_paths]
    if not raw_paths or not dreamed_paths:
        raise DreamflowError(
            f"nothing to measure: {len(raw_paths)} raw and {len(dreamed_paths)} dreamed frames"
        )
    if len(raw_paths) != len(dreamed_paths):
        raise DreamflowError(
            f"{len(raw_paths)} raw frames (first {raw_paths[0]}) but {len(dreamed_paths)} "
            f"dreamed frames (first {dreamed_paths[0]})"
        )
    if method not in FLOW_METHODS:
        raise DreamflowError(
            f"unknown flow method '{method}'; use one of {', '.join(FLOW_METHODS)}"
        )
    total = len(raw_paths)
    cut_set = {int(start) for start in scene_starts if 1 < int(start) <= total}

    per_frame = []
    previous_raw = previous_raw_path = previous_dreamed = None
    for index, (raw_path, dreamed_path) in enumerate(
        zip(raw_paths, dreamed_paths, strict=True), start=1
    ):
        raw = read_rgb(raw_path)
        dreamed_bytes = read_rgb(dreamed_path)
        if raw.shape != dreamed_bytes.shape:
            raise DreamflowError(
                f"frame sizes differ: {raw_path} is {raw.shape[1]}x{raw.shape[0]} but "
                f"{dreamed_path} is {dreamed_bytes.shape[1]}x{dreamed_bytes.shape[0]}"
            )
        if previous_raw is not None and previous_raw.shape != raw.shape:
            raise DreamflowError(
                f"frame size changes within the video: {previous_raw_path} is "
                f"{previous_raw.shape[1]}x{previous_raw.shape[0]} but {raw_path} is "
                f"{raw.shape[1]}x{raw.shape[0]}"
            )
        dreamed = dreamed_bytes.astype(np.float32) / 255.0
        raw_unit = raw.astype(np.float32) / 255.0
        entry = {
            "frame": index,
            "e_warp_dreamed": None,
            "e_warp_raw": None,
            "reliable": None,
            "strength": float(np.abs(dreamed - raw_unit).mean(dtype=np.float64)),
        }
        if previous_raw is not None and index not in cut_set:
            flow, reliable = compute_flow(previous_raw, raw, method=method)
            entry["reliable"] = float(reliable.mean())
            entry["e_warp_dreamed"] = _mean_squared(dreamed, warp(previous_dreamed, flow), reliable)
            previous_unit = previous_raw.astype(np.float32) / 255.0
            entry["e_warp_raw"] = _mean_squared(raw_unit, warp(previous_unit, flow), reliable)
        per_frame.append(entry)
        previous_raw, previous_raw_path, previous_dreamed = raw, raw_path, dreamed
        if progress is not None:
            progress(index, total)

    e_warp_dreamed = _mean(entry["e_warp_dreamed"] for entry in per_frame)
    e_warp_raw = _mean(entry["e_warp_raw"] for entry in per_frame)
    strength = float(np.mean([entry["strength"] for entry in per_frame]))
    ratio = None
    if e_warp_dreamed is not None and strength > 0:
        ratio = (e_warp_dreamed - e_warp_raw) / strength**2
    return {
        "frames": total,
        "pairs": sum(entry["e_warp_dreamed"] is not None for entry in per_frame),
        "method": method,
        "e_warp_dreamed": e_warp_dreamed,
        "e_warp_raw": e_warp_raw,
        "strength": strength,
        "ratio": ratio,
        "scene_starts": sorted(cut_set),
        "per_frame": per_frame,
    }


def _number(value, digits=3):
    return "n/a" if value is None else f"{value:.{digits}g}"


def summary_line(result):
    """One line for people: the three figures and how many pairs they rest on."""
    pairs = result["pairs"]
    return (
        f"E_warp dreamed {_number(result['e_warp_dreamed'])}, raw {_number(result['e_warp_raw'])}, "
        f"strength {_number(result['strength'])}, ratio {_number(result['ratio'])} "
        f"over {pairs} pair{'' if pairs == 1 else 's'}"
    )


def write_json(result, path):
    with atomic_path(path) as temporary:
        with open(temporary, "w", encoding="utf-8") as handle:
            json.dump(result, handle, indent=2)
            handle.write("\n")


def _nice_step(span, ticks):
    """A 1, 2 or 5 times a power of ten step that cuts `span` into about `ticks` parts."""
    raw_step = span / max(ticks, 1)
    magnitude = 10 ** np.floor(np.log10(raw_step))
    for factor in (1, 2, 5, 10):
        if factor * magnitude >= raw_step:
            return factor * magnitude
    return 10 * magnitude


def _runs(frames, values, count, left, width):
    """The polylines to draw: runs of (x, min, mean, max) per pixel column, broken where a pair
    has no value (a scene cut, or no reliable pixel) so that no line bridges a gap.

    Ten thousand frames in a few hundred pixels: the mean line follows the trend while the
    min-max bar keeps single-frame spikes (flicker) visible.
    """
    runs, run, column, bucket = [], [], None, []

    def close_bucket():
        if bucket:
            run.append((left + column, min(bucket), sum(bucket) / len(bucket), max(bucket)))

    for frame, value in zip(frames, values, strict=True):
        if value is None:
            close_bucket()
            if run:
                runs.append(run)
            run, column, bucket = [], None, []
            continue
        position = 0.5 if count == 1 else (frame - 1) / (count - 1)
        here = min(width - 1, int(position * (width - 1) + 0.5))
        if here != column:
            close_bucket()
            column, bucket = here, []
        bucket.append(value)
    close_bucket()
    if run:
        runs.append(run)
    return runs


def _fit(draw, text, font, width):
    """`text` shortened with an ellipsis so that it fits in `width` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "...", font=font) > width:
        text = text[:-1]
    return text + "..."


def plot(result, path, title=None):
    """A small PNG of the per-frame warping error of the dreamed and the raw video."""
    from PIL import Image, ImageDraw, ImageFont

    image_width, image_height = PLOT_SIZE
    image = Image.new("RGB", PLOT_SIZE, _BACKGROUND)
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    left, right, top, bottom = 56, image_width - 10, 38, image_height - 22
    plot_width, plot_height = right - left + 1, bottom - top

    title = title or "warping error per frame"
    # the legend sits beside the title, where it can never hide a curve
    legend_x = image_width - 120
    text_width = legend_x - 16
    draw.text((6, 4), _fit(draw, title, font, text_width), fill=_INK, font=font)
    draw.text((6, 19), _fit(draw, summary_line(result), font, text_width), fill=_INK, font=font)

    per_frame = result.get("per_frame") or []
    count = max(int(result.get("frames") or 0), len(per_frame), 1)
    frames = [entry["frame"] for entry in per_frame]
    series = [
        ("dreamed", _DREAMED, [entry.get("e_warp_dreamed") for entry in per_frame]),
        ("raw", _RAW, [entry.get("e_warp_raw") for entry in per_frame]),
    ]
    present = [value for _, _, values in series for value in values if value is not None]
    y_top = max(present) * 1.05 if present and max(present) > 0 else 1.0

    def x_of(frame):
        position = 0.5 if count == 1 else (frame - 1) / (count - 1)
        return left + position * (plot_width - 1)

    def y_of(value):
        return bottom - value / y_top * plot_height

    step = _nice_step(y_top, 4)
    tick = 0.0
    while tick <= y_top * (1 + 1e-9):
        y = y_of(tick)
        draw.line([(left, y), (right, y)], fill=_GRID)
        label = f"{tick:.2g}"
        draw.text(
            (left - 4 - draw.textlength(label, font=font), y - 6), label, fill=_INK, font=font
        )
        tick += step

    frame_step = max(1, int(_nice_step(max(count - 1, 1), 5)))
    ticks = sorted({1, *range(frame_step, count + 1, frame_step)})
    for frame in ticks:
        if frame != 1 and x_of(frame) - x_of(1) < 20:
            continue
        x = x_of(frame)
        draw.line([(x, bottom), (x, bottom + 3)], fill=_INK)
        label = str(frame)
        label_width = draw.textlength(label, font=font)
        label_x = min(max(x - label_width / 2, 2), image_width - 2 - label_width)
        draw.text((label_x, bottom + 5), label, fill=_INK, font=font)

    for start in result.get("scene_starts") or []:
        x = x_of(start - 0.5)
        draw.line([(x, top), (x, bottom)], fill=_CUT)

    draw.line([(left, top), (left, bottom), (right, bottom)], fill=_INK)

    for _, colour, values in series:
        for run in _runs(frames, values, count, left, plot_width):
            for x, low, _, high in run:
                if high > low:
                    draw.line([(x, y_of(low)), (x, y_of(high))], fill=colour)
            points = [(x, y_of(mean)) for x, _, mean, _ in run]
            if len(points) == 1:
                ((x, y),) = points
                draw.rectangle([x - 1, y - 1, x + 1, y + 1], fill=colour)
            else:
                draw.line(points, fill=colour, width=2)

    for row, (name, colour, _) in enumerate(series):
        y = 4 + 15 * row
        draw.line([(legend_x, y + 6), (legend_x + 18, y + 6)], fill=colour, width=2)
        draw.text((legend_x + 24, y), f"E_warp {name}", fill=_INK, font=font)

    with atomic_path(path) as temporary:
        image.save(temporary, format="PNG")


def _report_progress(done, total):
    # ten thousand frames take minutes: show that something happens, on a terminal only
    if done == total or done % 100 == 0:
        print(
            f"\rcoherence: {done}/{total} frames",
            end="\n" if done == total else "",
            file=sys.stderr,
            flush=True,
        )


def run_cli(
    raw_dir,
    dreamed_dir,
    output=None,
    plot_path=None,
    scene_starts=(),
    method="dis",
    count=None,
    seams=None,
):
    """`dreamflow coherence RAW_DIR DREAMED_DIR`: measure, print the summary line, and write the
    JSON and the plot when asked. Returns the result. `count` limits both to their first frames;
    `seams` maps overlap frame numbers to the crossfaded frames that replace the dreamed ones."""
    raw_paths = frame_paths(raw_dir, count)
    dreamed_paths = frame_paths(dreamed_dir, count)
    if len(raw_paths) != len(dreamed_paths):
        raise DreamflowError(
            f"{raw_dir} has {len(raw_paths)} frames but {dreamed_dir} has {len(dreamed_paths)}"
        )
    for number, path in (seams or {}).items():
        dreamed_paths[number - 1] = path
    progress = _report_progress if sys.stderr.isatty() else None
    result = measure(
        raw_paths, dreamed_paths, scene_starts=scene_starts, method=method, progress=progress
    )
    print(summary_line(result))
    if output is not None:
        write_json(result, output)
    if plot_path is not None:
        plot(result, plot_path, title=f"coherence of {dreamed_dir} (raw {raw_dir})")
    return result
