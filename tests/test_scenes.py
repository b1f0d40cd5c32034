"""Scene cuts: ffmpeg's scene score over real frame files, the cut rules, and scenes.json.

The clips are smooth random textures panning a couple of pixels a frame: like camera footage,
neighbouring frames differ everywhere a little, and a cut changes the picture and its brightness.
"""

import json
import re

import numpy as np
import pytest
from PIL import Image

from dreamflow.errors import DreamflowError
from dreamflow.frames import frame_name
from dreamflow.scenes import (
    detect,
    find_cuts,
    read_scenes,
    run_cli,
    scene_scores,
    scenes_of,
    write_scenes,
)

AUTO = {"cuts": "auto", "threshold": 0.3}
WARM = (1.0, 0.85, 0.6)
COOL = (0.25, 0.35, 0.6)


def texture(seed, width, height, tint, cell=8):
    """Random noise smoothed by upscaling: detail at every scale a photo has, at no cost."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (height // cell + 2, width // cell + 2, 3), dtype=np.uint8)
    size = (small.shape[1] * cell, small.shape[0] * cell)
    smooth = np.asarray(Image.fromarray(small).resize(size, Image.BICUBIC), dtype=np.float64)
    return (smooth * tint).astype(np.uint8)


def pan(seed, count, width=64, height=36, step=2, tint=WARM):
    picture = texture(seed, width + count * step, height, tint)
    return [picture[:height, i * step : i * step + width] for i in range(count)]


def write(folder, frames, frame_format="png"):
    folder.mkdir(parents=True, exist_ok=True)
    for number, frame in enumerate(frames, start=1):
        Image.fromarray(np.ascontiguousarray(frame)).save(
            folder / f"{frame_name(number)}.{frame_format}", quality=90
        )
    return folder


def cut_clip(width=64, height=36):
    """Frames 1-10 pan over a warm picture, frames 11-18 over another, darker and cooler."""
    return pan(1, 10, width, height) + pan(2, 8, width, height, tint=COOL)


# ---- scores and auto detection ----


def test_a_cut_after_ten_frames_is_found_at_frame_11(tmp_path):
    folder = write(tmp_path / "frames", cut_clip())
    result = detect(folder, "png", 18, AUTO)
    assert result["cuts"] == [11]
    assert result["source"] == "auto"
    assert result["threshold"] == 0.3
    assert len(result["scores"]) == 18
    assert result["scores"][0] == 0.0


def test_a_smooth_pan_has_no_cut(tmp_path):
    folder = write(tmp_path / "frames", pan(3, 30, step=3))
    scores = scene_scores(folder, "png", 30)
    assert len(scores) == 30
    assert max(scores) < 0.05
    assert detect(folder, "png", 30, AUTO)["cuts"] == []


def test_a_fast_pan_does_not_cut_at_frame_2(tmp_path):
    # ffmpeg alone scores frame 2 by its raw difference to frame 1: 0.33 for this pan
    folder = write(tmp_path / "frames", pan(3, 30, step=8))
    scores = scene_scores(folder, "png", 30)
    assert scores[1] < 0.1
    assert detect(folder, "png", 30, AUTO)["cuts"] == []


def test_the_score_of_a_cut_stands_out_from_the_motion_around_it(tmp_path):
    scores = scene_scores(write(tmp_path / "frames", cut_clip()), "png", 18)
    assert scores[10] > 0.4
    assert max(scores[:10] + scores[11:]) < 0.1


def test_one_decoding_thread_gives_the_same_scores(tmp_path):
    folder = write(tmp_path / "frames", cut_clip())
    assert scene_scores(folder, "png", 18, threads=1) == scene_scores(folder, "png", 18)


def test_a_cut_at_frame_2_is_found(tmp_path):
    frames = pan(1, 1) + pan(2, 9, tint=COOL)
    assert detect(write(tmp_path / "frames", frames), "png", 10, AUTO)["cuts"] == [2]


def test_two_frames_are_scored_by_their_difference(tmp_path):
    same = write(tmp_path / "same", [pan(1, 1)[0]] * 2)
    assert scene_scores(same, "png", 2) == [0.0, 0.0]
    different = write(tmp_path / "different", pan(1, 1) + pan(2, 1, tint=COOL))
    assert detect(different, "png", 2, AUTO)["cuts"] == [2]


def test_a_single_frame_is_one_scene(tmp_path):
    folder = write(tmp_path / "frames", pan(1, 1))
    result = detect(folder, "png", 1, AUTO)
    assert result["cuts"] == []
    assert result["scores"] == [0.0]


def test_odd_frame_sizes_are_scored(tmp_path):
    folder = write(tmp_path / "frames", cut_clip(33, 17))
    assert detect(folder, "png", 18, AUTO)["cuts"] == [11]


def test_jpg_frames_score_like_png_frames(tmp_path):
    # both are scored on luma, so a threshold does not depend on frames.format
    png = scene_scores(write(tmp_path / "png", cut_clip()), "png", 18)
    jpg = scene_scores(write(tmp_path / "jpg", cut_clip(), "jpg"), "jpg", 18)
    assert detect(tmp_path / "jpg", "jpg", 18, AUTO)["cuts"] == [11]
    assert abs(png[10] - jpg[10]) < 0.01


def test_a_folder_name_with_a_percent_sign_is_not_a_pattern(tmp_path):
    folder = write(tmp_path / "50%d", cut_clip())
    assert detect(folder, "png", 18, AUTO)["cuts"] == [11]


def test_a_missing_frame_is_reported(tmp_path):
    folder = write(tmp_path / "frames", pan(1, 6))
    (folder / "000004.png").unlink()
    with pytest.raises(DreamflowError, match="000004.png is missing"):
        scene_scores(folder, "png", 6)


def test_a_one_frame_flash_starts_a_scene(tmp_path):
    frames = pan(1, 12)
    frames[5] = np.full_like(frames[5], 255)
    cuts = detect(write(tmp_path / "frames", frames), "png", 12, AUTO)["cuts"]
    assert 6 in cuts
    assert set(cuts) <= {6, 7}


# ---- the cut rules ----


def test_find_cuts_keeps_frames_that_reach_the_threshold():
    scores = [0.0, 0.1, 0.3, 0.29, 0.9, 0.0]
    assert find_cuts(scores, 0.3) == [3, 5]
    assert find_cuts(scores, 0.95) == []
    assert find_cuts([0.0], 0.3) == []


def test_find_cuts_ignores_frame_1_whatever_its_score():
    assert find_cuts([1.0, 0.0], 0.3) == []


def test_find_cuts_with_a_minimum_gap_keeps_the_first_of_close_cuts():
    scores = [0.0, 0.0, 0.5, 0.5, 0.0, 0.5, 0.0, 0.5]
    assert find_cuts(scores, 0.3) == [3, 4, 6, 8]
    assert find_cuts(scores, 0.3, min_gap=2) == [3, 6, 8]
    assert find_cuts(scores, 0.3, min_gap=3) == [4, 8]


def test_scenes_of_covers_every_frame():
    assert scenes_of([], 5) == [(1, 5)]
    assert scenes_of([], 1) == [(1, 1)]
    assert scenes_of([3, 5], 6) == [(1, 2), (3, 4), (5, 6)]
    assert scenes_of([6], 6) == [(1, 5), (6, 6)]
    assert scenes_of([1, 3, 3], 4) == [(1, 2), (3, 4)]


def test_scenes_of_rejects_cuts_outside_the_frames():
    with pytest.raises(ValueError, match="outside frames 1..4"):
        scenes_of([5], 4)


# ---- none and manual cuts ----


def test_cuts_none_is_one_scene_without_running_ffmpeg(tmp_path):
    result = detect(tmp_path / "absent", "png", 20, {"cuts": "none", "threshold": 0.3})
    assert result == {"frames": 20, "cuts": [], "source": "none"}


def test_manual_cuts_are_sorted_without_repeats(tmp_path):
    result = detect(tmp_path / "absent", "png", 20, {"cuts": [5, 3, 5], "threshold": 0.3})
    assert result == {"frames": 20, "cuts": [3, 5], "source": "manual"}


def test_a_manual_cut_at_frame_1_is_ignored(tmp_path):
    assert detect(tmp_path, "png", 20, {"cuts": [1, 20], "threshold": 0.3})["cuts"] == [20]


def test_a_manual_cut_past_the_last_frame_names_the_key(tmp_path):
    with pytest.raises(DreamflowError, match=r"^scenes\.cuts: frame 99 .*\(20 frames\)"):
        detect(tmp_path, "png", 20, {"cuts": [3, 99], "threshold": 0.3})


# ---- scenes.json ----


def test_scenes_round_trip_through_the_file(tmp_path):
    folder = write(tmp_path / "frames", cut_clip())
    result = detect(folder, "png", 18, AUTO)
    path = tmp_path / "scenes.json"
    write_scenes(result, path)
    assert read_scenes(path) == result
    assert sorted(entry.name for entry in tmp_path.iterdir()) == ["frames", "scenes.json"]


GOOD = {"frames": 20, "cuts": [3, 5], "source": "manual"}


@pytest.mark.parametrize(
    "text, problem",
    [
        (json.dumps(GOOD)[:15], "cannot read"),
        ("\x00\x01garbage", "cannot read"),
        ("", "cannot read"),
        ("[3, 5]", "expected a JSON object"),
        (json.dumps({**GOOD, "frames": 0}), "'frames'"),
        (json.dumps({**GOOD, "frames": True}), "'frames'"),
        (json.dumps({"frames": 20, "source": "auto"}), "'cuts' is missing"),
        (json.dumps({**GOOD, "cuts": [5, 3]}), "sorted"),
        (json.dumps({**GOOD, "cuts": [3, 3]}), "sorted"),
        (json.dumps({**GOOD, "cuts": [1, 3]}), "within 2..20"),
        (json.dumps({**GOOD, "cuts": [21]}), "within 2..20"),
        (json.dumps({**GOOD, "cuts": ["3"]}), "'cuts'"),
        (json.dumps({**GOOD, "source": "guess"}), "'source'"),
        (json.dumps({**GOOD, "scores": [0.0]}), "'scores'"),
    ],
    ids=[
        "truncated",
        "garbage",
        "empty",
        "list",
        "zero-frames",
        "bool-frames",
        "no-cuts",
        "unsorted",
        "repeated",
        "cut-at-1",
        "cut-past-end",
        "text-cut",
        "unknown-source",
        "short-scores",
    ],
)
def test_a_malformed_scenes_file_is_reported_with_its_name(tmp_path, text, problem):
    path = tmp_path / "scenes.json"
    path.write_text(text)
    with pytest.raises(DreamflowError, match=re.escape(str(path))) as caught:
        read_scenes(path)
    assert problem in str(caught.value)


def test_a_missing_scenes_file_is_reported_with_its_name(tmp_path):
    path = tmp_path / "scenes.json"
    with pytest.raises(DreamflowError, match="^scenes file not found: " + re.escape(str(path))):
        read_scenes(path)


# ---- the command ----


def test_run_cli_writes_the_file_and_logs_one_line(tmp_path, capsys):
    folder = write(tmp_path / "frames", cut_clip())
    output = tmp_path / "out" / "scenes.json"
    run_cli(str(folder), "png", json.dumps(AUTO), str(output))
    assert read_scenes(output)["cuts"] == [11]
    assert capsys.readouterr().err == "2 scenes in 18 frames: cut at 11\n"


def test_run_cli_logs_a_single_scene(tmp_path, capsys):
    folder = write(tmp_path / "frames", pan(1, 1))
    run_cli(str(folder), "png", '{"cuts": "none"}', str(tmp_path / "scenes.json"))
    assert capsys.readouterr().err == "1 scene in 1 frame: no cuts\n"


def test_run_cli_rejects_settings_that_are_not_json(tmp_path):
    with pytest.raises(DreamflowError, match="not valid JSON"):
        run_cli(str(tmp_path), "png", "{cuts: auto}", str(tmp_path / "scenes.json"))


def test_run_cli_reports_a_missing_frames_folder(tmp_path):
    with pytest.raises(DreamflowError, match="frames folder not found"):
        run_cli(str(tmp_path / "absent"), "png", json.dumps(AUTO), str(tmp_path / "scenes.json"))


def test_run_cli_reports_a_folder_without_frames(tmp_path):
    with pytest.raises(DreamflowError, match="no .png frames"):
        run_cli(str(tmp_path), "png", json.dumps(AUTO), str(tmp_path / "scenes.json"))
