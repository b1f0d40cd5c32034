"""The shared test helpers: tiny real media made with ffmpeg, default and tiny settings, and a
runner of the real Snakemake workflow.

Test modules import it as `helpers` (pyproject.toml puts tests/ on pytest's pythonpath);
tests/conftest.py builds its fixtures from it, and skips the tests marked `cuda` without a GPU.
"""

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from dreamflow import config as dreamflow_config

REPO = Path(__file__).resolve().parents[1]

VIDEO_WIDTH, VIDEO_HEIGHT, VIDEO_FRAMES, VIDEO_FPS = 64, 36, 6, 6

# small enough for a 2-core CPU, real enough to exercise every step
TINY_DREAM = {"octaves": 1, "iterations": 2, "jitter": 4, "layers": ["block4"]}
# the same as command-line options of `dreamflow dream`, `sweep` and `preview` (each test names
# its own layers)
TINY_DREAM_OPTIONS = [f"--{key}={value}" for key, value in TINY_DREAM.items() if key != "layers"]
TINY_RESOURCES = {"dream_threads": 1, "ffmpeg_threads": 1}

# model servers of finished test workflows should not linger (each holds ~0.7 GB)
SERVER_IDLE_SECONDS = "2"


# ---- media ----


def run_ffmpeg(*arguments):
    subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-y", *map(str, arguments)],
        check=True,
    )


def make_video(
    path,
    *,
    frames=VIDEO_FRAMES,
    fps=VIDEO_FPS,
    size=f"{VIDEO_WIDTH}x{VIDEO_HEIGHT}",
    audio=True,
    pattern="testsrc",
):
    """An H.264 mp4 of `frames` frames of an ffmpeg test pattern, `size` written "WIDTHxHEIGHT",
    with a 440 Hz AAC sine track as long as the video if `audio`. Returns the path as a string.

    `pattern` is the lavfi source: testsrc (a scrolling gradient and a timestamp) or testsrc2
    (more moving shapes); in both, every frame differs from the others.
    """
    arguments = ["-f", "lavfi", "-i", f"{pattern}=size={size}:rate={fps}"]
    if audio:
        arguments += ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=22050", "-c:a", "aac"]
    # -t, not -frames:v: a frame limit ends the audio stream early too
    run_ffmpeg(*arguments, "-t", frames / fps, "-c:v", "libx264", "-pix_fmt", "yuv420p", path)
    return str(path)


def truncated_video(folder, frames=30, keep=0.35):
    """A `frames`-frame mp4 with its index at the front (+faststart), cut to `keep` of its size:
    the header still says `frames` frames, fewer are there to decode."""
    whole = make_video(folder / "whole.mp4", frames=frames, fps=10)
    path = folder / "cut.mp4"
    run_ffmpeg("-i", whole, "-c", "copy", "-movflags", "+faststart", path)
    os.truncate(path, int(os.path.getsize(path) * keep))
    return str(path)


def make_audio(path, duration=1):
    run_ffmpeg("-f", "lavfi", "-i", f"sine=frequency=440:duration={duration}", "-c:a", "aac", path)
    return str(path)


def ffprobe_streams(path):
    """The streams of a media file as ffprobe's JSON gives them (every value a string, as ffprobe
    writes it), with frames counted by decoding in `nb_read_frames`."""
    result = subprocess.run(
        ["ffprobe", "-v", "error", "-count_frames", "-show_streams", "-of", "json", str(path)],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(result.stdout)["streams"]


def solid_image(path, color, size=(VIDEO_WIDTH, VIDEO_HEIGHT)):
    """Write a one-colour RGB image of `size` (width, height); the format follows the suffix."""
    Image.new("RGB", size, color).save(path)
    return str(path)


def png_claiming_size(path, width, height):
    """A PNG whose header claims width x height and that holds no pixels: what a decompression
    bomb looks like to a reader."""
    import struct
    import zlib

    def chunk(kind, data):
        checksum = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + checksum

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    with open(path, "wb") as handle:
        handle.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b""))


def pattern_array(height=VIDEO_HEIGHT, width=VIDEO_WIDTH, seed=0):
    """A smooth, structured uint8 RGB image: random colours at low resolution, upscaled."""
    rng = np.random.default_rng(seed)
    small = Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8))
    return np.asarray(small.resize((width, height), Image.BICUBIC))


# ---- settings and objectives ----


def defaults(section, **overrides):
    """The schema defaults of one config section (dream, blend, frames, encode), with overrides."""
    schema = dreamflow_config.load_schema()
    values = dreamflow_config.fill_defaults({}, schema["$defs"][section], schema)
    values.update(overrides)
    return values


def write_scene_frames(folder, lengths, size=(VIDEO_WIDTH, VIDEO_HEIGHT), shift=3):
    """An image folder of scenes of `lengths` frames: in each, a texture of its own pans `shift`
    px per frame, and every other scene is three times darker, so each new scene is a clear cut
    (ffmpeg's scene score about 0.5). Returns the folder as a string."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    width, height = size
    number = 0
    for scene, length in enumerate(lengths):
        texture = pattern_array(height, width + shift * length, seed=10 + scene)
        if scene % 2:
            texture = texture // 3
        for index in range(length):
            number += 1
            frame = texture[:, shift * index : shift * index + width]
            Image.fromarray(np.ascontiguousarray(frame)).save(folder / f"img{number}.png")
    return str(folder)


def job_settings(**dream):
    """The settings text of a frame job as the workflow writes it: TINY_DREAM on the CPU, with
    `dream` overriding."""
    from dreamflow.job import settings_text

    dream = dreamflow_config.resolve_dream(
        defaults("dream", **{**TINY_DREAM, "device": "cpu", **dream})
    )
    return settings_text({"dream": dream, "zoom": None, "jpg_quality": 95})


def objective_value(model, objective, image):
    """What `objective` gives for `image` through the model's own activations, as a float: the
    quantity a dream ascends, to check that dreaming raised it."""
    import torch  # here, not above: the media and workflow tests need no torch in this process

    with torch.no_grad():
        return float(objective(model.activations(image, objective.layers)))


# ---- the real workflow ----


class Workflow:
    """A project directory with its own config.yaml, run through the real Snakemake."""

    def __init__(self, directory):
        self.directory = Path(directory)

    def write_config(self, config):
        (self.directory / "config.yaml").write_text(yaml.safe_dump(config))

    def read_config(self):
        return yaml.safe_load((self.directory / "config.yaml").read_text())

    def command(self, *args):
        """The `snakemake` command line of a run of this project."""
        return [
            sys.executable,
            "-m",
            "snakemake",
            "--snakefile",
            str(REPO / "Snakefile"),
            "--directory",
            str(self.directory),
            "--cores",
            "2",
            *args,
        ]

    def environment(self, env=None):
        """The environment of a run: this process's, `env` added, and the short idle time of the
        model server unless either sets one (set for the runs only, never in the tests' own
        process; a value in the caller's environment wins, so a longer idle time can be asked for
        when debugging)."""
        return {"DREAMFLOW_SERVER_IDLE": SERVER_IDLE_SECONDS, **os.environ, **(env or {})}

    def run(self, *args, env=None, timeout=900):
        result = subprocess.run(
            self.command(*args),
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self.environment(env),
        )
        result.output = result.stdout + result.stderr
        return result

    def finished(self, result, rule):
        """How many jobs of `rule` Snakemake reports as finished in this run."""
        return len(re.findall(rf"Finished jobid: \d+ \(Rule: {rule}\)", result.output))

    def dreamed_in_run(self, result):
        """Frame numbers whose dream job ran, from the rule's message lines."""
        return sorted(int(n) for n in re.findall(r"Dreaming frame (\d+) of", result.output))

    def ran_in_run(self, result, verb):
        """Node names (000004, 000009-lead) whose job of `verb` (Dreaming, Blending, Optical
        flow, Crossfading) ran, in the order they started."""
        return re.findall(rf"{verb} (?:of )?frame (\d+(?:-lead)?) of", result.output)

    def inputs_of_outputs(self):
        """{output file: (rule, [input files])} of every existing output, as Snakemake's
        detailed summary gives it: the file-level DAG."""
        result = self.run("--detailed-summary")
        assert result.returncode == 0, result.output
        rows = [line.split("\t") for line in result.stdout.splitlines()[1:] if "\t" in line]
        return {row[0]: (row[2], [f for f in row[4].split(",") if f]) for row in rows}

    def rule_edges(self):
        """The DAG's edges as (rule, rule) pairs, every frame job included."""
        # forcing the dream jobs keeps the finished checkpoints, so every frame job is in the DAG
        result = self.run("--dag", "--forcerun", "dream_frame")
        assert result.returncode == 0, result.output
        rules = dict(re.findall(r'^\s*(\d+)\[label = "(\w+)', result.stdout, re.M))
        edges = re.findall(r"^\s*(\d+) -> (\d+)", result.stdout, re.M)
        return {(rules[a], rules[b]) for a, b in edges}

    def path(self, *parts):
        return self.directory.joinpath(*parts)


def tiny_config(input_path, **overrides):
    """A config of one input with TINY_DREAM settings; a section given as a mapping is merged."""
    config = {
        "inputs": {"tiny": {"path": str(input_path)}},
        "dream": dict(TINY_DREAM),
        "resources": dict(TINY_RESOURCES),
        "blend": {"mode": "none"},
    }
    for section, values in overrides.items():
        if isinstance(values, dict) and isinstance(config.get(section), dict):
            config[section] = {**config[section], **values}
        else:
            config[section] = values
    return config


def copy_workflow(source, destination):
    """Copy a finished project, keeping mtimes and Snakemake's metadata, so that reruns behave as
    they would in place."""
    shutil.copytree(source, destination, symlinks=True)
    return Workflow(destination)


# ---- a full disk ----


@contextlib.contextmanager
def small_disk(path, kilobytes):
    """A tmpfs of `kilobytes` mounted at `path` for the block: a real filesystem that fills up.
    Mounting needs root (CI runs as root); elsewhere the calling test is skipped, saying so."""
    import pytest

    os.makedirs(path, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={kilobytes}k", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs to fill (needs root): {mounted.stderr.strip()}")
    try:
        yield Path(path)
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


def fill(folder, leave_bytes=0):
    """Fill the filesystem of `folder` up to `leave_bytes` free."""
    usage = shutil.disk_usage(folder)
    with open(os.path.join(folder, "filler"), "wb") as handle:
        handle.write(b"\0" * max(0, usage.free - leave_bytes))
