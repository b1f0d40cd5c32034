"""What a run leaves under results/<name>/, as the README's table of results lists it: the result
in its format, and beside it the before/after picture, the settings and the coherence figures.
Real Snakemake, ffmpeg and torch."""

import json

import pytest
from PIL import Image

from helpers import TINY_DREAM, Workflow, ffprobe_streams, tiny_config

pytestmark = pytest.mark.workflow


def test_a_video_result_is_h264_yuv420p(finished_plain):
    (video, _audio) = ffprobe_streams(Workflow(finished_plain).path("results", "tiny", "tiny.mp4"))
    assert (video["codec_name"], video["pix_fmt"]) == ("h264", "yuv420p")


def test_beside_each_result_are_its_pairs_picture_settings_and_coherence_figures(finished_plain):
    results = Workflow(finished_plain).path("results", "tiny")
    with Image.open(results / "tiny_pairs.jpg") as pairs:
        assert pairs.format == "JPEG"
    settings = json.loads((results / "tiny_settings.json").read_text())
    assert {key: settings["dream"][key] for key in TINY_DREAM} == TINY_DREAM
    coherence = json.loads((results / "coherence.json").read_text())
    assert coherence["strength"] > 0  # the dreamed frames differ from the raw ones
    with Image.open(results / "coherence.png") as plot:
        assert plot.format == "PNG"


def test_a_single_image_with_jpg_frames_gives_a_jpg_result(project):
    Image.new("RGB", (40, 30), (200, 100, 50)).save(project.path("still.png"))
    project.write_config(tiny_config("still.png", frames={"format": "jpg"}))
    result = project.run()
    assert result.returncode == 0, result.output
    results = project.path("results", "tiny")
    assert not (results / "tiny.png").exists()
    with Image.open(results / "tiny.jpg") as image:
        assert (image.format, image.size) == ("JPEG", (40, 30))
    assert (results / "tiny_settings.json").exists() and (results / "tiny_pairs.jpg").exists()
