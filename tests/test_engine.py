import pytest
import torch

from dreamflow import engine, models, objectives
from dreamflow.images import to_tensor

from unit_helpers import defaults, pattern_array

torch.set_num_threads(2)

FAST = dict(octaves=1, octave_scale=1.4, iterations=2, step_size=1.5, jitter=4, seed=0)


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
    assert params == engine.DreamParams(octaves=3, octave_scale=1.4, iterations=7, step_size=1.5, jitter=32, seed=3)


@pytest.mark.parametrize("layer", ["block4", "block10"])
def test_dream_raises_the_objective_score(lite0, image, layer):
    """Without jitter a dream is plain gradient ascent, so the unshifted score must rise."""
    objective = objectives.layers_l2([layer])
    before = engine.score(lite0, objective, image)
    dreamed = engine.dream(lite0, objective, image, engine.DreamParams(**{**FAST, "jitter": 0}))
    assert engine.score(lite0, objective, dreamed) > before * 1.05


def test_dream_changes_the_image_but_keeps_shape_and_range(lite0):
    image = to_tensor(pattern_array(40, 56).copy())
    objective = objectives.layers_l2(["block4"])
    result = engine.dream(lite0, objective, image, engine.DreamParams(**{**FAST, "octaves": 2, "step_size": 60}))
    assert result.shape == image.shape
    assert result.min() >= 0.0 and result.max() <= 1.0
    assert ((result == 0.0) | (result == 1.0)).any()
    assert (result - image).abs().mean() > 0.01


def test_same_seed_gives_identical_output(lite0, image):
    objective = objectives.layers_l2(["block4"])
    first = engine.dream(lite0, objective, image, engine.DreamParams(**FAST))
    second = engine.dream(lite0, objective, image, engine.DreamParams(**FAST))
    assert torch.equal(first, second)


def test_different_seed_gives_different_output(lite0, image):
    objective = objectives.layers_l2(["block4"])
    first = engine.dream(lite0, objective, image, engine.DreamParams(**FAST))
    other = engine.dream(lite0, objective, image, engine.DreamParams(**{**FAST, "seed": 1}))
    assert not torch.equal(first, other)


def test_dream_leaves_its_input_untouched(lite0, image):
    original = image.clone()
    engine.dream(lite0, objectives.layers_l2(["block4"]), image, engine.DreamParams(**FAST))
    assert torch.equal(image, original)


def test_score_needs_no_gradients(lite0, image):
    value = engine.score(lite0, objectives.layers_l2(["block2"]), image.requires_grad_(False))
    assert isinstance(value, float) and value > 0
