"""ffmpeg at the edges: probe an input, extract its frames, encode dreamed frames back to video.

Commands are built with ffmpeg-python as argument lists and run without a shell.
"""

import contextlib
import errno
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
from fractions import Fraction

import ffmpeg

from .config import folder_images, input_kind, unambiguous_path
from .errors import DreamflowError
from .frames import FRAME_DIGITS, frame_name, select_range
from .images import atomic_path, read_rgb, write_rgb, writing

FOLDER_DEFAULT_FPS = Fraction(25)
AUDIO_COPY_CODECS = ("aac", "mp3")
# the folder of links an encode numbers its frames through: removed by a run after a kill
LINKS_PREFIX = ".frames-"
# how ffmpeg words a failed write (it prints strerror): the disk, not the media, is at fault
WRITE_ERRORS = tuple(
    os.strerror(code) for code in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG)
)
# a frame count from a duration, or resampled to another fps, can be this many frames off
FRAME_COUNT_SLACK = 2


def tool(name):
    """Path of ffmpeg/ffprobe; DREAMFLOW_FFMPEG / DREAMFLOW_FFPROBE override the PATH lookup."""
    wanted = os.environ.get(f"DREAMFLOW_{name.upper()}", name)
    found = shutil.which(wanted)
    if found is None:
        raise DreamflowError(
            f"{name} not found (looked for '{wanted}'): install ffmpeg, "
            f"e.g. apt-get install ffmpeg, or set DREAMFLOW_{name.upper()} to its path"
        )
    return found


def _run(arguments):
    try:
        return subprocess.run(arguments, capture_output=True, text=True)
    except OSError as error:
        raise DreamflowError(f"cannot run {arguments[0]}: {error.strerror}") from None


def _joined(lines):
    return " | ".join(line.strip() for line in lines[-3:])


def run_ffmpeg(arguments, what, target, written=None):
    """Run ffmpeg (at -loglevel error) writing `target` (through the path `written`, if it writes
    a temporary, named `target` in messages), and return its error lines. A non-zero exit or a
    failed write raises: ffmpeg exits 0 when only the last write (a trailer) fails."""
    result = _run(arguments)
    lines = [
        line
        for line in result.stderr.splitlines()
        if line.strip() and not line.strip().startswith("Last message repeated")
    ]
    reason = next((reason for reason in WRITE_ERRORS if reason in result.stderr), None)
    if reason:
        raise DreamflowError(f"cannot write {target}: {reason}")
    if result.returncode != 0:
        detail = _joined(lines)
        if written:
            detail = detail.replace(written, target)
        raise DreamflowError(f"ffmpeg failed to {what}: {detail}")
    return lines


def _rate(text):
    try:
        rate = Fraction(text)
    except (ValueError, ZeroDivisionError):
        return None
    return rate if rate > 0 else None


def _rotation(stream):
    for side_data in stream.get("side_data_list", []):
        if "rotation" in side_data:
            return int(side_data["rotation"]) % 360
    return int(stream.get("tags", {}).get("rotate", 0)) % 360


def probe(path):
    """Describe an input: kind, fps, display size, rotation, audio, frame count (estimated for
    videos)."""
    kind = input_kind(path)
    if kind == "folder":
        files = folder_images(path)
        height, width = read_rgb(files[0]).shape[:2]
        return {
            "kind": kind,
            "path": path,
            "files": files,
            "frame_count": len(files),
            "fps": str(FOLDER_DEFAULT_FPS),
            "width": width,
            "height": height,
            "rotation": 0,
            "audio": None,
        }
    if kind == "image":
        height, width = read_rgb(path).shape[:2]
        return {
            "kind": kind,
            "path": path,
            "files": [path],
            "frame_count": 1,
            "fps": str(FOLDER_DEFAULT_FPS),
            "width": width,
            "height": height,
            "rotation": 0,
            "audio": None,
        }
    try:
        info = ffmpeg.probe(unambiguous_path(path), cmd=tool("ffprobe"))
    except ffmpeg.Error as error:
        detail = error.stderr.decode(errors="replace").strip().splitlines()[-1:] or [
            "unknown format"
        ]
        raise DreamflowError(f"not a video: {path} ({detail[0]})") from None
    videos = [
        s
        for s in info["streams"]
        if s.get("codec_type") == "video" and not s.get("disposition", {}).get("attached_pic")
    ]
    if not videos:
        raise DreamflowError(f"not a video: {path} has no video stream")
    stream = videos[0]
    fps = _rate(stream.get("avg_frame_rate", "")) or _rate(stream.get("r_frame_rate", ""))
    if fps is None:
        raise DreamflowError(f"not a video: {path} has no frame rate")
    duration = float(stream.get("duration") or info.get("format", {}).get("duration") or 0)
    frame_count = int(stream.get("nb_frames") or round(duration * fps))
    if frame_count < 1:
        raise DreamflowError(f"video has no frames: {path}")
    rotation = _rotation(stream)
    width, height = stream["width"], stream["height"]
    if rotation in (90, 270):
        width, height = height, width
    audio = next((s for s in info["streams"] if s.get("codec_type") == "audio"), None)
    return {
        "kind": kind,
        "path": path,
        "frame_count": frame_count,
        "fps": str(fps),
        "width": width,
        "height": height,
        "rotation": rotation,
        "audio": audio and {"codec": audio.get("codec_name"), "index": audio["index"]},
    }


def plan(probed, frames_settings):
    """What extraction will produce: output fps, source frame range, and the time span it covers."""
    source_fps = Fraction(probed["fps"])
    first, last = select_range(
        probed["frame_count"],
        source_fps,
        frames_settings["start"],
        frames_settings["end"],
        frames_settings["start_time"],
        frames_settings["end_time"],
    )
    fps = (
        Fraction(frames_settings["fps"]).limit_denominator(1001)
        if frames_settings["fps"]
        else source_fps
    )
    open_ended = frames_settings["end"] is None and frames_settings["end_time"] is None
    return {
        "fps": str(fps),
        "first": first,
        "last": None if open_ended else last,
        "start_seconds": float((first - 1) / source_fps),
        "end_seconds": None if open_ended else float(last / source_fps),
    }


def target_size(width, height, wanted_width):
    """Frame size after scaling to `wanted_width` (height keeps the aspect ratio, rounded to
    even)."""
    if not wanted_width:
        return width, height
    return wanted_width, max(2, round(height * wanted_width / width / 2) * 2)


def _jpeg_qscale(quality):
    # ffmpeg's mjpeg qscale runs from 2 (best) to 31 (worst)
    return round(2 + (100 - quality) * 29 / 99)


def extract(probed, frames_settings, out_dir, threads=1):
    """Write frames 000001.<fmt>... into `out_dir`, all at once: a failed run leaves no folder.
    A video that decodes to fewer frames than its header says gives the frames it has, and a
    warning on stderr."""
    try:
        extraction = plan(probed, frames_settings)
    except ValueError as error:
        raise DreamflowError(f"{probed['path']}: {error}") from None
    suffix = "." + frames_settings["format"]
    staging = out_dir.rstrip("/") + ".partial"
    errors = []
    with writing(out_dir):
        os.makedirs(os.path.dirname(os.path.abspath(out_dir)), exist_ok=True)
        shutil.rmtree(staging, ignore_errors=True)
        os.makedirs(staging)
        try:
            if probed["kind"] == "video":
                errors = _extract_video(
                    probed, frames_settings, extraction, staging, out_dir, suffix, threads
                )
            else:
                _extract_images(probed, frames_settings, extraction, staging, suffix)
            count = len([n for n in os.listdir(staging) if n.endswith(suffix)])
            if count == 0:
                raise DreamflowError(
                    f"no frames extracted from {probed['path']} "
                    f"(frame range starts at frame {extraction['first']})"
                )
            shutil.rmtree(out_dir, ignore_errors=True)
            os.replace(staging, out_dir)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    if probed["kind"] == "video":
        warning = short_video_warning(
            probed["path"], planned_frames(probed, extraction), count, errors
        )
        if warning:
            print(warning, file=sys.stderr)
    return count


def planned_frames(probed, extraction):
    """How many frames extracting `extraction` (from `plan`) should give by the video's header:
    its frame range, resampled to the output fps; a Fraction, as resampling rounds either way."""
    last = extraction["last"] or probed["frame_count"]
    frames = last - extraction["first"] + 1
    return frames * Fraction(extraction["fps"]) / Fraction(probed["fps"])


def short_video_warning(path, planned, got, ffmpeg_errors):
    """The warning line when the video `path` gave `got` frames, fewer than `planned`, else None.

    Resampling rounds a count either way, and a count estimated from a duration can be a frame
    or two off: without errors from ffmpeg, only a shortfall past that slack counts; with them
    (a partial file, undecodable frames) any shortfall does. Either way the frames that decoded
    are dreamed: a damaged file is worth a warning, not a lost run."""
    slack = 0 if ffmpeg_errors else FRAME_COUNT_SLACK
    if got >= math.floor(planned) - slack:
        return None
    return (
        f"dreamflow: warning: {path} is shorter than its header says: {round(planned)} frames "
        f"planned, {got} decoded (a truncated or damaged file?); dreaming the {got} frames"
    )


def as_frames(stream, probed, frames_settings):
    """`stream` scaled to the frames settings' width, and the ffmpeg output options that write it
    in their format (png as rgb24, jpg at their quality): what every extracted frame gets."""
    width, height = target_size(probed["width"], probed["height"], frames_settings["width"])
    if (width, height) != (probed["width"], probed["height"]):
        stream = stream.filter("scale", width, height, flags="lanczos")
    if frames_settings["format"] == "jpg":
        return stream, {"q:v": _jpeg_qscale(frames_settings["jpg_quality"])}
    return stream, {"pix_fmt": "rgb24"}


def _extract_video(probed, frames_settings, extraction, staging, out_dir, suffix, threads):
    input_options = {"ss": extraction["start_seconds"]} if extraction["start_seconds"] else {}
    if extraction["end_seconds"] is not None:
        input_options["t"] = extraction["end_seconds"] - extraction["start_seconds"]
    stream = ffmpeg.input(unambiguous_path(probed["path"]), **input_options).video.filter(
        "fps", fps=extraction["fps"]
    )
    stream, output_options = as_frames(stream, probed, frames_settings)
    output_options.update(start_number=1, threads=threads)
    pattern = os.path.join(staging, f"%0{FRAME_DIGITS}d{suffix}")
    arguments = (
        ffmpeg.output(stream, pattern, **output_options)
        .global_args("-hide_banner", "-loglevel", "error", "-nostdin")
        .compile(cmd=tool("ffmpeg"), overwrite_output=True)
    )
    return run_ffmpeg(arguments, f"extract frames from {probed['path']}", out_dir, staging)


def _extract_images(probed, frames_settings, extraction, staging, suffix):
    from PIL import Image

    last = extraction["last"] or len(probed["files"])
    size = target_size(probed["width"], probed["height"], frames_settings["width"])
    for number, path in enumerate(probed["files"][extraction["first"] - 1 : last], start=1):
        array = read_rgb(path)
        if (array.shape[1], array.shape[0]) != size:
            # every frame of a sequence must share one size: the first image's, after scaling
            array = Image.fromarray(array).resize(size, Image.LANCZOS)
        write_rgb(
            array,
            os.path.join(staging, frame_name(number) + suffix),
            frames_settings["jpg_quality"],
        )


def encode(probed, frames_settings, encode_settings, frame_paths, output, threads=1):
    """Encode dreamed frames at the planned fps, with the source's audio for the same span."""
    extraction = plan(probed, frames_settings)
    if not frame_paths:
        raise DreamflowError(f"no dreamed frames to encode for {output}")
    with (
        writing(output),
        _numbered_sequence(frame_paths, os.path.dirname(output) or ".") as pattern,
    ):
        _encode_sequence(
            probed, extraction, encode_settings, pattern, len(frame_paths), output, threads
        )


@contextlib.contextmanager
def _numbered_sequence(frame_paths, scratch_parent):
    """An ffmpeg image pattern for `frame_paths`: their own folder when they are its frames 1..n
    in order, else a temporary folder of links numbered 1..n (overlap frames come from another
    folder)."""
    folder = os.path.dirname(frame_paths[0])
    suffix = os.path.splitext(frame_paths[0])[1]
    pattern = os.path.join(folder, f"%0{FRAME_DIGITS}d{suffix}")
    if all(path == pattern % number for number, path in enumerate(frame_paths, 1)):
        yield pattern
        return
    with tempfile.TemporaryDirectory(prefix=LINKS_PREFIX, dir=scratch_parent) as links:
        for number, path in enumerate(frame_paths, 1):
            os.symlink(os.path.abspath(path), os.path.join(links, frame_name(number) + suffix))
        yield os.path.join(links, f"%0{FRAME_DIGITS}d{suffix}")


def _encode_sequence(probed, extraction, encode_settings, pattern, count, output, threads):
    fps = Fraction(extraction["fps"])
    # trim, not -frames:v (which drops the audio): stale frames past the count are left out
    streams = [
        ffmpeg.input(pattern, framerate=extraction["fps"], start_number=1)
        .video.trim(end_frame=count)
        .filter("crop", "trunc(iw/2)*2", "trunc(ih/2)*2")
    ]  # yuv420p needs even sides
    options = {
        "vcodec": encode_settings["codec"],
        "crf": encode_settings["crf"],
        "preset": encode_settings["preset"],
        "pix_fmt": "yuv420p",
        "movflags": "+faststart",
        "threads": threads,
    }
    if encode_settings["codec"] == "libx265":
        options["tag:v"] = "hvc1"  # lets Apple players open it
    audio = probed.get("audio")
    if audio and encode_settings["audio"]:
        streams.append(
            ffmpeg.input(
                unambiguous_path(probed["path"]),
                ss=extraction["start_seconds"],
                t=float(count / fps),
            )["a:0"]
        )
        options["acodec"] = "copy" if audio["codec"] in AUDIO_COPY_CODECS else "aac"
    with atomic_path(output) as temporary:
        arguments = (
            ffmpeg.output(*streams, temporary, format="mp4", **options)
            .global_args("-hide_banner", "-loglevel", "error", "-nostdin")
            .compile(cmd=tool("ffmpeg"), overwrite_output=True)
        )
        errors = run_ffmpeg(arguments, f"encode {output}", output, temporary)
        # ffmpeg can exit 0 over a file it failed to finish: check it before it is put in place
        problem = _video_problem(temporary, count, fps)
        if problem or any(temporary in line for line in errors):
            detail = "; ".join(filter(None, [problem, errors and "ffmpeg: " + _joined(errors)]))
            raise DreamflowError(f"encoding {output} failed: {detail.replace(temporary, output)}")
        if errors:
            # damaged inputs, not a damaged output: a cut source's audio ends early, an unreadable
            # frame is shown as the one before it; worth saying, not worth losing the run over
            print(
                f"dreamflow: warning: {output}: ffmpeg reported errors in its inputs: "
                f"{_joined(errors)}; the video has all {count} frames",
                file=sys.stderr,
            )


def _video_problem(path, count, fps):
    """What is wrong with the encoded video `path` if it is not `count` frames at `fps`, else
    None. Packets are counted, not decoded: one a frame, read without the cost of decoding."""
    result = _run(
        [
            tool("ffprobe"),
            "-v",
            "error",
            "-count_packets",
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=nb_read_packets,duration",
            "-of",
            "json",
            path,
        ]
    )
    if result.returncode != 0 or result.stderr.strip():
        return "ffprobe: " + _joined(result.stderr.strip().splitlines())
    streams = json.loads(result.stdout).get("streams", [])
    if not streams:
        return "it has no video stream"
    frames = int(streams[0].get("nb_read_packets", 0))
    if frames != count:
        return f"it has {frames} frames, not the {count} encoded"
    duration, expected = float(streams[0].get("duration", "nan")), count / fps
    if not abs(duration - expected) <= 1 / fps:
        return f"it lasts {duration:g} s, not {float(expected):g} s"
    return None


def write_probe(path, output):
    probed = probe(path)
    with atomic_path(output) as temporary, open(temporary, "w") as handle:
        json.dump(probed, handle, indent=1)
