import io
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from dreamflow.blend import (
    blend_factor,
    blended_start,
    crossfade,
    mix,
    run_blend,
    uses_previous_frame,
)
from dreamflow.errors import DreamflowError
from dreamflow.flow import compute_flow, load_flow, save_flow
from dreamflow.images import read_rgb, write_rgb
from dreamflow.job import BlendJob, BlendSettings
from helpers import defaults, pattern_array


def settings(**overrides):
    return defaults("blend", **overrides)


@pytest.mark.parametrize("mode", ["none", "constant", "loop", "random"])
def test_first_frame_has_factor_zero_in_every_mode(mode):
    assert blend_factor(settings(mode=mode, factor=0.7, low=0.3, high=0.9), 1) == 0.0


def test_mode_none_never_blends():
    assert [blend_factor(settings(mode="none", factor=0.7), n) for n in range(1, 6)] == [0.0] * 5
    assert not uses_previous_frame(settings(mode="none"))


def test_mode_constant_uses_factor_from_frame_two_on():
    s = settings(mode="constant", factor=0.7)
    assert [blend_factor(s, n) for n in range(1, 5)] == [0.0, 0.7, 0.7, 0.7]
    assert uses_previous_frame(s)


def test_mode_loop_is_a_triangle_wave_between_low_and_high():
    s = settings(mode="loop", low=0.2, high=0.8, period=4)
    values = [blend_factor(s, n) for n in range(2, 11)]
    assert values == pytest.approx([0.2, 0.5, 0.8, 0.5, 0.2, 0.5, 0.8, 0.5, 0.2])


def test_mode_loop_repeats_with_its_period_and_peaks_half_way():
    s = settings(mode="loop", low=0.1, high=0.9, period=10)
    values = [blend_factor(s, n) for n in range(2, 32)]
    assert values[0] == pytest.approx(0.1)
    assert values[5] == pytest.approx(0.9)
    assert values[:10] == pytest.approx(values[10:20])
    assert values[:10] == pytest.approx(values[20:30])
    assert all(0.1 - 1e-12 <= v <= 0.9 + 1e-12 for v in values)
    assert values[:6] == sorted(values[:6])


def test_mode_random_is_within_low_and_high_and_varies():
    s = settings(mode="random", low=0.3, high=0.6, seed=5)
    values = [blend_factor(s, n) for n in range(2, 200)]
    assert all(0.3 <= v <= 0.6 for v in values)
    assert len(set(values)) > 100


def test_mode_random_is_reproducible_per_seed():
    s = settings(mode="random", low=0.0, high=1.0, seed=5)
    first = [blend_factor(s, n) for n in range(2, 20)]
    assert [blend_factor(s, n) for n in reversed(range(2, 20))] == first[::-1]
    other = [
        blend_factor(settings(mode="random", low=0.0, high=1.0, seed=6), n) for n in range(2, 20)
    ]
    assert other != first


def test_mode_random_gives_the_same_factor_in_another_process():
    """Each frame is dreamed by its own process, so the factor must not depend on hash
    randomisation."""
    s = settings(mode="random", low=0.0, high=1.0, seed=3)
    code = (
        "import json, sys; from dreamflow.blend import blend_factor; "
        "print(repr(blend_factor(json.loads(sys.argv[1]), 7)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, json.dumps(s)],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "12345", "PATH": ""},
    )
    assert float(result.stdout) == blend_factor(s, 7)


def test_unknown_mode_raises():
    with pytest.raises(ValueError, match="unknown blend mode"):
        blend_factor(settings(mode="sometimes"), 2)


def test_mix_factor_one_gives_the_previous_dream_and_zero_the_raw_frame():
    raw = np.full((2, 3, 3), 10.0)
    previous = np.full((2, 3, 3), 200.0)
    np.testing.assert_array_equal(mix(raw, previous, 1.0), previous)
    np.testing.assert_array_equal(mix(raw, previous, 0.0), raw)


def test_mix_factor_is_the_share_of_the_previous_dream():
    raw = torch.zeros(1, 3, 2, 2)
    previous = torch.ones(1, 3, 2, 2)
    assert torch.allclose(mix(raw, previous, 0.25), torch.full((1, 3, 2, 2), 0.25))


# ---- the blend step: start images of chained frames ----


def blend_settings(**blend):
    return BlendSettings(blend=settings(**{"mode": "constant", **blend}))


def shifted_pair(shift=3, seed=0):
    """Two raw frames of a smooth texture panning `shift` px to the left, and the texture."""
    texture = pattern_array(60, 100 + shift, seed=seed)
    return texture[:, :100], texture[:, shift : 100 + shift]


def test_flow_none_mixes_raw_frame_and_previous_dream_at_the_same_pixels():
    raw = np.full((4, 4, 3), 100, np.uint8)
    dream = np.full((4, 4, 3), 200, np.uint8)
    start = blended_start(blend_settings(flow="none", factor=0.25), 2, raw, dream)
    assert start.dtype == np.uint8 and start[0, 0].tolist() == [125, 125, 125]
    assert np.array_equal(
        blended_start(blend_settings(flow="none", factor=1.0), 2, raw, dream), dream
    )


def test_warped_detail_moves_with_the_picture():
    """The previous dream's detail arrives where its pixels went, not where they were."""
    previous, frame = shifted_pair()
    detail = np.zeros_like(previous, dtype=np.int16)
    detail[20:40, 30:50] = 60  # a dreamed blob on the previous frame
    dream = np.clip(previous + detail, 0, 255).astype(np.uint8)
    motion = compute_flow(previous, frame, "dis")
    start = blended_start(blend_settings(factor=1.0), 2, frame, dream, previous, motion)
    added = start.astype(int) - frame.astype(int)
    # the picture moved 3 px left: so did the blob
    assert added[25:35, 30:45].mean() > 40
    assert abs(added[25:35, 48:50].mean()) < 10
    assert np.abs(added[:, 70:]).mean() < 3  # no detail where the previous dream had none


def test_warped_frame_mixes_the_warped_dream_itself():
    previous, frame = shifted_pair()
    dream = np.full_like(previous, 255)
    motion = compute_flow(previous, frame, "dis")
    start = blended_start(
        blend_settings(factor=0.5, carry="frame"), 2, frame, dream, previous, motion
    )
    reliable = motion[1]
    expected = frame.astype(float) + 0.5 * (255 - frame.astype(float))
    assert np.abs(start[reliable].astype(float) - expected[reliable]).max() <= 1.5


def test_unreliable_pixels_start_from_the_raw_frame():
    previous, frame = shifted_pair()
    dream = np.full_like(previous, 255)
    flow, _ = compute_flow(previous, frame, "dis")
    nothing_reliable = np.zeros(flow.shape[:2], bool)
    start = blended_start(
        blend_settings(factor=1.0), 2, frame, dream, previous, (flow, nothing_reliable)
    )
    np.testing.assert_array_equal(start, frame)


def write_blend_inputs(tmp_path, flow_method="dis"):
    previous, frame = shifted_pair()
    paths = {
        name: str(tmp_path / f"{name}.png") for name in ("previous_frame", "frame", "previous")
    }
    write_rgb(previous, paths["previous_frame"])
    write_rgb(frame, paths["frame"])
    write_rgb(pattern_array(60, 100, seed=9), paths["previous"])
    paths["flow"] = str(tmp_path / "flow.npz")
    save_flow(paths["flow"], *compute_flow(previous, frame, flow_method), flow_method)
    return paths


def blend_job(paths, output, **blend):
    return BlendJob(2, str(output), blend_settings(**blend), **paths)


def test_run_blend_writes_the_start_image(tmp_path):
    paths = write_blend_inputs(tmp_path)
    run_blend(blend_job(paths, tmp_path / "out" / "start.png"))
    frame, dream, previous = (
        read_rgb(paths[key]) for key in ("frame", "previous", "previous_frame")
    )
    expected = blended_start(blend_settings(), 2, frame, dream, previous, load_flow(paths["flow"]))
    np.testing.assert_array_equal(read_rgb(tmp_path / "out" / "start.png"), expected)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "other size"])
def test_a_damaged_flow_file_is_computed_again_never_used(tmp_path, damage):
    paths = write_blend_inputs(tmp_path)
    run_blend(blend_job(paths, tmp_path / "good.png"))
    if damage == "truncate":
        data = open(paths["flow"], "rb").read()
        open(paths["flow"], "wb").write(data[: len(data) // 2])
    elif damage == "garbage":
        open(paths["flow"], "wb").write(b"not a flow file")
    else:
        small = np.zeros((10, 10, 2), np.float32)
        save_flow(paths["flow"], small, np.ones((10, 10), bool), "dis")
    notes = io.StringIO()
    run_blend(blend_job(paths, tmp_path / "again.png"), notes)
    assert paths["flow"] in notes.getvalue() and "computing it again" in notes.getvalue()
    np.testing.assert_array_equal(read_rgb(tmp_path / "again.png"), read_rgb(tmp_path / "good.png"))
    load_flow(paths["flow"], size=(60, 100))  # rewritten whole


def test_blend_inputs_of_different_sizes_are_an_error_naming_them(tmp_path):
    paths = write_blend_inputs(tmp_path)
    write_rgb(pattern_array(30, 50), paths["previous"])
    with pytest.raises(DreamflowError, match=r"previous\.png 50x30"):
        run_blend(blend_job(paths, tmp_path / "out.png"))
    assert not (tmp_path / "out.png").exists()


def test_noise_start_blends_into_each_frames_own_noise(tmp_path):
    raw = pattern_array(seed=1)
    dream = pattern_array(seed=2)
    noisy = BlendSettings(blend=settings(mode="constant", flow="none", factor=0.0), start="noise")
    first = blended_start(noisy, 2, raw, dream)
    assert not np.array_equal(first, raw)
    np.testing.assert_array_equal(first, blended_start(noisy, 2, pattern_array(seed=5), dream))
    assert not np.array_equal(first, blended_start(noisy, 3, raw, dream))


def test_crossfade_weights_the_new_segment():
    old, new = np.zeros((2, 2, 3), np.uint8), np.full((2, 2, 3), 200, np.uint8)
    assert crossfade(old, new, 0.25)[0, 0].tolist() == [50, 50, 50]
