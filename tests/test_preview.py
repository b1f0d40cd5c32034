"""Previews: a layer sweep of a video's frames at some times, from the workflow and from
`dreamflow preview`, with real ffmpeg, torch and Snakemake."""

import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from dreamflow import config, video
from dreamflow.errors import DreamflowError
from dreamflow.images import read_rgb
from dreamflow.plan import Plan
from dreamflow.preview import grab_frame
from dreamflow.sheet import GAP, LABEL_HEIGHT, contact_sheet
from dreamflow.sweep import sweep_cells
from helpers import (
    TINY_DREAM,
    TINY_DREAM_OPTIONS,
    VIDEO_FPS,
    assert_dreamed,
    dream_change,
    least_dream_change,
    make_video,
    tiny_config,
)

TIMES = [0.0, 0.5]
CELLS = [
    "01-0.0s-01-block2.png",
    "01-0.0s-02-block4.png",
    "02-0.5s-01-block2.png",
    "02-0.5s-02-block4.png",
]


def frames_settings(**overrides):
    return {**config.section_defaults("frames"), **overrides}


def extracted(video_path, folder, **overrides):
    """The frames the workflow's extraction gives, as arrays by number."""
    video.extract(video.probe(str(video_path)), frames_settings(**overrides), str(folder))
    return {int(name[:6]): read_rgb(folder / name) for name in sorted(os.listdir(folder))}


def dreamflow(*arguments, cwd):
    return subprocess.run(
        [sys.executable, "-m", "dreamflow", *map(str, arguments)],
        cwd=cwd,
        capture_output=True,
        text=True,
    )


def test_a_video_sweep_has_a_row_per_time_and_a_column_per_item():
    cells = sweep_cells(["block8", "block4+block5:3"], [10, 42.5])
    assert list(cells) == [
        "01-10.0s-01-block8",
        "01-10.0s-02-block4+block5-3",
        "02-42.5s-01-block8",
        "02-42.5s-02-block4+block5-3",
    ]
    assert [cell.label for cell in cells.values()] == [
        "block8 @ 10.0 s",
        "block4+block5:3 @ 10.0 s",
        "block8 @ 42.5 s",
        "block4+block5:3 @ 42.5 s",
    ]
    assert [cell.seconds for cell in cells.values()] == [10.0, 10.0, 42.5, 42.5]


def test_a_label_wider_than_its_image_widens_the_cell():
    small = np.zeros((10, 12, 3), dtype=np.uint8)
    sheet = contact_sheet([small, small], ["block8 @ 42.5 s", "x"], columns=2)
    assert sheet.shape[1] > GAP + 2 * (12 + GAP) + 40


@pytest.mark.parametrize("seconds", [0.0, 0.5, 0.55, 0.99])
def test_the_grabbed_frame_is_the_extracted_frame_showing_at_that_time(tmp_path, seconds):
    path = make_video(tmp_path / "clip.mp4", audio=False)
    frames = extracted(path, tmp_path / "frames")
    grab_frame(video.probe(path), seconds, frames_settings(), str(tmp_path / "grabbed.png"))
    number = int(seconds * VIDEO_FPS) + 1  # frame k shows from (k-1)/fps to k/fps
    assert np.array_equal(read_rgb(tmp_path / "grabbed.png"), frames[number])


def test_a_time_past_the_end_names_the_key_and_writes_nothing(tmp_path):
    path = make_video(tmp_path / "clip.mp4", audio=False)
    with pytest.raises(DreamflowError, match=r"^at: 1 s is past the end of .*clip.mp4"):
        grab_frame(video.probe(path), 1.0, frames_settings(), str(tmp_path / "g.png"), key="at")
    assert os.listdir(tmp_path) == ["clip.mp4"]


@pytest.fixture
def media(tmp_path):
    make_video(tmp_path / "clip.mp4", audio=False)
    Image.new("RGB", (48, 32), (120, 80, 40)).save(tmp_path / "still.png")
    os.makedirs(tmp_path / "folder")
    Image.new("RGB", (48, 32)).save(tmp_path / "folder" / "a.png")
    return tmp_path


def check(media, name, sweep):
    raw = {"inputs": {"x": {"path": str(media / name), "sweep": sweep}}}
    return config.check_inputs(config.validate(raw))


@pytest.mark.parametrize(
    "name, sweep, message",
    [
        ("still.png", {"layers": ["block2"], "at": [0.5]}, "inputs.x.sweep.at: times are for a"),
        ("clip.mp4", {"layers": ["block2"]}, "inputs.x.sweep.at: missing"),
        ("clip.mp4", {"layers": ["block2"], "at": [0], "columns": 2}, "inputs.x.sweep.columns"),
        ("folder", {"layers": ["block2"], "at": [0]}, "inputs.x.sweep: needs a single image or"),
        ("clip.mp4", {"layers": ["block2"], "at": [-1]}, "inputs.x.sweep.at.0: -1 is less than"),
    ],
)
def test_a_wrong_sweep_is_a_config_error_naming_the_key(media, name, sweep, message):
    with pytest.raises(DreamflowError, match="config key " + message.replace(".", r"\.")):
        check(media, name, sweep)


def test_the_plan_of_a_video_sweep_grabs_each_time_once_and_never_blends(media):
    sweep = {"layers": ["block2", "block4"], "at": [0, 0.5]}
    entry = {"path": str(media / "clip.mp4"), "sweep": sweep}
    plan = Plan({"inputs": {"clip": entry}, "blend": {"mode": "constant"}}, cores=2)["clip"]
    assert not plan.blends
    assert list(plan.sweep) == [name.removesuffix(".png") for name in CELLS]
    assert plan.sweep_labels[-1] == "block4 @ 0.5 s"
    assert plan.sweep_columns == 2
    assert plan.sweep_frame("02-0.5s-01-block2") == "work/clip/sweep/0.5s.png"
    assert plan.result == "results/clip/clip_sweep.png"


def test_preview_past_the_end_is_one_error_line_and_writes_nothing(tmp_path):
    make_video(tmp_path / "clip.mp4", audio=False)
    result = dreamflow(
        "preview", "clip.mp4", "--at", "0", "7.5", "--layers", "block2", "-o", "out", cwd=tmp_path
    )
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "dreamflow: error: --at: 7.5 s is past the end of clip.mp4, which lasts 1 s"
    ]
    assert not (tmp_path / "out").exists()


@pytest.mark.workflow
def test_a_video_sweep_dreams_only_the_frames_at_its_times_like_dreamflow_preview(project):
    make_video(project.path("tiny.mp4"))
    configuration = tiny_config("tiny.mp4", frames={"width": 48})
    configuration["inputs"]["tiny"]["sweep"] = {"layers": ["block2", "block4"], "at": TIMES}
    project.write_config(configuration)
    result = project.run()
    assert result.returncode == 0, result.output
    assert project.finished(result, "grab_frame") == 2
    assert project.finished(result, "sweep_layer") == 4
    for rule in ("extract_frames", "dream_frame", "encode"):
        assert project.finished(result, rule) == 0
    assert sorted(os.listdir(project.path("work", "tiny"))) == ["logs", "probe.json", "sweep"]
    assert not project.path("work", "tiny", "dreamed").exists()
    assert not project.path("results", "tiny", "tiny.mp4").exists()

    # the grabbed frames are the frames extraction gives at those times (48 px wide)
    frames = extracted(project.path("tiny.mp4"), project.path("extracted"), width=48)
    for seconds in TIMES:
        grabbed = read_rgb(project.path("work", "tiny", "sweep", f"{seconds}s.png"))
        assert grabbed.shape == (28, 48, 3)
        assert np.array_equal(grabbed, frames[round(seconds * VIDEO_FPS) + 1])

    # rows are times, columns items: a 2 x 2 grid of 48 x 28 frames, labels under each
    names = sorted(os.listdir(project.path("results", "tiny", "sweep")))
    assert names == CELLS
    dreams = [read_rgb(project.path("results", "tiny", "sweep", name)) for name in names]
    assert all(dream.shape == (28, 48, 3) for dream in dreams)
    for index, dream in enumerate(dreams):  # each cell dreams its time's frame
        grabbed = project.path("work", "tiny", "sweep", f"{TIMES[index // 2]}s.png")
        assert_dreamed(grabbed, dream, TINY_DREAM)
    for first, second in (dreams[0:2], dreams[2:4]):  # a time's two cells: each its own layer
        assert dream_change(first, second) >= least_dream_change(TINY_DREAM)
    sheet = read_rgb(project.path("results", "tiny", "tiny_sweep.png"))
    assert sheet.shape[0] == GAP + 2 * (28 + LABEL_HEIGHT + GAP)
    cell_width = (sheet.shape[1] - GAP) // 2 - GAP
    assert sheet.shape[1] == GAP + 2 * (cell_width + GAP)
    for index, dream in enumerate(dreams):
        row, column = divmod(index, 2)
        top, left = GAP + row * (28 + LABEL_HEIGHT + GAP), GAP + column * (cell_width + GAP)
        assert np.array_equal(sheet[top : top + 28, left : left + 48], dream)

    # `dreamflow preview` is the same sweep: the same files, byte for byte
    by_hand = dreamflow(
        "preview",
        "tiny.mp4",
        "--at",
        *TIMES,
        "--layers",
        "block2",
        "block4",
        "--width",
        "48",
        "--threads",
        "1",
        "-o",
        "by-hand",
        *TINY_DREAM_OPTIONS,
        cwd=project.path(),
    )
    assert by_hand.returncode == 0, by_hand.stderr
    assert sorted(os.listdir(project.path("by-hand", "sweep"))) == names
    for name in names:
        assert project.path("by-hand", "sweep", name).read_bytes() == (
            project.path("results", "tiny", "sweep", name).read_bytes()
        )
    assert project.path("by-hand", "tiny_preview.png").read_bytes() == (
        project.path("results", "tiny", "tiny_sweep.png").read_bytes()
    )


@pytest.mark.workflow
def test_a_video_sweep_time_past_the_end_fails_with_one_line_naming_the_key(project):
    make_video(project.path("tiny.mp4"))
    configuration = tiny_config("tiny.mp4")
    configuration["inputs"]["tiny"]["sweep"] = {"layers": ["block2"], "at": [5]}
    project.write_config(configuration)
    result = project.run()
    assert result.returncode != 0
    message = "dreamflow: error: config key inputs.tiny.sweep.at: 5 s is past the end of"
    assert message in result.output
    log = project.path("work", "tiny", "logs", "grab", "5.0s.png.log").read_text()
    assert log.splitlines() == [
        "dreamflow: error: config key inputs.tiny.sweep.at: 5 s is past the end of tiny.mp4, "
        "which lasts 1 s"
    ]
    assert not project.path("results", "tiny").exists()
    assert not project.path("work", "tiny", "sweep").exists()
