import re

import pytest
import torch

from dreamflow import engine, models, objectives, transforms
from dreamflow.errors import DreamflowError
from dreamflow.images import to_tensor
from helpers import objective_value, pattern_array

ACTIVATIONS = {"a": torch.full((1, 2, 3, 3), 2.0), "b": torch.full((1, 4, 2, 2), 3.0)}


def test_layer_l2_is_the_mean_square_of_the_activation():
    assert float(objectives.layer_l2("a")(ACTIVATIONS)) == pytest.approx(4.0)
    assert objectives.layer_l2("a").layers == ["a"]


def test_objectives_add():
    total = objectives.layer_l2("a") + objectives.layer_l2("b")
    assert float(total(ACTIVATIONS)) == pytest.approx(4.0 + 9.0)
    assert total.layers == ["a", "b"]


def test_objectives_scale_from_either_side():
    assert float((0.5 * objectives.layer_l2("b"))(ACTIVATIONS)) == pytest.approx(4.5)
    assert float((objectives.layer_l2("b") * 2)(ACTIVATIONS)) == pytest.approx(18.0)


def test_scaling_a_sum_scales_each_term():
    combined = (objectives.layer_l2("a") + 0.5 * objectives.layer_l2("b")) * 2
    assert float(combined(ACTIVATIONS)) == pytest.approx(2 * (4.0 + 4.5))


def test_parse_of_layer_names_sums_every_layer_and_lists_each_once():
    objective = objectives.parse(["b", "a", "b"])
    assert float(objective(ACTIVATIONS)) == pytest.approx(4.0 + 9.0 + 9.0)
    assert objective.layers == ["a", "b"]


# ---- channel objectives ----

CHANNELS = {"c": torch.arange(4.0).reshape(1, 4, 1, 1).expand(1, 4, 3, 5)}  # channel k is all k


def test_channel_is_the_mean_of_that_channel():
    assert float(objectives.channel("c", 2)(CHANNELS)) == pytest.approx(2.0)
    assert objectives.channel("c", 2).layers == ["c"]


@pytest.mark.parametrize("index", [999, 112, -1])
def test_channel_out_of_range_names_layer_index_and_valid_range(index):
    activations = {"block10": torch.zeros(1, 112, 2, 2)}
    message = f"channel {index} of layer block10 is out of range: it has 112 channels (0-111)"
    with pytest.raises(DreamflowError, match=re.escape(message)):
        objectives.channel("block10", index)(activations)


# ---- parse: the one place terms become objectives ----


def test_parse_a_layer_name_is_its_l2():
    assert float(objectives.parse("a")(ACTIVATIONS)) == pytest.approx(4.0)
    assert float(objectives.parse(["a"])(ACTIVATIONS)) == pytest.approx(4.0)


def test_parse_layer_colon_index_is_a_channel():
    objective = objectives.parse("c:3")
    assert float(objective(CHANNELS)) == pytest.approx(3.0)
    assert objective.layers == ["c"]


def test_parse_mappings_with_channel_and_weight():
    assert float(
        objectives.parse({"layer": "c", "channel": 1, "weight": 2.5})(CHANNELS)
    ) == pytest.approx(2.5)
    assert float(objectives.parse({"layer": "a", "weight": 0.5})(ACTIVATIONS)) == pytest.approx(2.0)
    assert float(objectives.parse({"layer": "a"})(ACTIVATIONS)) == pytest.approx(4.0)


def test_parse_sums_terms_and_lists_layer_names_without_channels():
    activations = {**ACTIVATIONS, **CHANNELS}
    objective = objectives.parse(["a", "c:2", {"layer": "b", "weight": 2}, "c:3"])
    assert float(objective(activations)) == pytest.approx(4.0 + 2.0 + 2 * 9.0 + 3.0)
    assert objective.layers == ["a", "b", "c"]


def test_parsed_weighted_sum_equals_the_weighted_parts():
    activations = {**ACTIVATIONS, **CHANNELS}
    parsed = objectives.parse(
        [{"layer": "a", "weight": 0.5}, {"layer": "c", "channel": 3, "weight": -2.0}]
    )
    built = 0.5 * objectives.layer_l2("a") + objectives.channel("c", 3) * -2.0
    assert float(parsed(activations)) == pytest.approx(float(built(activations)))
    assert float(parsed(activations)) == pytest.approx(0.5 * 4.0 - 2.0 * 3.0)


@pytest.mark.parametrize(
    "term",
    [
        "block10:abc",
        "block10:",
        ":3",
        "block10:1:2",
        "",
        {"layer": "block10", "chanel": 3},
        {"layer": "block10", "channel": "3"},
        {"layer": "block10:3"},
        {"channel": 3},
        {"layer": "block10", "weight": "high"},
        {"layer": "block10", "channel": True},
        42,
    ],
)
def test_parse_rejects_a_malformed_term_naming_it(term):
    with pytest.raises(DreamflowError, match=re.escape(repr(term))):
        objectives.parse([term])


def test_parse_needs_at_least_one_term():
    with pytest.raises(DreamflowError, match="no objective terms"):
        objectives.parse([])


# ---- guide ----


def test_guide_matches_each_position_to_its_best_guide_feature():
    features = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # C=2 x two guide positions: e_0 and e_1
    activation = torch.tensor([[3.0, 1.0], [1.0, 2.0]]).reshape(
        1, 2, 1, 2
    )  # positions (3, 1) and (1, 2)
    # best dot products: (3, 1).e_0 = 3 and (1, 2).e_1 = 2; mean over 2 channels x 2 positions
    assert float(objectives.guide("x", features)({"x": activation})) == pytest.approx(
        (3.0 + 2.0) / 4
    )


def test_guide_value_does_not_grow_with_the_frame_size():
    features = torch.randn(8, 30, generator=torch.Generator().manual_seed(0))
    activation = torch.randn(1, 8, 4, 5, generator=torch.Generator().manual_seed(1))
    objective = objectives.guide("x", features)
    bigger = activation.repeat(1, 1, 3, 2)
    assert float(objective({"x": bigger})) == pytest.approx(float(objective({"x": activation})))


def test_guide_matching_in_chunks_equals_matching_at_once(monkeypatch):
    features = torch.randn(8, 30, generator=torch.Generator().manual_seed(0))
    activations = {"x": torch.randn(1, 8, 7, 9, generator=torch.Generator().manual_seed(1))}
    at_once = float(objectives.guide("x", features)(activations))
    monkeypatch.setattr(objectives, "GUIDE_MATCH_CHUNK", 5)
    assert float(objectives.guide("x", features)(activations)) == pytest.approx(at_once)


def test_guided_replaces_l2_terms_and_keeps_channel_terms_and_weights():
    features = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    activations = {"x": torch.tensor([[3.0, 1.0], [1.0, 2.0]]).reshape(1, 2, 1, 2), **CHANNELS}
    objective = objectives.guided(
        objectives.parse([{"layer": "x", "weight": 2.0}, "c:3"]), {"x": features}
    )
    assert float(objective(activations)) == pytest.approx(2.0 * (3.0 + 2.0) / 4 + 3.0)
    assert objective.layers == ["c", "x"]


@pytest.fixture(scope="module")
def lite0():
    return models.build("efficientnet_lite0")


def test_guide_objective_is_higher_for_the_guide_itself_than_for_other_images(lite0):
    guide_image = to_tensor(pattern_array(64, 96, seed=1).copy())
    objective = objectives.guided(
        objectives.parse("block10"), objectives.guide_features(lite0, guide_image, ["block10"])
    )
    itself = objective_value(lite0, objective, guide_image)
    other = to_tensor(pattern_array(64, 96, seed=2).copy())
    assert itself > objective_value(lite0, objective, other)
    assert itself > objective_value(lite0, objective, engine.noise_image(64, 96, seed=0))


def test_dreaming_with_a_guide_raises_the_guide_objective(lite0):
    objective = objectives.guided(
        objectives.parse("block10"),
        objectives.guide_features(
            lite0, to_tensor(pattern_array(64, 96, seed=1).copy()), ["block10"]
        ),
    )
    image = to_tensor(pattern_array(64, 96, seed=2).copy())
    dreamed = engine.dream(
        lite0, objective, image, engine.DreamParams(octaves=1, iterations=3, jitter=0)
    )
    assert objective_value(lite0, objective, dreamed) > 1.1 * objective_value(
        lite0, objective, image
    )


def test_guide_features_come_from_the_guide_shrunk_to_512_pixels(lite0):
    big = to_tensor(pattern_array(300, 1100).copy())
    features = objectives.guide_features(lite0, big, ["block4", "block10"])
    shrunk = objectives.guide_features(
        lite0, transforms.fit_within(big, 512), ["block4", "block10"]
    )
    assert set(features) == {"block4", "block10"}
    for layer in features:
        assert torch.equal(features[layer], shrunk[layer])
        assert (
            features[layer].shape[0]
            == lite0.activations(big[..., :32, :32], [layer])[layer].shape[1]
        )
