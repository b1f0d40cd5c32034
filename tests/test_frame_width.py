"""`frames.width`: frames are resized to that width, and the height keeps the aspect ratio,
rounded to an even number (H.264 and yuv420p need even sides). Real ffmpeg."""

import pytest
from PIL import Image

from dreamflow import video
from helpers import defaults, make_video


@pytest.fixture(scope="module")
def clip_probe(tmp_path_factory):
    folder = tmp_path_factory.mktemp("width")
    return video.probe(make_video(folder / "clip.mp4", frames=2, size="64x36", audio=False))


@pytest.mark.parametrize("width", [50, 42, 30])
def test_the_height_keeps_the_aspect_ratio_rounded_to_even(clip_probe, tmp_path, width):
    video.extract(clip_probe, defaults("frames", width=width), str(tmp_path / "frames"))
    with Image.open(tmp_path / "frames" / "000001.png") as frame:
        got_width, height = frame.size
    exact = width * 36 / 64  # 28.125, 23.625, 16.875: none of them even
    assert got_width == width
    assert height % 2 == 0 and abs(height - exact) <= 1, (width, height)
