"""End to end, by content: one real run of several inputs, then what is in its videos (where a
marker is, which tone plays, which source frame each frame shows, the codec) and that its inputs
are untouched."""

import hashlib
import os
import shutil

import numpy as np
import pytest

from dreamflow.images import read_rgb, write_rgb
from dreamflow.models import default_weights_file
from helpers import (
    TINY_DREAM,
    TINY_RESOURCES,
    VIDEO_FPS,
    VIDEO_FRAMES,
    VIDEO_HEIGHT,
    VIDEO_WIDTH,
    Workflow,
    assert_audio_is_the_source_from,
    ffprobe_streams,
    make_marker_video,
    make_video,
    marker_corner,
    pattern_array,
    stored_marker_corner_when_turned,
    video_frames,
)

pytestmark = pytest.mark.workflow

ROTATION = 90  # clockwise: the stored top left corner is shown at the top right
START_FRAME, END_FRAME = 10, 15  # at 6 fps: 1.5 s to 2.5 s of the 3 s marker video
RESAMPLED_FPS = 4


def snapshot(folder):
    """Every file under `folder`: its bytes' hash, size and modification time."""
    files = {}
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            stat = os.stat(path)
            with open(path, "rb") as handle:
                digest = hashlib.sha256(handle.read()).hexdigest()
            files[os.path.relpath(path, folder)] = (digest, stat.st_size, stat.st_mtime_ns)
    return files


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A finished run of a turned video dreamed from a later second, a video resampled to another
    fps and encoded as H.265, and an image dreamed towards a guide image with a weights file; and
    the snapshot of its inputs taken before it."""
    flow = Workflow(tmp_path_factory.mktemp("content"))
    media = flow.path("media")
    media.mkdir()
    make_marker_video(media / "turned.mp4", rotation=ROTATION, seconds=3)
    make_video(media / "tiny.mp4", pattern="testsrc2")
    write_rgb(pattern_array(seed=7), media / "still.png")
    write_rgb(pattern_array(seed=8), media / "guide.png")
    shutil.copyfile(default_weights_file("efficientnet_lite0"), media / "weights.pth")
    flow.write_config(
        {
            "inputs": {
                "turned": {
                    "path": "media/turned.mp4",
                    "frames": {"start": START_FRAME, "end": END_FRAME},
                },
                "resampled": {
                    "path": "media/tiny.mp4",
                    "frames": {"fps": RESAMPLED_FPS},
                    "encode": {"codec": "libx265"},
                },
                "still": {
                    "path": "media/still.png",
                    "dream": {"guide": "media/guide.png", "weights": "media/weights.pth"},
                },
            },
            "dream": dict(TINY_DREAM),
            "resources": dict(TINY_RESOURCES),
            "blend": {"mode": "none"},
            "encode": {"preset": "ultrafast"},
        }
    )
    before = snapshot(media)
    result = flow.run()
    assert result.returncode == 0, result.output
    return flow, before


def video_stream(path):
    return next(s for s in ffprobe_streams(path) if s["codec_type"] == "video")


def test_a_turned_video_comes_out_upright_with_its_marker_where_the_turn_shows_it(run):
    flow, _ = run
    output = flow.path("results", "turned", "turned.mp4")
    assert "side_data_list" not in video_stream(output)  # upright pixels, not a matrix to apply
    frames = video_frames(output)
    assert frames.shape == (END_FRAME - START_FRAME + 1, VIDEO_WIDTH, VIDEO_HEIGHT, 3)
    expected = stored_marker_corner_when_turned((VIDEO_WIDTH, VIDEO_HEIGHT), ROTATION)
    assert [marker_corner(frame) for frame in frames] == [expected] * len(frames)


def test_the_audio_of_a_frame_range_is_the_sources_from_its_first_frame(run):
    flow, _ = run
    assert_audio_is_the_source_from(
        flow.path("results", "turned", "turned.mp4"),
        flow.path("media", "turned.mp4"),
        offset=(START_FRAME - 1) / VIDEO_FPS,
    )


def test_frames_fps_resamples_to_that_rate_each_frame_from_its_time(run):
    """Each extracted frame is the source frame on screen at its time or the next (ffmpeg takes
    the nearest): less than one source frame's duration from its own time; and the video lasts as
    long as the source."""
    flow, _ = run
    source = video_frames(flow.path("media", "tiny.mp4")).astype(int)
    folder = flow.path("work", "resampled", "frames")
    names = sorted(name for name in os.listdir(folder) if not name.startswith("."))
    count = VIDEO_FRAMES * RESAMPLED_FPS // VIDEO_FPS
    assert names == [f"{n:06d}.png" for n in range(1, count + 1)]
    shown = []
    for name in names:
        differences = np.abs(source - read_rgb(folder / name).astype(int)).mean(axis=(1, 2, 3))
        assert differences.min() < 1, f"{name} is none of the source's frames"
        shown.append(int(differences.argmin()))
    times = [k / RESAMPLED_FPS for k in range(count)]
    assert all(abs(j / VIDEO_FPS - t) < 1 / VIDEO_FPS for j, t in zip(shown, times, strict=True))
    output = flow.path("results", "resampled", "resampled.mp4")
    picture = video_stream(output)
    assert picture["avg_frame_rate"] == f"{RESAMPLED_FPS}/1"
    assert int(picture["nb_read_frames"]) == count
    duration = VIDEO_FRAMES / VIDEO_FPS
    assert float(picture["duration"]) == pytest.approx(duration, abs=1 / RESAMPLED_FPS)
    (sound,) = [s for s in ffprobe_streams(output) if s["codec_type"] == "audio"]
    assert float(sound["duration"]) == pytest.approx(duration, abs=0.1)


def test_encode_codec_libx265_writes_hevc(run):
    flow, _ = run
    assert video_stream(flow.path("results", "resampled", "resampled.mp4"))["codec_name"] == "hevc"
    # the default stays H.264
    assert video_stream(flow.path("results", "turned", "turned.mp4"))["codec_name"] == "h264"


def test_a_run_never_writes_to_its_inputs(run):
    """Videos, an image, its guide image and weights file: the same bytes and modification times
    after the run, and no file added beside them."""
    flow, before = run
    assert flow.path("results", "still", "still.png").exists()
    assert snapshot(flow.path("media")) == before
