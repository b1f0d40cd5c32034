"""The warping error tells a dream stuck to the screen (ghosting) from one that moves with the
scene, on real PNG frames and real OpenCV flow."""

import json

import cv2
import numpy as np
import pytest
from PIL import Image

from dreamflow import coherence
from dreamflow.errors import DreamflowError

HEIGHT, WIDTH, FRAMES, PAN_X, PAN_Y = 64, 96, 6, 3, 1


def smooth_noise(rng, height, width, blur):
    noise = cv2.GaussianBlur(rng.uniform(0, 1, (height, width, 3)).astype(np.float32), (0, 0), blur)
    return (noise - noise.min()) / (noise.max() - noise.min())


def save(array, path):
    Image.fromarray(np.clip(array, 0, 255).round().astype(np.uint8)).save(path)


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """A texture panning PAN_X, PAN_Y px per frame, and two dreams of it of the same strength:
    one pattern fixed on the screen, the same pattern moving with the texture."""
    root = tmp_path_factory.mktemp("coherence")
    rng = np.random.default_rng(7)
    margin = (FRAMES * PAN_Y + 4, FRAMES * PAN_X + 4)
    scene = smooth_noise(rng, HEIGHT + margin[0], WIDTH + margin[1], 3) * 150 + 50
    pattern = (smooth_noise(rng, HEIGHT + margin[0], WIDTH + margin[1], 2) - 0.5) * 80
    folders = {name: root / name for name in ("raw", "fixed", "moving")}
    for folder in folders.values():
        folder.mkdir()
    for index in range(FRAMES):
        window = np.s_[
            index * PAN_Y : index * PAN_Y + HEIGHT, index * PAN_X : index * PAN_X + WIDTH
        ]
        name = f"{index + 1:06d}.png"
        save(scene[window], folders["raw"] / name)
        save(scene[window] + pattern[:HEIGHT, :WIDTH], folders["fixed"] / name)
        save(scene[window] + pattern[window], folders["moving"] / name)
    return folders


def measured(videos, dreamed, **options):
    return coherence.measure(
        coherence.frame_paths(videos["raw"]), coherence.frame_paths(videos[dreamed]), **options
    )


def test_a_dream_fixed_on_the_screen_scores_far_worse_than_one_moving_with_the_scene(videos):
    fixed = measured(videos, "fixed")
    moving = measured(videos, "moving")
    for result in (fixed, moving):
        assert result["frames"] == FRAMES and result["pairs"] == FRAMES - 1
        assert 0.01 < result["strength"] < 0.1
        assert result["e_warp_raw"] < 1e-4
        assert all(0.5 < entry["reliable"] <= 1 for entry in result["per_frame"][1:])
    assert fixed["e_warp_dreamed"] > 10 * fixed["e_warp_raw"]
    assert moving["e_warp_dreamed"] < 5 * moving["e_warp_raw"] + 1e-5
    assert fixed["ratio"] > 0.3
    assert fixed["ratio"] > 10 * abs(moving["ratio"])
    assert fixed["per_frame"][0] == {
        "frame": 1,
        "e_warp_dreamed": None,
        "e_warp_raw": None,
        "reliable": None,
        "strength": pytest.approx(fixed["per_frame"][0]["strength"]),
    }
    line = coherence.summary_line(fixed)
    assert line.startswith("E_warp dreamed ") and line.endswith(f"over {FRAMES - 1} pairs")


def test_the_raw_video_against_itself_has_no_strength_and_no_ratio(videos):
    result = measured(videos, "raw")
    assert result["strength"] == 0
    assert result["ratio"] is None
    assert result["e_warp_dreamed"] == result["e_warp_raw"]
    assert "ratio n/a" in coherence.summary_line(result)


def test_pairs_across_a_scene_cut_are_skipped(videos):
    done = []
    result = measured(
        videos, "fixed", scene_starts=[3], progress=lambda *counts: done.append(counts)
    )
    assert result["pairs"] == FRAMES - 2
    assert result["scene_starts"] == [3]
    cut = result["per_frame"][2]
    assert cut["frame"] == 3 and cut["e_warp_dreamed"] is None and cut["e_warp_raw"] is None
    assert cut["strength"] > 0
    assert done == [(number, FRAMES) for number in range(1, FRAMES + 1)]


def test_a_single_frame_has_a_strength_but_no_pairs(videos):
    result = coherence.measure(
        coherence.frame_paths(videos["raw"], count=1), coherence.frame_paths(videos["fixed"], 1)
    )
    assert result["frames"] == 1 and result["pairs"] == 0
    assert result["e_warp_dreamed"] is None and result["e_warp_raw"] is None
    assert result["ratio"] is None and result["strength"] > 0
    assert "over 0 pairs" in coherence.summary_line(result)


def test_frame_paths_are_in_order_and_complain_about_empty_or_gappy_folders(tmp_path, videos):
    paths = coherence.frame_paths(videos["raw"])
    assert [p.rsplit("/", 1)[1] for p in paths] == [f"{n:06d}.png" for n in range(1, FRAMES + 1)]
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("not a frame")
    with pytest.raises(DreamflowError, match="no frames .* in folder .*empty"):
        coherence.frame_paths(tmp_path / "empty")
    with pytest.raises(DreamflowError, match="folder not found: .*absent"):
        coherence.frame_paths(tmp_path / "absent")
    gappy = tmp_path / "gappy"
    gappy.mkdir()
    for number in (1, 2, 4):
        save(np.zeros((4, 4, 3)), gappy / f"{number:06d}.jpg")
    with pytest.raises(DreamflowError, match=f"frame 000003 is missing from folder {gappy}"):
        coherence.frame_paths(gappy)


def test_mismatched_inputs_are_user_errors_naming_the_files(tmp_path, videos):
    raw = coherence.frame_paths(videos["raw"])
    with pytest.raises(DreamflowError, match="6 raw frames .* but 5 dreamed frames"):
        coherence.measure(raw, raw[:5])
    with pytest.raises(DreamflowError, match="nothing to measure"):
        coherence.measure([], [])
    with pytest.raises(DreamflowError, match="unknown flow method 'sift'"):
        coherence.measure(raw, raw, method="sift")
    small = tmp_path / "small.png"
    save(np.zeros((HEIGHT // 2, WIDTH // 2, 3)), small)
    with pytest.raises(
        DreamflowError, match=f"frame sizes differ: .*000002.png is 96x64 .*{small}"
    ):
        coherence.measure(raw[:3], [raw[0], small, raw[2]])
    with pytest.raises(DreamflowError, match=f"size changes within the video: .*{small} is 48x32"):
        coherence.measure([raw[0], small], [raw[0], small])

    short = tmp_path / "short"
    short.mkdir()
    save(np.zeros((HEIGHT, WIDTH, 3)), short / "000001.png")
    with pytest.raises(DreamflowError, match=f"{videos['raw']} has 6 frames but {short} has 1"):
        coherence.run_cli(videos["raw"], short)


def test_the_command_prints_the_summary_and_writes_json_and_plot(tmp_path, videos, capsys):
    output, picture = tmp_path / "out" / "coherence.json", tmp_path / "out" / "coherence.png"
    result = coherence.run_cli(videos["raw"], videos["fixed"], output=output, plot_path=picture)
    assert capsys.readouterr().out == coherence.summary_line(result) + "\n"
    assert json.loads(output.read_text()) == result
    with Image.open(picture) as image:
        assert image.size == coherence.PLOT_SIZE and image.mode == "RGB"
        assert len(image.getcolors(1 << 16)) > 3
    assert sorted(p.name for p in output.parent.iterdir()) == ["coherence.json", "coherence.png"]


def synthetic(frames, value=lambda frame: 0.001 * (1 + frame % 7)):
    """A result as measure() would give it, without measuring ten thousand frames."""
    dreamed = [None] + [value(frame) for frame in range(2, frames + 1)]
    raw = [None if error is None else error / 3 for error in dreamed]
    used = [error for error in dreamed if error is not None]
    mean = sum(used) / len(used) if used else None
    return {
        "frames": frames,
        "pairs": len(used),
        "method": "dis",
        "e_warp_dreamed": mean,
        "e_warp_raw": None if mean is None else mean / 3,
        "strength": 0.05,
        "ratio": None if mean is None else mean * 2 / 3 / 0.05**2,
        "scene_starts": [frames // 2] if frames > 3 else [],
        "per_frame": [
            {
                "frame": frame,
                "e_warp_dreamed": dreamed[frame - 1],
                "e_warp_raw": raw[frame - 1],
                "reliable": None if dreamed[frame - 1] is None else 0.9,
                "strength": 0.05,
            }
            for frame in range(1, frames + 1)
        ],
    }


@pytest.mark.parametrize(
    "result",
    [
        synthetic(1),
        synthetic(2),
        synthetic(30),
        synthetic(10_000),
        synthetic(12, value=lambda frame: None),
        synthetic(12, value=lambda frame: 0.0),
        synthetic(12, value=lambda frame: None if frame % 4 else 0.002),
    ],
    ids=["1 frame", "2 frames", "30 frames", "10000 frames", "all None", "all zero", "sparse"],
)
def test_the_plot_is_a_png_of_the_fixed_size_for_any_result(tmp_path, result):
    path = tmp_path / "plot.png"
    coherence.plot(result, path, title="a title long enough to be cut short " * 5)
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size == coherence.PLOT_SIZE
        pixels = np.asarray(image.convert("RGB"))
    assert (pixels != 255).any()
    assert [p.name for p in tmp_path.iterdir()] == ["plot.png"]
