import os
import re

import numpy as np
import pytest
import torch

from dreamflow import engine, models, objectives
from dreamflow.errors import DreamflowError
from dreamflow.images import to_tensor
from helpers import (
    TINY_DREAM,
    assert_dreamed,
    assert_same_dream,
    defaults,
    objective_value,
    pattern_array,
)

torch.set_num_threads(2)

# the engine's parameters of the tiny dream; tiling and precision are left to each test
FAST = {
    key: defaults("dream", **TINY_DREAM)[key]
    for key in ("octaves", "octave_scale", "iterations", "step_size", "jitter", "seed")
}


@pytest.fixture(scope="module")
def lite0():
    return models.build("efficientnet_lite0")


@pytest.fixture(scope="module")
def image():
    return to_tensor(pattern_array(48, 48).copy())


def test_octave_sizes_go_from_smallest_to_full_size():
    sizes = engine.octave_sizes(100, 200, 3, 2.0)
    assert sizes == [(25, 50), (50, 100), (100, 200)]


def test_octave_sizes_divide_by_the_scale_and_round():
    assert engine.octave_sizes(36, 64, 3, 1.4) == [(18, 33), (26, 46), (36, 64)]


def test_octave_sizes_drop_octaves_below_the_minimum_side():
    sizes = engine.octave_sizes(36, 64, 8, 1.4)
    assert sizes[-1] == (36, 64)
    assert min(sizes[0]) >= engine.MIN_OCTAVE_SIDE
    assert len(sizes) == 3
    assert engine.octave_sizes(64, 64, 8, 2.0, min_side=8) == [(8, 8), (16, 16), (32, 32), (64, 64)]


def test_octave_sizes_keep_the_full_size_even_when_it_is_small():
    assert engine.octave_sizes(10, 12, 4, 1.4) == [(10, 12)]


def test_dream_params_take_their_fields_from_dream_settings():
    params = engine.DreamParams.from_settings(defaults("dream", iterations=7, seed=3))
    assert params == engine.DreamParams(
        octaves=3, octave_scale=1.4, iterations=7, step_size=1.5, jitter=32, seed=3
    )


@pytest.mark.parametrize("layer", ["block4", "block10"])
def test_dream_raises_the_objective_score(lite0, image, layer):
    """Without jitter a dream is plain gradient ascent, so the unshifted score must rise."""
    objective = objectives.parse([layer])
    before = objective_value(lite0, objective, image)
    dreamed = engine.dream(lite0, objective, image, engine.DreamParams(**{**FAST, "jitter": 0}))
    assert objective_value(lite0, objective, dreamed) > before * 1.05


def test_dream_changes_the_image_but_keeps_shape_and_range(lite0):
    image = to_tensor(pattern_array(40, 56).copy())
    objective = objectives.parse(["block4"])
    result = engine.dream(
        lite0, objective, image, engine.DreamParams(**{**FAST, "octaves": 2, "step_size": 60})
    )
    assert result.shape == image.shape
    assert result.min() >= 0.0 and result.max() <= 1.0
    assert ((result == 0.0) | (result == 1.0)).any()
    assert_dreamed(image, result, {**FAST, "octaves": 2, "step_size": 60})


def test_same_seed_gives_identical_output(lite0, image):
    objective = objectives.parse(["block4"])
    first = engine.dream(lite0, objective, image, engine.DreamParams(**FAST))
    second = engine.dream(lite0, objective, image, engine.DreamParams(**FAST))
    assert torch.equal(first, second)


def test_different_seed_gives_different_output(lite0, image):
    objective = objectives.parse(["block4"])
    first = engine.dream(lite0, objective, image, engine.DreamParams(**FAST))
    other = engine.dream(lite0, objective, image, engine.DreamParams(**{**FAST, "seed": 1}))
    assert not torch.equal(first, other)


def test_dream_leaves_its_input_untouched(lite0, image):
    original = image.clone()
    engine.dream(lite0, objectives.parse(["block4"]), image, engine.DreamParams(**FAST))
    assert torch.equal(image, original)


def test_an_objective_is_read_through_the_model_without_gradients(lite0, image):
    """The dream tests compare objective values read this way: under no_grad, as guides are."""
    value = objective_value(lite0, objectives.parse(["block2"]), image.requires_grad_(False))
    assert isinstance(value, float) and value > 0


def test_dream_params_ignore_other_settings_and_read_tile_size():
    settings = defaults("dream", tile_size=256, guide="g.png", start="noise", layer_schedule=None)
    assert engine.DreamParams.from_settings(settings).tile_size == 256
    without = {key: value for key, value in settings.items() if key != "tile_size"}
    assert engine.DreamParams.from_settings(without).tile_size is None


def test_dream_params_reject_tiles_too_small_to_have_a_core():
    message = rf"dream\.tile_size: 127 is too small.*at least {engine.MIN_TILE_SIZE}"
    with pytest.raises(DreamflowError, match=message):
        engine.DreamParams(tile_size=127)


# ---- objectives through the engine ----


def test_channel_dream_raises_that_channel_more_than_a_layer_dream_does(lite0, image):
    def channel_mean(picture):
        with torch.no_grad():
            return float(lite0.activations(picture, ["block10"])["block10"][0, 97].mean())

    params = engine.DreamParams(**{**FAST, "jitter": 0})
    channel_dream = engine.dream(lite0, objectives.parse("block10:97"), image, params)
    layer_dream = engine.dream(lite0, objectives.parse("block10"), image, params)
    assert channel_mean(channel_dream) > channel_mean(image) + 2.0
    assert channel_mean(channel_dream) > channel_mean(layer_dream) + 2.0


def test_a_channel_beyond_the_layer_is_a_clear_error(lite0, image):
    message = "channel 999 of layer block10 is out of range: it has 112 channels (0-111)"
    with pytest.raises(DreamflowError, match=re.escape(message)):
        engine.dream(lite0, objectives.parse("block10:999"), image, engine.DreamParams(**FAST))


# ---- noise start ----


def test_noise_image_is_reproducible_by_seed_and_differs_between_seeds():
    assert torch.equal(engine.noise_image(17, 29, seed=4), engine.noise_image(17, 29, seed=4))
    assert not torch.equal(engine.noise_image(17, 29, seed=4), engine.noise_image(17, 29, seed=5))


@pytest.mark.parametrize("height, width", [(17, 29), (1, 1), (64, 36)])
def test_noise_image_is_grey_plus_moderate_noise_of_any_size(height, width):
    noise = engine.noise_image(height, width, seed=0)
    assert noise.shape == (1, 3, height, width)
    assert (
        noise.min() >= 0.5 - engine.NOISE_AMPLITUDE and noise.max() <= 0.5 + engine.NOISE_AMPLITUDE
    )
    assert 0.0 <= float(noise.min()) and float(noise.max()) <= 1.0


def test_noise_image_is_centred_on_grey_and_not_flat():
    noise = engine.noise_image(64, 64, seed=0)
    assert float(noise.mean()) == pytest.approx(0.5, abs=0.01)
    assert float(noise.std()) > 0.02


# ---- tiling ----

GRIDS = [
    # height, width, tile_size, overlap, offset_y, offset_x
    (100, 130, 40, 5, 0, 0),
    (100, 130, 40, 5, 7, 29),
    (1080, 1920, 512, 64, 96, 352),
    (37, 300, 64, 8, 3, 47),  # one axis fits in a tile, the other does not
    (513, 513, 512, 64, 0, 383),
]


@pytest.mark.parametrize("height, width, tile_size, overlap, offset_y, offset_x", GRIDS)
def test_tile_cores_cover_every_pixel_exactly_once(
    height, width, tile_size, overlap, offset_y, offset_x
):
    counts = np.zeros((height, width), int)
    for (top, left, bottom, right), _ in engine.tile_grid(
        height, width, tile_size, overlap, offset_y, offset_x
    ):
        counts[top:bottom, left:right] += 1
    assert (counts == 1).all()


@pytest.mark.parametrize("height, width, tile_size, overlap, offset_y, offset_x", GRIDS)
def test_padded_tiles_hold_their_core_plus_the_margin_inside_the_image(
    height, width, tile_size, overlap, offset_y, offset_x
):
    for core, padded in engine.tile_grid(height, width, tile_size, overlap, offset_y, offset_x):
        top, left, bottom, right = core
        pad_top, pad_left, pad_bottom, pad_right = padded
        assert 0 <= pad_top <= top < bottom <= pad_bottom <= height
        assert 0 <= pad_left <= left < right <= pad_right <= width
        assert pad_bottom - pad_top <= tile_size and pad_right - pad_left <= tile_size
        if height > tile_size:
            assert pad_top == max(0, top - overlap) and pad_bottom == min(height, bottom + overlap)
        if width > tile_size:
            assert pad_left == max(0, left - overlap) and pad_right == min(width, right + overlap)


def test_tile_grid_offsets_move_the_seams():
    def seams(offset_x):
        return {core[1] for core, _ in engine.tile_grid(100, 300, 64, 8, 0, offset_x)} - {0}

    assert seams(0) == {48, 96, 144, 192, 240, 288}
    assert seams(10) == {10, 58, 106, 154, 202, 250, 298}


def test_an_image_that_fits_is_one_tile():
    assert engine.tile_grid(60, 80, 128, 16, 5, 7) == [((0, 0, 60, 80), (0, 0, 60, 80))]


def test_aligned_inputs_give_aligned_tile_edges():
    tile, overlap = engine.tile_layout(512)
    for core, padded in engine.tile_grid(1080, 1920, tile, overlap, 96, 352):
        for edge, size in zip(core + padded, (1080, 1920) * 4, strict=True):
            assert edge % engine.TILE_ALIGN == 0 or edge == size


@pytest.mark.parametrize("requested", [engine.MIN_TILE_SIZE, 200, 512, 1000])
def test_tile_layout_is_aligned_and_leaves_a_core(requested):
    tile, overlap = engine.tile_layout(requested)
    assert tile <= requested and tile % engine.TILE_ALIGN == 0 and overlap % engine.TILE_ALIGN == 0
    assert tile - 2 * overlap >= 2 * engine.TILE_ALIGN
    assert engine.tile_layout(512) == (512, 64)


def test_a_tile_that_covers_the_image_gives_exactly_the_untiled_dream(lite0):
    image = to_tensor(pattern_array(96, 128).copy())
    objective = objectives.parse(["block4"])
    params = engine.DreamParams(**{**FAST, "octaves": 2})
    tiled = engine.dream(
        lite0, objective, image, engine.DreamParams(**{**FAST, "octaves": 2, "tile_size": 128})
    )
    assert torch.equal(tiled, engine.dream(lite0, objective, image, params))


@pytest.fixture(scope="module")
def wide_image():
    return to_tensor(pattern_array(192, 256).copy())


def test_tiled_gradient_points_where_the_untiled_one_does(lite0, wide_image):
    objective = objectives.parse(["block4"])
    untiled = engine.objective_gradient(lite0, objective, wide_image)
    tiled = engine.tiled_gradient(
        lite0, objective, wide_image, 128, torch.Generator().manual_seed(0)
    )
    assert torch.nn.functional.cosine_similarity(tiled.flatten(), untiled.flatten(), dim=0) > 0.99
    assert float(tiled.abs().mean() / untiled.abs().mean()) == pytest.approx(1.0, abs=0.05)


def test_a_tiled_dream_agrees_closely_with_the_untiled_one(lite0, wide_image):
    """One step: the dream's dynamics amplify any difference, even 1e-4 of noise, from step to
    step."""
    objective = objectives.parse(["block4"])
    params = dict(octaves=1, iterations=1, step_size=1.5, jitter=0, seed=0)
    untiled = engine.dream(lite0, objective, wide_image, engine.DreamParams(**params))
    tiled = engine.dream(lite0, objective, wide_image, engine.DreamParams(**params, tile_size=128))
    change = (untiled - wide_image).abs().mean()
    assert (tiled - untiled).abs().mean() < 0.1 * change


def test_tiled_dreams_are_reproducible_by_seed(lite0, wide_image):
    objective = objectives.parse(["block4"])
    params = {**FAST, "iterations": 1, "tile_size": 128}
    first = engine.dream(lite0, objective, wide_image, engine.DreamParams(**params))
    assert torch.equal(
        first, engine.dream(lite0, objective, wide_image, engine.DreamParams(**params))
    )
    other = engine.dream(lite0, objective, wide_image, engine.DreamParams(**{**params, "seed": 1}))
    assert not torch.equal(first, other)


def cosine(a, b):
    return float((a * b).sum() / (a.norm() * b.norm()))


# measured cosines with the float32 gradient, Lite0 block4/block10, 48x48 to 360x640 on the CPU:
# bfloat16 0.46-0.79 (8 bits of mantissa), float16 0.89-0.98
@pytest.mark.parametrize("precision, least_cosine", [("bfloat16", 0.4), ("float16", 0.85)])
def test_autocast_gradients_point_where_the_float32_gradient_does(
    lite0, image, precision, least_cosine
):
    """The autocast path runs on the CPU as it would on a GPU (only the speed-up needs one)."""
    objective = objectives.parse(["block10"])
    exact = engine.objective_gradient(lite0, objective, image)
    reduced = engine.objective_gradient(lite0, objective, image, precision)
    assert reduced.dtype == torch.float32 and torch.isfinite(reduced).all()
    assert cosine(exact, reduced) > least_cosine
    assert not torch.equal(exact, reduced)  # it did run in reduced precision


def test_float16_gradients_do_not_underflow_on_a_large_frame(lite0):
    """A mean over a large frame's activations has per-pixel gradients below float16's range;
    the score is scaled so that they survive."""
    large = to_tensor(pattern_array(360, 640).copy())
    objective = objectives.parse(["block10"])
    exact = engine.objective_gradient(lite0, objective, large)
    reduced = engine.objective_gradient(lite0, objective, large, "float16")
    assert torch.isfinite(reduced).all() and (reduced != 0).float().mean() > 0.99
    assert cosine(exact, reduced) > 0.85


@pytest.mark.parametrize("precision", ["bfloat16", "float16"])
def test_an_autocast_dream_looks_like_the_float32_dream(lite0, image, precision):
    objective = objectives.parse(["block10"])
    # one step: rounding differences grow from step to step
    one_step = {**FAST, "jitter": 0, "iterations": 1}
    exact = engine.dream(lite0, objective, image, engine.DreamParams(**one_step))
    reduced = engine.dream(
        lite0, objective, image, engine.DreamParams(**one_step, precision=precision)
    )
    assert reduced.shape == exact.shape and 0.0 <= reduced.min() and reduced.max() <= 1.0
    assert_same_dream(image, reduced, exact, one_step)
    # without jitter the unshifted score must rise, from the second step on (the first lowers it
    # a little in float32 too)
    steady = {**FAST, "jitter": 0}
    reduced = engine.dream(
        lite0, objective, image, engine.DreamParams(**steady, precision=precision)
    )
    assert objective_value(lite0, objective, reduced) > objective_value(lite0, objective, image)


def test_dream_params_read_the_precision():
    assert engine.DreamParams.from_settings(defaults("dream")).precision == "float32"
    assert (
        engine.DreamParams.from_settings(defaults("dream", precision="bfloat16")).precision
        == "bfloat16"
    )


class LoudModel:
    """A real one-convolution network whose activations are scaled up so far that float16 gradients
    overflow: the case in which a float16 step must be redone in float32."""

    def __init__(self):
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 4, 3)

    def activations(self, image, layers):
        return {"loud": self.conv(image) * 3e4}


def test_a_float16_step_that_overflows_is_redone_in_float32(image):
    model, objective = LoudModel(), objectives.parse(["loud"])
    with torch.autocast(
        "cpu", dtype=torch.float16
    ):  # the overflow is real: float16 alone gives inf
        leaf = image.detach().requires_grad_(True)
        activations = model.activations(leaf, ["loud"])
    raw = torch.autograd.grad(
        objective({"loud": activations["loud"].float()}) * activations["loud"].numel(), leaf
    )[0]
    assert not torch.isfinite(raw).all()
    gradient = engine.objective_gradient(model, objective, image, "float16")
    assert torch.equal(gradient, engine.objective_gradient(model, objective, image))


def test_tiling_bounds_the_memory_of_a_dream_step():
    """The README's claim, measured as the benchmark does (tests/benchmarks/peak_memory.py): the
    peak RSS a fresh process adds over its loaded and warmed-up model for one step at block10 of a
    960x540 frame. Measured: untiled about 710 MiB, tiles of 256 about 100-110 MiB."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    import dreamflow

    script = Path(__file__).parent / "benchmarks" / "peak_memory.py"
    package_root = str(Path(dreamflow.__file__).parents[1])
    added = {}
    for tile in (0, 256):
        result = subprocess.run(
            [sys.executable, str(script), "--child", "540", "960", str(tile), "--threads", "2"],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONPATH": package_root},
        )
        measured = json.loads(result.stdout.splitlines()[-1])
        added[tile] = measured["peak_mib"] - measured["loaded_mib"]
    assert added[256] < 0.5 * added[0], added
