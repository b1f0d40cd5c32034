import pytest
import torch

from dreamflow import objectives

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


def test_layers_l2_sums_every_layer_and_lists_each_once():
    objective = objectives.layers_l2(["b", "a", "b"])
    assert float(objective(ACTIVATIONS)) == pytest.approx(4.0 + 9.0 + 9.0)
    assert objective.layers == ["a", "b"]
