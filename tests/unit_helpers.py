"""Shared helpers for the unit tests: tiny real media made with ffmpeg, and default settings."""

import json
import subprocess

import numpy as np
from PIL import Image

from dreamflow import config

VIDEO_WIDTH, VIDEO_HEIGHT, VIDEO_FRAMES, VIDEO_FPS = 64, 36, 6, 6


def run_ffmpeg(*arguments):
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-y", *map(str, arguments)],
                   check=True)


def make_video(path, width=VIDEO_WIDTH, height=VIDEO_HEIGHT, frames=VIDEO_FRAMES, fps=VIDEO_FPS, audio=True):
    """An H.264 mp4 whose frames all differ (testsrc2), with a 440 Hz AAC sine track if `audio`."""
    duration = frames / fps
    arguments = ["-f", "lavfi", "-i", f"testsrc2=size={width}x{height}:rate={fps}:duration={duration}"]
    if audio:
        arguments += ["-f", "lavfi", "-i", f"sine=frequency=440:duration={duration}", "-c:a", "aac"]
    run_ffmpeg(*arguments, "-c:v", "libx264", "-pix_fmt", "yuv420p", path)
    return str(path)


def make_audio(path, duration=1):
    run_ffmpeg("-f", "lavfi", "-i", f"sine=frequency=440:duration={duration}", "-c:a", "aac", path)
    return str(path)


def ffprobe_streams(path):
    """Streams of a media file as ffprobe reports them, with frames counted by decoding."""
    result = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-show_streams", "-of", "json", str(path)],
                            check=True, capture_output=True, text=True)
    return json.loads(result.stdout)["streams"]


def solid_image(path, color, size=(VIDEO_WIDTH, VIDEO_HEIGHT)):
    """Write a one-colour RGB image of `size` (width, height); the format follows the suffix."""
    Image.new("RGB", size, color).save(path)
    return str(path)


def pattern_array(height=VIDEO_HEIGHT, width=VIDEO_WIDTH, seed=0):
    """A smooth, structured uint8 RGB image: random colours at low resolution, upscaled."""
    rng = np.random.default_rng(seed)
    small = Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8))
    return np.asarray(small.resize((width, height), Image.BICUBIC))


def defaults(section, **overrides):
    """The schema defaults of one config section (dream, blend, frames, encode), with overrides."""
    schema = config.load_schema()
    values = config.fill_defaults({}, schema["$defs"][section], schema)
    values.update(overrides)
    return values
