"""ffmpeg at the edges: probe an input, extract its frames, encode dreamed frames back to video.

Commands are built with ffmpeg-python as argument lists and run without a shell.
"""

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
from fractions import Fraction

import ffmpeg

from .config import folder_images, input_kind
from .errors import DreamflowError
from .frames import FRAME_DIGITS, frame_name, select_range
from .images import atomic_path, read_rgb, write_rgb

FOLDER_DEFAULT_FPS = Fraction(25)
AUDIO_COPY_CODECS = ("aac", "mp3")


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


def run_ffmpeg(arguments, what):
    result = subprocess.run(arguments, capture_output=True, text=True)
    if result.returncode != 0:
        detail = " | ".join(result.stderr.strip().splitlines()[-3:])
        raise DreamflowError(f"ffmpeg failed to {what}: {detail}")


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
        info = ffmpeg.probe(path, cmd=tool("ffprobe"))
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
    """Write frames 000001.<fmt>... into `out_dir`, all at once: a failed run leaves no folder."""
    try:
        extraction = plan(probed, frames_settings)
    except ValueError as error:
        raise DreamflowError(f"{probed['path']}: {error}") from None
    suffix = "." + frames_settings["format"]
    parent = os.path.dirname(os.path.abspath(out_dir))
    os.makedirs(parent, exist_ok=True)
    staging = out_dir.rstrip("/") + ".partial"
    shutil.rmtree(staging, ignore_errors=True)
    os.makedirs(staging)
    try:
        if probed["kind"] == "video":
            _extract_video(probed, frames_settings, extraction, staging, suffix, threads)
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
    return count


def _extract_video(probed, frames_settings, extraction, staging, suffix, threads):
    input_options = {"ss": extraction["start_seconds"]} if extraction["start_seconds"] else {}
    if extraction["end_seconds"] is not None:
        input_options["t"] = extraction["end_seconds"] - extraction["start_seconds"]
    stream = ffmpeg.input(probed["path"], **input_options).video.filter(
        "fps", fps=extraction["fps"]
    )
    width, height = target_size(probed["width"], probed["height"], frames_settings["width"])
    if (width, height) != (probed["width"], probed["height"]):
        stream = stream.filter("scale", width, height, flags="lanczos")
    output_options = {"start_number": 1, "threads": threads}
    if suffix == ".jpg":
        output_options["q:v"] = _jpeg_qscale(frames_settings["jpg_quality"])
    else:
        output_options["pix_fmt"] = "rgb24"
    pattern = os.path.join(staging, f"%0{FRAME_DIGITS}d{suffix}")
    arguments = (
        ffmpeg.output(stream, pattern, **output_options)
        .global_args("-hide_banner", "-loglevel", "error", "-nostdin")
        .compile(cmd=tool("ffmpeg"), overwrite_output=True)
    )
    run_ffmpeg(arguments, f"extract frames from {probed['path']}")


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
    with _numbered_sequence(frame_paths, os.path.dirname(output) or ".") as pattern:
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
    with tempfile.TemporaryDirectory(prefix=".frames-", dir=scratch_parent) as links:
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
            ffmpeg.input(probed["path"], ss=extraction["start_seconds"], t=float(count / fps))[
                "a:0"
            ]
        )
        options["acodec"] = "copy" if audio["codec"] in AUDIO_COPY_CODECS else "aac"
    with atomic_path(output) as temporary:
        arguments = (
            ffmpeg.output(*streams, temporary, format="mp4", **options)
            .global_args("-hide_banner", "-loglevel", "error", "-nostdin")
            .compile(cmd=tool("ffmpeg"), overwrite_output=True)
        )
        run_ffmpeg(arguments, f"encode {output}")


def write_probe(path, output):
    with atomic_path(output) as temporary, open(temporary, "w") as handle:
        json.dump(probe(path), handle, indent=1)
