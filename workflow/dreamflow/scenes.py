"""Scene cuts of an input's extracted frames, so that blend chains restart where the picture does.

Detection runs once per input over `work/<name>/frames` (videos and image folders alike, so frame
numbers match the rest of the workflow) and writes `scenes.json`; the workflow reads that file
while Snakemake builds its DAG. Only the standard library is imported at the top: ffmpeg and the
image helpers are imported where they are used, to keep that read cheap.

The score is ffmpeg's scene score (the `scene` variable of the `select` filter), computed on the
luma of the frames converted to yuv420p: a threshold then means what it means to anyone who
runs `select='gt(scene,0.3)'` on a video, whatever the frame format (png frames are RGB, jpg
frames full-range YUV, and ffmpeg would otherwise score the two differently). ffmpeg scores a
frame as min(mafd, |mafd - previous mafd|) / 100, where mafd is the mean absolute difference to
the frame before: steady motion scores near 0, a jump in difference scores high. A repeated
frame (a frame rate raised by frames.fps) breaks that: the frame after a repeat scores its whole
difference, about 0.1-0.3 for a pan, and may reach the threshold.
"""

import json
import math
import os
import subprocess
import sys

from .errors import DreamflowError
from .frames import FRAME_DIGITS, count_frames, frame_name

SOURCES = ("auto", "none", "manual")
DEFAULTS = {"cuts": "auto", "threshold": 0.3}
SCORE_KEY = "lavfi.scene_score="
# a summary line lists at most this many cuts
SHOWN_CUTS = 20


def _sequence_pattern(frames_dir, frame_format):
    # image2 reads "%%" as a literal "%": a folder named "50%" must not become a pattern
    folder = str(frames_dir).replace("%", "%%")
    return os.path.join(folder, f"%0{FRAME_DIGITS}d.{frame_format}")


def _frame_path(frames_dir, frame_format, number):
    return os.path.join(str(frames_dir), f"{frame_name(number)}.{frame_format}")


def scene_scores(frames_dir, frame_format, count, threads=None):
    """ffmpeg's scene score (0..1) of each of frames 1..count against the frame before it; frame
    1 has none and scores 0.0.

    Frame 2 has no earlier difference to compare with, so ffmpeg would score it by its raw
    difference, and a clip that opens with a pan would look cut there. Frames 3 and 2 are therefore
    fed ahead of the sequence (3, 2, 1, 2, 3, ...): frame 2's score is then that of the step
    2 -> 1 measured against the step 3 -> 2, i.e. against the motion that follows it, and every
    later frame gets exactly the score it gets in a plain pass. With two frames there is nothing
    to compare with and frame 2 keeps its raw difference. `threads` caps ffmpeg's decoding
    threads (None: ffmpeg's choice).
    """
    import ffmpeg

    from .video import tool

    if count < 1:
        raise DreamflowError(f"no .{frame_format} frames to detect scenes in: {frames_dir}")
    decoding = {} if threads is None else {"threads": threads}
    sequence = ffmpeg.input(
        _sequence_pattern(frames_dir, frame_format), f="image2", start_number=1, **decoding
    ).video
    lead = []
    if count >= 3:
        lead = [
            ffmpeg.input(
                _frame_path(frames_dir, frame_format, number), f="image2", pattern_type="none"
            ).video
            for number in (3, 2)
        ]
    stream = ffmpeg.concat(*lead, sequence, v=1, a=0) if lead else sequence
    stream = (
        stream.filter("format", "yuv420p")
        .filter("select", "gte(scene,0)")
        .filter("metadata", "print", file="-")  # "-" is stdout: no file path to escape
    )
    arguments = (
        ffmpeg.output(stream, "-", format="null")
        .global_args("-hide_banner", "-loglevel", "error", "-nostdin")
        .compile(cmd=tool("ffmpeg"))
    )
    result = subprocess.run(arguments, capture_output=True, text=True)
    if result.returncode != 0:
        detail = " | ".join(result.stderr.strip().splitlines()[-3:])
        raise DreamflowError(f"ffmpeg failed to score the scenes of {frames_dir}: {detail}")
    measured = [
        float(line[len(SCORE_KEY) :])
        for line in result.stdout.splitlines()
        if line.startswith(SCORE_KEY)
    ]
    scores = measured[len(lead) :][:count]
    if len(scores) < count:
        # image2 stops at the first missing number, so a gap shows up here
        raise DreamflowError(
            f"ffmpeg scored {len(scores)} of the {count} .{frame_format} frames in {frames_dir}: "
            f"frame {frame_name(len(scores) + 1)}.{frame_format} is missing or unreadable"
        )
    if lead:
        # the third frame fed is frame 1 entered from frame 2: its score is frame 2's
        scores[1] = measured[2]
    scores[0] = 0.0
    return scores


def find_cuts(scores, threshold, min_gap=1):
    """Frame numbers (1-based, from 2) whose score reaches `threshold`.

    A cut closer than `min_gap` frames to the previous scene start (frame 1 or the cut kept
    before it) is dropped, so every scene but the last is at least `min_gap` frames long; the
    default keeps every frame over the threshold. A one-frame flash usually gives one cut, at the
    flash: the frame after it differs from the flash about as much as the flash differed from
    the frame before, and ffmpeg scores that steadiness near 0. Neighbouring frames can both
    score high after a cut in fast motion (the return to steady motion is a jump in difference
    too); such a pair gives two cuts, a one-frame scene, which only costs that frame its
    predecessor.
    """
    if min_gap < 1:
        raise ValueError(f"min_gap must be at least 1, got {min_gap}")
    cuts = []
    start = 1
    for number, score in enumerate(scores[1:], start=2):
        if score >= threshold and number - start >= min_gap:
            cuts.append(number)
            start = number
    return cuts


def _manual_cuts(values, count):
    cuts = set()
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int):
            raise DreamflowError(f"scenes.cuts: frame numbers are integers, got {value!r}")
        if value < 1:
            raise DreamflowError(f"scenes.cuts: frame numbers start at 1, got {value}")
        if value > count:
            raise DreamflowError(
                f"scenes.cuts: frame {value} is past the last frame of the input ({count} frames)"
            )
        if value > 1:  # frame 1 starts the first scene anyway
            cuts.add(value)
    return sorted(cuts)


def detect(frames_dir, frame_format, count, settings, threads=None):
    """The scenes of `count` frames as `scenes.json` holds them: the frame count, the sorted
    frames that start a new scene (never 1), how they were chosen, and for auto the threshold
    and every frame's score (to pick a better threshold from)."""
    settings = {**DEFAULTS, **settings}
    if count < 1:
        raise DreamflowError(f"no .{frame_format} frames to detect scenes in: {frames_dir}")
    cuts = settings["cuts"]
    if cuts == "none":
        return {"frames": count, "cuts": [], "source": "none"}
    if isinstance(cuts, list):
        return {"frames": count, "cuts": _manual_cuts(cuts, count), "source": "manual"}
    if cuts != "auto":
        raise DreamflowError(f"scenes.cuts: expected auto, none or a list of frames, got {cuts!r}")
    threshold = settings["threshold"]
    scores = scene_scores(frames_dir, frame_format, count, threads)
    return {
        "frames": count,
        "cuts": find_cuts(scores, threshold),
        "source": "auto",
        "threshold": threshold,
        "scores": scores,
    }


def write_scenes(result, path):
    from .images import atomic_path

    with atomic_path(path) as temporary, open(temporary, "w") as handle:
        json.dump(result, handle, indent=1)
        handle.write("\n")


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value):
    return (_is_int(value) or isinstance(value, float)) and math.isfinite(value)


def _problem(data):
    """What is wrong with a parsed scenes file, or None."""
    if not isinstance(data, dict):
        return f"expected a JSON object, found {type(data).__name__}"
    for key in ("frames", "cuts", "source"):
        if key not in data:
            return f"'{key}' is missing"
    frames, cuts = data["frames"], data["cuts"]
    if not _is_int(frames) or frames < 1:
        return f"'frames' must be a whole number of at least 1, found {frames!r}"
    if not isinstance(cuts, list) or not all(_is_int(cut) for cut in cuts):
        return f"'cuts' must be a list of frame numbers, found {cuts!r}"
    if any(cut < 2 or cut > frames for cut in cuts):
        return f"'cuts' must lie within 2..{frames}, found {cuts}"
    if cuts != sorted(set(cuts)):
        return f"'cuts' must be sorted without repeats, found {cuts}"
    if data["source"] not in SOURCES:
        return f"'source' must be one of {', '.join(SOURCES)}, found {data['source']!r}"
    scores = data.get("scores")
    if scores is not None and (
        not isinstance(scores, list)
        or len(scores) != frames
        or not all(_is_number(score) for score in scores)
    ):
        return f"'scores' must be a list of {frames} numbers"
    return None


def read_scenes(path):
    """A `scenes.json` as `detect` made it; anything else is a DreamflowError naming the file."""
    try:
        with open(path) as handle:
            data = json.load(handle)
    except FileNotFoundError:
        raise DreamflowError(f"scenes file not found: {path}") from None
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise DreamflowError(
            f"cannot read scenes file {path}: {error}; delete it to detect the scenes again"
        ) from None
    problem = _problem(data)
    if problem:
        raise DreamflowError(
            f"malformed scenes file {path}: {problem}; delete it to detect the scenes again"
        )
    return data


def scenes_of(cuts, count):
    """Inclusive (first, last) frame ranges of the scenes of `count` frames cut at `cuts`."""
    if count < 1:
        raise ValueError(f"a scene needs at least one frame, got {count}")
    outside = [cut for cut in cuts if not 1 <= cut <= count]
    if outside:
        raise ValueError(f"cuts {outside} lie outside frames 1..{count}")
    starts = sorted({1, *cuts})
    ends = [start - 1 for start in starts[1:]] + [count]
    return list(zip(starts, ends, strict=True))


def summary(result):
    """One line for the log: how many scenes, and where they start."""
    count, cuts = result["frames"], result["cuts"]
    scenes = len(cuts) + 1
    line = f"{scenes} scene{'s' * (scenes != 1)} in {count} frame{'s' * (count != 1)}"
    if not cuts:
        return line + ": no cuts"
    shown = ", ".join(str(cut) for cut in cuts[:SHOWN_CUTS])
    more = f" and {len(cuts) - SHOWN_CUTS} more" if len(cuts) > SHOWN_CUTS else ""
    return f"{line}: cut{'s' * (len(cuts) != 1)} at {shown}{more}"


def run_cli(frames_dir, frame_format, settings_json_text, output, threads=None):
    """Detect the scenes of the frames in `frames_dir`, write them to `output`, log one line."""
    try:
        settings = json.loads(settings_json_text)
    except ValueError as error:
        raise DreamflowError(f"scene settings are not valid JSON: {error}") from None
    if not isinstance(settings, dict):
        raise DreamflowError(f"scene settings must be a JSON object, got {settings_json_text}")
    try:
        count = count_frames(frames_dir, frame_format)
    except FileNotFoundError:
        raise DreamflowError(f"frames folder not found: {frames_dir}") from None
    result = detect(frames_dir, frame_format, count, settings, threads)
    write_scenes(result, output)
    print(summary(result), file=sys.stderr)
    return result
