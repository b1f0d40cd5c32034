import json
import os
import re
from fractions import Fraction

import numpy as np
import pytest

from dreamflow import video
from dreamflow.errors import DreamflowError
from dreamflow.images import read_rgb
from helpers import (
    VIDEO_FPS,
    VIDEO_FRAMES,
    VIDEO_HEIGHT,
    VIDEO_WIDTH,
    assert_audio_is_the_source_from,
    defaults,
    ffprobe_streams,
    make_audio,
    make_marker_video,
    make_video,
    marker_corner,
    solid_image,
    stored_marker_corner_when_turned,
    truncated_video,
)

ENCODE = defaults("encode", preset="ultrafast")


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return make_video(tmp_path_factory.mktemp("media") / "clip.mp4", pattern="testsrc2")


@pytest.fixture(scope="module")
def clip_probe(clip):
    return video.probe(clip)


def frames_of(folder):
    return [read_rgb(os.path.join(folder, name)) for name in sorted(os.listdir(folder))]


def stream(streams, kind):
    return next((s for s in streams if s["codec_type"] == kind), None)


def test_probe_reports_fps_size_frame_count_and_audio(clip, clip_probe):
    assert clip_probe["kind"] == "video"
    assert clip_probe["path"] == clip
    assert clip_probe["fps"] == str(VIDEO_FPS)
    assert (clip_probe["width"], clip_probe["height"]) == (VIDEO_WIDTH, VIDEO_HEIGHT)
    assert clip_probe["frame_count"] == VIDEO_FRAMES
    assert clip_probe["rotation"] == 0
    assert clip_probe["audio"]["codec"] == "aac"


def test_probe_of_a_silent_video_reports_no_audio(tmp_path):
    assert video.probe(make_video(tmp_path / "silent.mp4", audio=False))["audio"] is None


def test_probe_of_a_text_file_named_mp4_says_not_a_video(tmp_path):
    path = tmp_path / "fake.mp4"
    path.write_text("definitely not a video\n")
    with pytest.raises(DreamflowError, match="^" + re.escape(f"not a video: {path}")):
        video.probe(str(path))


def test_probe_of_an_audio_only_file_says_it_has_no_video_stream(tmp_path):
    path = make_audio(tmp_path / "tone.m4a")
    with pytest.raises(DreamflowError, match="no video stream"):
        video.probe(path)


def test_probe_of_a_folder_lists_images_in_natural_order(tmp_path):
    for name in ("img10.png", "img2.png", "img1.png"):
        solid_image(tmp_path / name, "red", size=(20, 10))
    probed = video.probe(str(tmp_path))
    assert probed["kind"] == "folder"
    assert [os.path.basename(f) for f in probed["files"]] == ["img1.png", "img2.png", "img10.png"]
    assert (probed["frame_count"], probed["fps"], probed["width"], probed["height"]) == (
        3,
        "25",
        20,
        10,
    )


def test_probe_without_ffprobe_says_ffprobe_not_found(clip, monkeypatch, tmp_path):
    monkeypatch.setenv("DREAMFLOW_FFPROBE", str(tmp_path / "no-such-ffprobe"))
    with pytest.raises(DreamflowError, match="^ffprobe not found") as caught:
        video.probe(clip)
    assert "DREAMFLOW_FFPROBE" in str(caught.value)


def test_extract_writes_every_frame_at_source_size(clip_probe, tmp_path):
    out = tmp_path / "frames"
    assert video.extract(clip_probe, defaults("frames"), str(out)) == VIDEO_FRAMES
    assert sorted(os.listdir(out)) == [f"{n:06d}.png" for n in range(1, VIDEO_FRAMES + 1)]
    assert read_rgb(out / "000001.png").shape == (VIDEO_HEIGHT, VIDEO_WIDTH, 3)


def test_extract_frame_range_with_width_gives_those_source_frames_scaled(clip_probe, tmp_path):
    every = tmp_path / "every"
    video.extract(clip_probe, defaults("frames", width=32), str(every))
    part = tmp_path / "part"
    count = video.extract(clip_probe, defaults("frames", width=32, start=2, end=4), str(part))
    assert count == 3
    assert sorted(os.listdir(part)) == ["000001.png", "000002.png", "000003.png"]
    extracted, sources = frames_of(part), frames_of(every)[1:4]
    assert all(frame.shape == (18, 32, 3) for frame in extracted)
    for frame, source in zip(extracted, sources, strict=True):
        np.testing.assert_array_equal(frame, source)


@pytest.mark.parametrize("width", [50, 42, 30])
def test_the_height_keeps_the_aspect_ratio_rounded_to_even(clip_probe, tmp_path, width):
    video.extract(clip_probe, defaults("frames", width=width, end=1), str(tmp_path))
    height, got_width, _ = read_rgb(tmp_path / "000001.png").shape
    exact = width * VIDEO_HEIGHT / VIDEO_WIDTH  # 28.125, 23.625, 16.875: none of them even
    assert got_width == width
    assert height % 2 == 0 and abs(height - exact) <= 1, (width, height)


def test_extract_time_range_gives_the_frames_of_that_span(clip_probe, tmp_path):
    every = tmp_path / "every"
    video.extract(clip_probe, defaults("frames"), str(every))
    part = tmp_path / "part"
    # at 6 fps, 0.2 s lies in frame 2 and 0.5 s is the (exclusive) start of frame 4
    assert (
        video.extract(clip_probe, defaults("frames", start_time=0.2, end_time=0.5), str(part)) == 2
    )
    for frame, source in zip(frames_of(part), frames_of(every)[1:3], strict=True):
        np.testing.assert_array_equal(frame, source)


def test_extract_jpg_frames(clip_probe, tmp_path):
    out = tmp_path / "jpg"
    assert video.extract(clip_probe, defaults("frames", format="jpg", end=2), str(out)) == 2
    assert sorted(os.listdir(out)) == ["000001.jpg", "000002.jpg"]


def test_extract_with_a_range_past_the_end_fails_and_leaves_no_folder(clip_probe, tmp_path):
    out = tmp_path / "frames"
    with pytest.raises(DreamflowError, match="frames.start is past the last frame"):
        video.extract(clip_probe, defaults("frames", start=VIDEO_FRAMES + 1), str(out))
    assert os.listdir(tmp_path) == []


def test_extract_replaces_an_older_extraction(clip_probe, tmp_path):
    out = tmp_path / "frames"
    video.extract(clip_probe, defaults("frames"), str(out))
    video.extract(clip_probe, defaults("frames", end=2), str(out))
    assert sorted(os.listdir(out)) == ["000001.png", "000002.png"]
    assert sorted(os.listdir(tmp_path)) == ["frames"]


def test_extract_image_folder_in_natural_order_at_the_first_image_size(tmp_path):
    source = tmp_path / "shots"
    source.mkdir()
    colours = {"img1.png": (255, 0, 0), "img2.png": (0, 255, 0), "img10.jpg": (0, 0, 255)}
    for name, colour in colours.items():
        solid_image(source / name, colour, size=(40, 20) if name == "img2.png" else (20, 10))
    solid_image(source / ".img0.png", (9, 9, 9))
    (source / "notes.txt").write_text("skip me")
    out = tmp_path / "frames"
    assert video.extract(video.probe(str(source)), defaults("frames"), str(out)) == 3
    frames = frames_of(out)
    assert all(frame.shape == (10, 20, 3) for frame in frames)
    means = [frame.reshape(-1, 3).mean(axis=0) for frame in frames]
    assert [int(np.argmax(mean)) for mean in means] == [0, 1, 2]


def test_extract_image_folder_range(tmp_path):
    source = tmp_path / "shots"
    source.mkdir()
    for number in range(1, 6):
        solid_image(source / f"img{number}.png", (number * 40, 0, 0), size=(16, 16))
    out = tmp_path / "frames"
    assert (
        video.extract(video.probe(str(source)), defaults("frames", start=2, end=3), str(out)) == 2
    )
    assert [int(frame[0, 0, 0]) for frame in frames_of(out)] == [80, 120]


def test_extract_single_image(tmp_path):
    image = solid_image(tmp_path / "still.png", (10, 20, 30), size=(50, 30))
    out = tmp_path / "frames"
    assert video.extract(video.probe(image), defaults("frames"), str(out)) == 1
    assert os.listdir(out) == ["000001.png"]
    assert read_rgb(out / "000001.png")[0, 0].tolist() == [10, 20, 30]
    scaled = tmp_path / "scaled"
    video.extract(video.probe(image), defaults("frames", width=20), str(scaled))
    assert read_rgb(scaled / "000001.png").shape == (12, 20, 3)


def test_encode_keeps_fps_frame_count_and_audio(clip_probe, tmp_path):
    settings = defaults("frames")
    video.extract(clip_probe, settings, str(tmp_path / "frames"))
    paths = sorted(str(p) for p in (tmp_path / "frames").iterdir())
    output = tmp_path / "out.mp4"
    video.encode(clip_probe, settings, ENCODE, paths, str(output))
    streams = ffprobe_streams(output)
    picture, sound = stream(streams, "video"), stream(streams, "audio")
    assert picture["avg_frame_rate"] == f"{VIDEO_FPS}/1"
    assert int(picture["nb_read_frames"]) == VIDEO_FRAMES
    assert (picture["width"], picture["height"]) == (VIDEO_WIDTH, VIDEO_HEIGHT)
    assert sound is not None and sound["codec_name"] == "aac"
    assert float(sound["duration"]) == pytest.approx(VIDEO_FRAMES / VIDEO_FPS, abs=0.1)
    assert sorted(os.listdir(tmp_path)) == ["frames", "out.mp4"]


def test_encode_of_a_range_trims_the_audio_to_the_frames(tmp_path):
    source = make_marker_video(tmp_path / "toned.mp4", seconds=3)
    probed = video.probe(source)
    # at 6 fps, frames 10-15 are 1.5 s to 2.5 s: half a second of each of two pitches
    settings = defaults("frames", start=10, end=15)
    video.extract(probed, settings, str(tmp_path / "frames"))
    paths = sorted(str(p) for p in (tmp_path / "frames").iterdir())
    video.encode(probed, settings, ENCODE, paths, str(tmp_path / "out.mp4"))
    streams = ffprobe_streams(tmp_path / "out.mp4")
    assert int(stream(streams, "video")["nb_read_frames"]) == 6
    assert float(stream(streams, "audio")["duration"]) == pytest.approx(6 / VIDEO_FPS, abs=0.1)
    assert_audio_is_the_source_from(tmp_path / "out.mp4", source, offset=1.5)


def test_encode_without_audio_when_disabled(clip_probe, tmp_path):
    settings = defaults("frames", end=2)
    video.extract(clip_probe, settings, str(tmp_path / "frames"))
    paths = sorted(str(p) for p in (tmp_path / "frames").iterdir())
    video.encode(clip_probe, settings, {**ENCODE, "audio": False}, paths, str(tmp_path / "out.mp4"))
    streams = ffprobe_streams(tmp_path / "out.mp4")
    assert stream(streams, "audio") is None
    assert int(stream(streams, "video")["nb_read_frames"]) == 2


def test_encode_uses_only_the_listed_frames(clip_probe, tmp_path):
    settings = defaults("frames")
    video.extract(clip_probe, settings, str(tmp_path / "frames"))
    paths = sorted(str(p) for p in (tmp_path / "frames").iterdir())[:4]
    video.encode(clip_probe, settings, ENCODE, paths, str(tmp_path / "out.mp4"))
    assert int(stream(ffprobe_streams(tmp_path / "out.mp4"), "video")["nb_read_frames"]) == 4


def test_encode_of_odd_sized_frames_crops_to_even_sides(tmp_path):
    image = solid_image(tmp_path / "still.png", (200, 100, 50), size=(33, 21))
    settings = defaults("frames")
    probed = video.probe(image)
    video.extract(probed, settings, str(tmp_path / "frames"))
    video.encode(
        probed,
        settings,
        ENCODE,
        [str(tmp_path / "frames" / "000001.png")],
        str(tmp_path / "out.mp4"),
    )
    picture = stream(ffprobe_streams(tmp_path / "out.mp4"), "video")
    assert (picture["width"], picture["height"], int(picture["nb_read_frames"])) == (32, 20, 1)


def test_write_probe_writes_json(clip, tmp_path):
    video.write_probe(clip, str(tmp_path / "probe.json"))
    assert json.loads((tmp_path / "probe.json").read_text())["frame_count"] == VIDEO_FRAMES


@pytest.mark.parametrize("rotation", [90, 270])
def test_a_rotated_phone_video_is_probed_and_extracted_upright(tmp_path, rotation):
    """A display matrix turning the picture a quarter (as phones write) swaps width and height;
    frames come out turned the way it says: the corner marker is where the turned picture has
    it, so a turn the wrong way round fails."""
    rotated = make_marker_video(tmp_path / "rotated.mp4", rotation=rotation, seconds=1)
    probed = video.probe(rotated)
    assert probed["rotation"] in (90, 270)
    assert (probed["width"], probed["height"]) == (VIDEO_HEIGHT, VIDEO_WIDTH)
    video.extract(probed, defaults("frames", end=1), str(tmp_path / "frames"))
    frame = read_rgb(tmp_path / "frames" / "000001.png")
    assert frame.shape[:2] == (VIDEO_WIDTH, VIDEO_HEIGHT)
    expected = stored_marker_corner_when_turned((VIDEO_WIDTH, VIDEO_HEIGHT), rotation)
    assert marker_corner(frame) == expected


# ---- videos shorter than their header says ----


def test_extract_of_a_truncated_video_warns_once_and_gives_the_frames_there_are(tmp_path, capsys):
    path = truncated_video(tmp_path)
    probed = video.probe(path)
    assert probed["frame_count"] == 30
    out = tmp_path / "frames"
    got = video.extract(probed, defaults("frames"), str(out))
    assert 0 < got < 30
    assert sorted(os.listdir(out)) == [f"{n:06d}.png" for n in range(1, got + 1)]
    assert capsys.readouterr().err == (
        f"dreamflow: warning: {path} is shorter than its header says: 30 frames planned, "
        f"{got} decoded (a truncated or damaged file?); dreaming the {got} frames\n"
    )


@pytest.mark.parametrize("fps", [None, 4, 5, 12, 2.5, 29.97])
@pytest.mark.parametrize(
    "frame_range", [{}, {"start": 2, "end": 4}, {"start_time": 0.2, "end_time": 0.5}, {"start": 3}]
)
def test_extract_of_a_whole_video_never_warns(clip_probe, tmp_path, capsys, fps, frame_range):
    video.extract(clip_probe, defaults("frames", fps=fps, **frame_range), str(tmp_path / "f"))
    assert capsys.readouterr().err == ""


def test_planned_frames_are_the_range_at_the_output_fps(clip_probe):
    def planned(**settings):
        frames = defaults("frames", **settings)
        return video.planned_frames(clip_probe, video.plan(clip_probe, frames))

    assert planned() == VIDEO_FRAMES
    assert planned(start=2, end=4) == 3
    assert planned(start=3) == VIDEO_FRAMES - 2
    assert planned(fps=VIDEO_FPS * 2) == VIDEO_FRAMES * 2
    assert planned(start=2, end=4, fps=VIDEO_FPS * 5 / 6) == Fraction(5, 2)


def test_short_video_warning_allows_for_estimates_unless_ffmpeg_reported_errors():
    def warns(planned, got, errors=()):
        return video.short_video_warning("in.mp4", planned, got, list(errors)) is not None

    assert not warns(30, 30)
    assert not warns(30, 31)
    # a count from a duration or a resampled fps can be a frame or two off
    assert not warns(30, 28)
    assert warns(30, 27)
    assert warns(30, 29, ["stream 0, offset 0x2a71: partial file"])
    assert not warns(Fraction(5, 2), 2, ["a harmless decode error"])
    assert warns(Fraction(5, 2), 1, ["a harmless decode error"])
    assert video.short_video_warning("in.mp4", Fraction(59, 2), 9, ["partial file"]) == (
        "dreamflow: warning: in.mp4 is shorter than its header says: 30 frames planned, 9 decoded "
        "(a truncated or damaged file?); dreaming the 9 frames"
    )


def test_the_check_of_an_encode_finds_a_cut_file_and_a_wrong_count_or_length(tmp_path):
    whole = make_video(tmp_path / "whole.mp4", frames=30, fps=10)
    assert video._video_problem(whole, 30, Fraction(10)) is None
    assert video._video_problem(whole, 31, Fraction(10)) == "it has 30 frames, not the 31 encoded"
    assert video._video_problem(whole, 30, Fraction(5)) == "it lasts 3 s, not 6 s"
    assert video._video_problem(truncated_video(tmp_path), 30, Fraction(10)).endswith(
        "partial file"
    )
    assert video._video_problem(make_audio(tmp_path / "tone.m4a"), 30, Fraction(10)) == (
        "it has no video stream"
    )


def test_encode_that_comes_out_short_fails_and_leaves_nothing(clip_probe, tmp_path):
    """ffmpeg reads an image sequence up to its first gap and exits 0: the check finds the
    frames that are not in the video."""
    settings = defaults("frames")
    video.extract(clip_probe, settings, str(tmp_path / "frames"))
    paths = sorted(str(p) for p in (tmp_path / "frames").iterdir())
    os.unlink(paths[3])
    output = tmp_path / "out.mp4"
    with pytest.raises(DreamflowError) as caught:
        video.encode(clip_probe, settings, ENCODE, paths, str(output))
    assert str(caught.value).startswith(
        f"encoding {output} failed: it has 3 frames, not the {VIDEO_FRAMES} encoded"
    )
    assert sorted(os.listdir(tmp_path)) == ["frames"]


def test_encode_of_a_damaged_frame_warns_with_what_ffmpeg_said(clip_probe, tmp_path, capsys):
    settings = defaults("frames")
    video.extract(clip_probe, settings, str(tmp_path / "frames"))
    paths = sorted(str(p) for p in (tmp_path / "frames").iterdir())
    os.truncate(paths[3], 40)
    output = tmp_path / "out.mp4"
    video.encode(clip_probe, settings, ENCODE, paths, str(output))
    assert int(stream(ffprobe_streams(output), "video")["nb_read_frames"]) == VIDEO_FRAMES
    warning = capsys.readouterr().err
    assert warning.startswith(f"dreamflow: warning: {output}: ffmpeg reported errors in its inputs")
    assert warning.endswith(f"; the video has all {VIDEO_FRAMES} frames\n")
    assert warning.count("\n") == 1
