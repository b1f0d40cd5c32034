"""Encoding, extracting and probing onto a disk that fills up: one line naming what could not be
written, and nothing left behind that looks complete. The disks are small real tmpfs mounts."""

import json
import os
import subprocess
import sys

import pytest

from dreamflow import video
from dreamflow.errors import DreamflowError
from helpers import assert_one_line_error, defaults, fill, make_video, run_dreamflow, small_disk

ENCODE = defaults("encode", preset="ultrafast")
FRAMES = defaults("frames")
FULL = "No space left on device"


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A clip big enough that its frames and its encode fill a disk of a few hundred KB."""
    folder = tmp_path_factory.mktemp("source")
    path = make_video(folder / "clip.mp4", frames=60, fps=10, size="320x180", pattern="testsrc2")
    probed = video.probe(path)
    video.extract(probed, FRAMES, str(folder / "frames"))
    frames = sorted(str(p) for p in (folder / "frames").iterdir())
    # the size of its encode: the disks below are sized from it
    video.encode(probed, FRAMES, ENCODE, frames, str(folder / "whole.mp4"))
    return probed, frames, os.path.getsize(folder / "whole.mp4")


@pytest.mark.parametrize(
    "where",
    [
        # ffmpeg fails writing a frame, and exits 1
        "mid-file",
        # every frame is written and only the trailer (the index, moved to the front) fails: ffmpeg
        # says so and exits 0 over a file that no player opens
        "in-the-trailer",
    ],
)
def test_encode_onto_a_full_disk_fails_in_one_line_and_leaves_nothing(source, tmp_path, where):
    probed, frames, size = source
    pages = size // 4096 // 2 if where == "mid-file" else size // 4096 - 2
    with small_disk(tmp_path / "disk", pages * 4) as disk:
        output = str(disk / "dreamed.mp4")
        with pytest.raises(DreamflowError) as caught:
            video.encode(probed, FRAMES, ENCODE, frames, output)
        assert str(caught.value) == f"cannot write {output}: {FULL}"
        assert os.listdir(disk) == []


def test_encode_on_the_command_line_onto_a_full_disk_says_so_in_one_line(source, tmp_path):
    probed, frames, size = source
    (tmp_path / "probe.json").write_text(json.dumps(probed))
    settings = json.dumps({"frames": FRAMES, "encode": ENCODE})
    with small_disk(tmp_path / "disk", (size // 4096 - 2) * 4) as disk:
        output = disk / "dreamed.mp4"
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "dreamflow",
                "encode",
                "--probe",
                str(tmp_path / "probe.json"),
                "--settings",
                settings,
                "--frames-dir",
                os.path.dirname(frames[0]),
                "--count",
                str(len(frames)),
                "-o",
                str(output),
            ],
            capture_output=True,
            text=True,
        )
        assert (result.returncode, result.stderr) == (
            1,
            f"dreamflow: error: cannot write {output}: {FULL}\n",
        )
        assert os.listdir(disk) == []


def test_extract_onto_a_full_disk_fails_in_one_line_and_leaves_no_frames_folder(source, tmp_path):
    probed, frames, _ = source
    (tmp_path / "probe.json").write_text(json.dumps(probed))
    with small_disk(tmp_path / "disk", 200) as disk:
        out = disk / "frames"
        result = run_dreamflow(
            "extract",
            "--probe",
            tmp_path / "probe.json",
            "--settings",
            json.dumps(FRAMES),
            "-o",
            out,
        )
        assert assert_one_line_error(result) == f"dreamflow: error: cannot write {out}: {FULL}"
        assert os.listdir(disk) == []


def test_write_probe_onto_a_full_disk_fails_in_one_line_and_leaves_nothing(source, tmp_path):
    probed, _, _ = source
    with small_disk(tmp_path / "disk", 64) as disk:
        fill(disk)
        output = disk / "probe.json"
        result = run_dreamflow("probe", probed["path"], "-o", output)
        assert assert_one_line_error(result) == f"dreamflow: error: cannot write {output}: {FULL}"
        assert os.listdir(disk) == ["filler"]


def test_extract_of_an_image_folder_onto_a_full_disk_fails_in_one_line(source, tmp_path):
    _, frames, _ = source
    probed = video.probe(os.path.dirname(frames[0]))
    with small_disk(tmp_path / "disk", 200) as disk:
        out = str(disk / "frames")
        with pytest.raises(DreamflowError) as caught:
            video.extract(probed, FRAMES, out)
        message = str(caught.value)
        assert message.startswith(f"cannot write {out}") and message.endswith(FULL)
        assert os.listdir(disk) == []


@pytest.mark.parametrize("step", ["encode", "extract", "write_probe"])
def test_writing_into_a_read_only_folder_fails_in_one_line(source, tmp_path, step):
    probed, frames, _ = source
    with small_disk(tmp_path / "disk", 64) as disk:
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        output = str(disk / "out")
        with pytest.raises(DreamflowError) as caught:
            if step == "encode":
                video.encode(probed, FRAMES, ENCODE, frames, output)
            elif step == "extract":
                video.extract(probed, FRAMES, output)
            else:
                video.write_probe(probed["path"], output)
        assert str(caught.value) == f"cannot write {output}: Read-only file system"
