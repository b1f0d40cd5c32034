"""Shared fixtures for the workflow tests: tiny real media and a real Snakemake runner."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]

# model servers of finished test workflows should not linger (each holds ~0.7 GB)
os.environ.setdefault("DREAMFLOW_SERVER_IDLE", "2")

# small enough for a 2-core CPU, real enough to exercise every step
TINY_DREAM = {"octaves": 1, "iterations": 2, "jitter": 4, "layers": ["block4"]}
TINY_RESOURCES = {"dream_threads": 1, "ffmpeg_threads": 1}


def make_video(path, frames=6, fps=6, size="64x36", audio=True):
    """A real H.264 test-pattern video, optionally with a sine audio track."""
    command = ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc=size={size}:rate={fps}"]
    if audio:
        command += ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=22050"]
    # -t, not -frames:v: a frame limit ends the audio stream early too
    command += ["-t", str(frames / fps), "-c:v", "libx264", "-pix_fmt", "yuv420p"]
    if audio:
        command += ["-c:a", "aac"]
    subprocess.run(command + [str(path)], check=True)
    return path


def ffprobe_streams(path):
    result = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "stream=codec_type,avg_frame_rate,nb_frames,duration",
         "-of", "compact=p=0:nk=0", str(path)], capture_output=True, text=True, check=True)
    streams = []
    for line in result.stdout.strip().splitlines():
        streams.append(dict(item.split("=", 1) for item in line.split("|")))
    return streams


class Workflow:
    """A project directory with its own config.yaml, run through the real Snakemake."""

    def __init__(self, directory):
        self.directory = Path(directory)

    def write_config(self, config):
        (self.directory / "config.yaml").write_text(yaml.safe_dump(config))

    def read_config(self):
        return yaml.safe_load((self.directory / "config.yaml").read_text())

    def run(self, *args, env=None, timeout=900):
        command = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
                   "--directory", str(self.directory), "--cores", "2", *args]
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                                env={**os.environ, **(env or {})})
        result.output = result.stdout + result.stderr
        return result

    def finished(self, result, rule):
        """How many jobs of `rule` Snakemake reports as finished in this run."""
        return len(re.findall(rf"Finished jobid: \d+ \(Rule: {rule}\)", result.output))

    def dreamed_in_run(self, result):
        """Frame numbers whose dream job ran, from the rule's message lines."""
        return sorted(int(n) for n in re.findall(r"Dreaming frame (\d+) of", result.output))

    def path(self, *parts):
        return self.directory.joinpath(*parts)


def tiny_config(input_path, **overrides):
    config = {"inputs": {"tiny": {"path": str(input_path)}}, "dream": dict(TINY_DREAM),
              "resources": dict(TINY_RESOURCES), "blend": {"mode": "none"}}
    for section, values in overrides.items():
        if isinstance(values, dict) and isinstance(config.get(section), dict):
            config[section] = {**config[section], **values}
        else:
            config[section] = values
    return config


@pytest.fixture
def workflow(tmp_path):
    return Workflow(tmp_path)


@pytest.fixture(scope="session")
def tiny_video(tmp_path_factory):
    return make_video(tmp_path_factory.mktemp("media") / "tiny.mp4")


def _finished_workflow(tmp_path_factory, name, blend):
    directory = tmp_path_factory.mktemp(name)
    flow = Workflow(directory)
    make_video(directory / "tiny.mp4")
    flow.write_config(tiny_config("tiny.mp4", blend=blend))
    result = flow.run()
    assert result.returncode == 0, result.output
    return directory


@pytest.fixture(scope="session")
def finished_plain(tmp_path_factory):
    """A completed run without blending, copied by each test that changes it."""
    return _finished_workflow(tmp_path_factory, "plain", {"mode": "none"})


@pytest.fixture(scope="session")
def finished_blend(tmp_path_factory):
    return _finished_workflow(tmp_path_factory, "blend", {"mode": "constant", "factor": 0.5})


def copy_workflow(source, destination):
    """Copy a finished project, keeping mtimes and Snakemake's metadata, so reruns behave as in place."""
    shutil.copytree(source, destination, symlinks=True)
    return Workflow(destination)
