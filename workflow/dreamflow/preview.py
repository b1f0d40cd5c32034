"""The frame of a video at a given time, grabbed on its own as extraction would give it: what a
video's layer sweep dreams, without extracting the video."""

import os
from fractions import Fraction

import ffmpeg

from .config import unambiguous_path
from .errors import DreamflowError
from .images import atomic_path
from .video import as_frames, run_ffmpeg, tool


def frame_at(seconds, fps):
    """The number of the frame showing at `seconds`: frame k covers [(k-1)/fps, k/fps), as in
    frames.select_range."""
    return int(seconds * fps + 1e-9) + 1


def grab_frame(probed, seconds, frames_settings, output, key="--at"):
    """Write the frame of the probed video showing at `seconds` to `output` (png or jpg), scaled
    to the frames settings' width and turned by the video's rotation (ffmpeg applies it, as in
    extraction). A time outside the video raises an error that names `key`."""
    fps = Fraction(probed["fps"])
    duration = probed["frame_count"] / fps
    path = probed["path"]
    if not 0 <= seconds < duration:
        where = "before the start" if seconds < 0 else "past the end"
        raise DreamflowError(
            f"{key}: {seconds:g} s is {where} of {path}, which lasts {float(duration):g} s"
        )
    # ffmpeg's accurate seek gives the first frame at or after the time: seeking a quarter frame
    # before frame k starts finds frame k even where its timestamp rounds a little late
    seek = max(0.0, float((frame_at(seconds, fps) - 1.25) / fps))
    stream, options = as_frames(
        ffmpeg.input(unambiguous_path(path), ss=seek).video, probed, frames_settings
    )
    options["frames:v"] = 1
    with atomic_path(output) as temporary:
        arguments = (
            ffmpeg.output(stream, temporary, **options)
            .global_args("-hide_banner", "-loglevel", "error", "-nostdin")
            .compile(cmd=tool("ffmpeg"), overwrite_output=True)
        )
        run_ffmpeg(arguments, f"grab the frame at {seconds:g} s of {path}", output, temporary)
        if not os.path.getsize(temporary):
            raise DreamflowError(
                f"{key}: {path} has no frame at {seconds:g} s: it ends earlier than its header "
                "says (a truncated or damaged file?)"
            )
