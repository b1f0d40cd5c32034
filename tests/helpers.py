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
import signal
import socket
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


# ---- media whose content can be checked: a corner marker, a turned picture, a stepped tone ----

MARKER_SIZE = 12  # pixels of the bright square at the top left of every stored frame
TONE_STEP_HZ = 300  # second k of a marker video's tone (from 0) is a sine of TONE_STEP_HZ * (k + 1)


def make_marker_video(
    path,
    *,
    rotation=0,
    seconds=3,
    fps=VIDEO_FPS,
    size=f"{VIDEO_WIDTH}x{VIDEO_HEIGHT}",
    rate=44100,
):
    """An H.264 mp4 of a dark frame with a white square in its top left corner, shown turned
    `rotation` degrees clockwise (its track's display matrix, as phones write it), with an AAC tone
    whose pitch steps up every second: TONE_STEP_HZ, then twice that, and so on. Returns the path
    as a string."""
    marker = f"drawbox=x=0:y=0:w={MARKER_SIZE}:h={MARKER_SIZE}:color=white:t=fill"
    tone = f"sin(2*PI*{TONE_STEP_HZ}*(1+floor(t))*t)"
    run_ffmpeg(
        *("-f", "lavfi", "-i", f"color=c=0x282828:size={size}:rate={fps},{marker}"),
        *("-f", "lavfi", "-i", f"aevalsrc=exprs='{tone}':s={rate}"),
        *("-t", seconds, "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac"),
        # the index first, so that the track header is found before any media bytes
        *("-movflags", "+faststart", path),
    )
    if rotation:
        set_display_rotation(path, rotation)
    return str(path)


def _boxes(data, start, end):
    """(type, offset of its content, end) of each ISO BMFF box between `start` and `end`."""
    while start + 8 <= end:
        size = int.from_bytes(data[start : start + 4], "big")
        kind = data[start + 4 : start + 8].decode("latin-1")
        header = 8
        if size == 1:
            size, header = int.from_bytes(data[start + 8 : start + 16], "big"), 16
        elif size == 0:
            size = end - start
        yield kind, start + header, start + size
        start += size


def set_display_rotation(path, degrees):
    """Set the display matrix of the mp4's video track to a turn of `degrees` (a multiple of 90)
    clockwise, written the way the QuickTime file format defines it (a point x, y of the stored
    picture is shown at a*x + c*y + tx, b*x + d*y + ty, y pointing down), independent of how
    ffmpeg's rotate tag reads it."""
    import struct

    data = bytearray(Path(path).read_bytes())
    moov = next(box for box in _boxes(data, 0, len(data)) if box[0] == "moov")
    for kind, start, end in _boxes(data, moov[1], moov[2]):
        children = {k: (s, e) for k, s, e in _boxes(data, start, end)} if kind == "trak" else {}
        handler = [s for k, s, _ in _boxes(data, *children.get("mdia", (0, 0))) if k == "hdlr"]
        if not handler or data[handler[0] + 8 : handler[0] + 12] != b"vide":
            continue
        tkhd, tkhd_end = children["tkhd"]
        # the box ends with the stored picture's width and height, 16.16 fixed point
        width = int.from_bytes(data[tkhd_end - 8 : tkhd_end - 6], "big")
        height = int.from_bytes(data[tkhd_end - 4 : tkhd_end - 2], "big")
        cos, sin, tx, ty = {
            0: (1, 0, 0, 0),
            90: (0, 1, height, 0),
            180: (-1, 0, width, height),
            270: (0, -1, 0, width),
        }[degrees % 360]  # the translation keeps the turned picture at positive coordinates
        one = 1 << 16
        matrix = (cos * one, sin * one, 0, -sin * one, cos * one, 0, tx * one, ty * one, 1 << 30)
        # version and flags; times, track id and duration (64-bit times in version 1); reserved,
        # layer, alternate group, volume, reserved; then the matrix
        times = 4 + 4 + 4 + 4 + 4 if data[tkhd] == 0 else 8 + 8 + 4 + 4 + 8
        offset = tkhd + 4 + times + 8 + 2 + 2 + 2 + 2
        data[offset : offset + 36] = struct.pack(">9i", *matrix)
        Path(path).write_bytes(bytes(data))
        return
    raise ValueError(f"{path} has no video track")


def video_frames(path):
    """Every frame of a video as ffmpeg shows it (turned upright by its display matrix), as a
    (frames, height, width, 3) uint8 array."""
    (stream,) = [s for s in ffprobe_streams(path) if s["codec_type"] == "video"]
    rotation = next(
        (int(d["rotation"]) for d in stream.get("side_data_list", []) if "rotation" in d), 0
    )
    width, height = int(stream["width"]), int(stream["height"])
    if rotation % 180:
        width, height = height, width
    raw = subprocess.run(
        ["ffmpeg", "-v", "error", "-nostdin", "-i", str(path), "-f", "rawvideo"]
        + ["-pix_fmt", "rgb24", "-"],
        check=True,
        capture_output=True,
    ).stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, height, width, 3)


def marker_corner(image):
    """The corner ("top left", "top right", "bottom left", "bottom right") of the quarter of
    `image` (height, width[, channels]) that holds the bright marker; asserts that one quarter is
    clearly the brightest."""
    gray = np.asarray(image, dtype=float)
    if gray.ndim == 3:
        gray = gray.mean(axis=2)
    half_h, half_w = gray.shape[0] // 2, gray.shape[1] // 2
    quarters = {
        "top left": gray[:half_h, :half_w],
        "top right": gray[:half_h, -half_w:],
        "bottom left": gray[-half_h:, :half_w],
        "bottom right": gray[-half_h:, -half_w:],
    }
    means = {corner: float(quarter.mean()) for corner, quarter in quarters.items()}
    brightest = max(means, key=means.get)
    others = [mean for corner, mean in means.items() if corner != brightest]
    assert means[brightest] > 1.5 * max(others), f"no quarter clearly holds the marker: {means}"
    return brightest


def stored_marker_corner_when_turned(size, rotation):
    """Where a marker video's marker is shown when its stored picture of `size` (width, height)
    is turned `rotation` degrees clockwise: worked out by turning an array, not by ffmpeg."""
    width, height = size
    stored = np.zeros((height, width))
    stored[:MARKER_SIZE, :MARKER_SIZE] = 255
    return marker_corner(np.rot90(stored, k=-(rotation // 90)))  # negative k: clockwise


def audio_samples(path, rate=44100):
    """The first audio stream of a media file, decoded by ffmpeg to mono float samples."""
    raw = subprocess.run(
        ["ffmpeg", "-v", "error", "-nostdin", "-i", str(path), "-map", "0:a:0", "-ac", "1"]
        + ["-ar", str(rate), "-f", "f32le", "-"],
        check=True,
        capture_output=True,
    ).stdout
    return np.frombuffer(raw, np.float32)


def pitch(samples, rate=44100, start=0.0, end=None):
    """The strongest frequency (Hz) of `samples` between `start` and `end` seconds."""
    part = samples[int(start * rate) : None if end is None else int(end * rate)]
    spectrum = np.abs(np.fft.rfft(part * np.hanning(len(part))))
    return float(np.fft.rfftfreq(len(part), 1 / rate)[np.argmax(spectrum)])


def assert_audio_is_the_source_from(output, source, offset, rate=44100):
    """Assert that the audio of `output` is that of the marker video `source` from `offset`
    seconds on: the pitch of its first half second is the source's there, and so is the pitch of
    each tenth of a second that does not touch one of the source's pitch steps (at whole seconds;
    a compressed packet's length, about 0.02 s, is allowed either way). A start a sixth of a
    second off puts one of those tenths on the wrong step."""
    heard, played = audio_samples(output, rate), audio_samples(source, rate)
    tolerance = TONE_STEP_HZ / 10
    first, expected = pitch(heard, rate, 0, 0.5), pitch(played, rate, offset, offset + 0.5)
    assert abs(first - expected) < tolerance, (
        f"the first half second of {output} is at {first:g} Hz, the source at {offset:g} s at "
        f"{expected:g} Hz"
    )
    windows = 0
    for start in np.arange(0, len(heard) / rate - 0.1, 0.1):
        source_start = offset + start
        if np.floor(source_start - 0.03) != np.floor(source_start + 0.1 + 0.03):
            continue
        got = pitch(heard, rate, start, start + 0.1)
        expected = pitch(played, rate, source_start, source_start + 0.1)
        assert abs(got - expected) < tolerance, (
            f"{output} at {start:.1f} s is at {got:g} Hz, the source at {source_start:.2f} s at "
            f"{expected:g} Hz"
        )
        windows += 1
    assert windows >= 4, f"{output} is too short to check its audio's start"


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
    from dreamflow.job import JobSettings

    dream = dreamflow_config.resolve_dream(
        defaults("dream", **{**TINY_DREAM, "device": "cpu", **dream})
    )
    return JobSettings(dream=dream).text()


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


# ---- "dreamed": how far a dream moved the pixels ----

# Measured with the embedded EfficientNet-Lite0 on 64x36 and 48x48 pattern frames (CPU, step_size
# 1.5): the mean |change| is 1.45 (0-255 units) after one iteration, 2.16 after two, 3.28 after
# four, 2.86 for three octaves of two and 8.4 for the defaults (three octaves of ten, jitter 32).
# Each step moves a pixel by step_size on average (the gradient is divided by its mean size), but
# jitter turns the direction from step to step, so the change grows about as sqrt(iterations), and
# the smaller octaves' detail is blurred by upscaling. Half of step_size * sqrt(iterations) stays
# below every measured change by a factor of 1.9 or more; a step scaled by 0.01 moves pixels 0.015.
DREAMED_FRACTION = 0.5
# Dreams of one frame that differ only in rounding (bfloat16 or float16 autocast, other
# convolution algorithms), after ONE iteration, Lite0 block4/block10, 36x64 to 96x128: the cosine of
# their changes to the frame is 0.68-0.92 for bfloat16 and 0.95-1.0 for float16 against the float32
# dream, while a dream of another layer gives -0.17-0.47 and of another seed 0.07-0.25. Their mean
# pixel difference separates nothing: bfloat16 0.55-1.21 (0-255 units), a whole step 1.49. Rounding
# differences grow from step to step, so only one-iteration dreams are compared.
SAME_DREAM_COSINE = 0.6


def _pixels(image):
    """An image as float (H, W, 3) in 0-255 units: a path, a uint8 array, or a float array or
    tensor in [0, 1] as the engine gives them ((1, 3, H, W) or (3, H, W) or (H, W, 3))."""
    if isinstance(image, (str, os.PathLike)):
        from dreamflow.images import read_rgb

        return read_rgb(image).astype(np.float64)
    if hasattr(image, "detach"):
        image = image.detach().cpu().numpy()
    array = np.asarray(image)
    if array.dtype != np.uint8:
        array = array.astype(np.float64) * 255.0
    if array.ndim == 4:
        (array,) = array
    if array.shape[0] == 3 and array.shape[-1] != 3:
        array = array.transpose(1, 2, 0)
    return array.astype(np.float64)


def dream_change(raw, dreamed):
    """The mean absolute difference of two images of one size, in 0-255 units; each a path, a uint8
    array or a float array or tensor in [0, 1]."""
    before, after = _pixels(raw), _pixels(dreamed)
    assert before.shape == after.shape, f"sizes differ: {before.shape} and {after.shape}"
    return float(np.abs(after - before).mean())


def least_dream_change(dream_settings):
    """The smallest mean change (0-255 units) a dream with these settings makes: see
    DREAMED_FRACTION. Settings not given take the schema defaults."""
    settings = defaults("dream", **dream_settings)
    return DREAMED_FRACTION * settings["step_size"] * settings["iterations"] ** 0.5


def assert_dreamed(raw, dreamed, dream_settings):
    """`dreamed` is `raw` dreamed with `dream_settings` (a dream section, defaults filled in for
    missing keys), not a copy, a re-encoding or a dream of a much smaller step. Lossless images
    only: JPEG noise alone can move pixels by as much."""
    change, least = dream_change(raw, dreamed), least_dream_change(dream_settings)
    assert change >= least, f"mean change {change:.3f} of 255 is below a dream's {least:.3f}"
    return change


def assert_same_dream(raw, dream, reference, dream_settings):
    """`dream` and `reference` are the same one-iteration dream of `raw` within rounding (reduced
    precision, other algorithms): both dreamed, their changes pointing the same way (cosine at least
    SAME_DREAM_COSINE). Returns that cosine."""
    settings = defaults("dream", **dream_settings)
    assert settings["iterations"] == 1, "rounding differences grow with iterations: compare one"
    assert_dreamed(raw, reference, settings)
    assert_dreamed(raw, dream, settings)
    before = _pixels(raw)
    change, expected = (_pixels(dream) - before).ravel(), (_pixels(reference) - before).ravel()
    cosine = float(change @ expected / (np.linalg.norm(change) * np.linalg.norm(expected)))
    assert cosine >= SAME_DREAM_COSINE, (
        f"the dreams' changes point apart: cosine {cosine:.2f}, below {SAME_DREAM_COSINE}"
    )
    return cosine


def run_dreamflow(*arguments, cwd=None, env=None, timeout=300):
    """Run the `dreamflow` command of this checkout's package, as a workflow job does; `env` is the
    whole environment (None: this process's)."""
    return subprocess.run(
        [sys.executable, "-m", "dreamflow", *map(str, arguments)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# ---- what a user sees when something goes wrong ----

# a frame of Snakemake's short traceback: it names the exception and lists the frames, without
# Python's "Traceback" line (its own one-line location of an error names a .smk file or the
# Snakefile, not a .py file)
PYTHON_FRAME = re.compile(r'^\s*File "[^"]+\.py", line \d+, in ', re.M)


def assert_no_traceback(output):
    """No traceback in `output`: neither Python's nor Snakemake's shorter form."""
    assert "Traceback" not in output, output
    assert not PYTHON_FRAME.search(output), output


def assert_one_line_error(result, *words):
    """A command that failed the way a user's mistake should fail: exit status 1, nothing but one
    `dreamflow: error:` line on stderr, no traceback anywhere, and each of `words` in that line.
    Returns the line."""
    assert_no_traceback(result.stdout + result.stderr)
    assert result.returncode == 1, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("dreamflow: error: "), lines[0]
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


def assert_says(output, *words):
    """The first line of `output` (all that a run printed) that holds each of `words`; asserts
    there is one, and that no traceback is anywhere in the output."""
    assert_no_traceback(output)
    found = [line for line in output.splitlines() if all(word in line for word in words)]
    assert found, (words, output)
    return found[0]


# ---- the model server ----


LONG_IDLE = 600  # seconds: longer than any test; tests end their servers with kill_servers


def dream_frame(
    cwd, env, frame, output, number=1, previous=None, settings=None, threads=1, wait=True
):
    command = [
        sys.executable,
        "-m",
        "dreamflow",
        "dream-frame",
        "--frame",
        str(frame),
        "--number",
        str(number),
        "--settings",
        settings or job_settings(),
        "--threads",
        str(threads),
        "-o",
        str(output),
    ]
    if previous:
        command += ["--previous", str(previous)]
    process = subprocess.Popen(
        command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    return finish(process) if wait else process


def finish(process):
    stdout, stderr = process.communicate(timeout=300)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def has_exited(pid):
    """Whether process `pid` is gone, or a zombie with every thread of it ended: only then are its
    files closed. A dying process has no command line a while before that (the kernel frees its
    memory first), and its main thread shows as a zombie while its other threads (the model
    server's, which may hold a file open) are still ending."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except (FileNotFoundError, ProcessLookupError):
        return True
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/stat") as handle:
                if handle.read().rsplit(")", 1)[1].split()[0] not in "ZX":
                    return False
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue  # that thread has just gone
    return True


def is_dreamflow_server(pid):
    if has_exited(pid):
        return False
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return b"\0-m\0dreamflow\0serve\0" in handle.read()
    except (FileNotFoundError, ProcessLookupError):
        return False


def kill_servers(directory):
    for pid_file in directory.glob("*.pid") if directory.is_dir() else []:
        try:
            pid = int(pid_file.read_text())
        except (OSError, ValueError):
            continue
        if is_dreamflow_server(pid):
            os.kill(pid, signal.SIGKILL)


def dreamed_by_server(result):
    """The pid of the server that the client's one log line names (and that line is all it
    wrote)."""
    (line,) = result.stderr.splitlines()
    match = re.fullmatch(
        rf"dreamflow: dreamed by the model server: pid (\d+), python {re.escape(sys.executable)}, "
        rf"host {re.escape(socket.gethostname())}",
        line,
    )
    assert match, line
    return int(match.group(1))
