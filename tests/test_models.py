import os
import re

import pytest
import torch
import torchvision
from efficientnet_lite_pytorch import EfficientNet

from dreamflow import models
from dreamflow.errors import DreamflowError

torch.set_num_threads(2)


@pytest.fixture(scope="module", params=sorted(models.MODELS))
def random_model(request):
    return models.build(request.param, pretrained=False)


def stage(model, name):
    return dict(model.stages)[name]


def test_random_init_model_reaches_every_listed_layer(random_model):
    layers = models.spec(random_model.name).layers
    with torch.no_grad():
        found = random_model.activations(torch.rand(1, 3, 64, 64), layers)
    assert list(found) == list(layers)
    for name in layers:
        assert found[name].dim() == 4 and found[name].shape[0] == 1, name


def test_activations_return_only_the_requested_layers(random_model):
    wanted = models.spec(random_model.name).layers[1:3]
    with torch.no_grad():
        found = random_model.activations(torch.rand(1, 3, 48, 48), wanted)
    assert sorted(found) == sorted(wanted)


def test_model_parameters_are_frozen(random_model):
    parameters = [p for _, module in random_model.stages for p in module.parameters()]
    assert parameters and not any(p.requires_grad for p in parameters)
    assert not any(module.training for _, module in random_model.stages)


def test_check_layers_accepts_valid_layers():
    models.check_layers("googlenet", ["inception4c", "conv1"])
    models.check_layers("efficientnet_lite0", ["stem", "block15", "head"])


def test_check_layers_error_lists_close_matches():
    with pytest.raises(DreamflowError) as caught:
        models.check_layers("googlenet", ["inception4x"])
    message = str(caught.value)
    assert message.startswith("unknown layer 'inception4x' for model googlenet (close matches: inception4")
    assert "valid layers: conv1," in message


def test_check_layers_error_without_close_matches_still_lists_valid_layers():
    with pytest.raises(DreamflowError) as caught:
        models.check_layers("efficientnet_lite0", ["zzz"])
    assert "close matches" not in str(caught.value)
    assert "valid layers: stem, block0" in str(caught.value)


def test_unknown_model_lists_available_models():
    with pytest.raises(DreamflowError, match="unknown model 'vgg'; available models: efficientnet_lite0, googlenet"):
        models.build("vgg")


def test_missing_googlenet_weights_name_the_path_and_how_to_fetch_them(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    expected = tmp_path / "hub" / "checkpoints" / os.path.basename(
        torchvision.models.GoogLeNet_Weights.IMAGENET1K_V1.url)
    with pytest.raises(DreamflowError) as caught:
        models.build("googlenet")
    message = str(caught.value)
    assert f"GoogLeNet weights not found at {expected}" in message
    assert "googlenet(weights='IMAGENET1K_V1')" in message
    assert "TORCH_HOME" in message and "dream.weights" in message


def test_weights_file_holding_a_list_is_rejected_naming_the_file(tmp_path):
    path = tmp_path / "list.pth"
    torch.save([torch.zeros(2)], path)
    with pytest.raises(DreamflowError, match=re.escape(f"weights file {path} is not a state dict")):
        models.build("efficientnet_lite0", weights=str(path))


def test_weights_file_of_text_is_rejected_naming_the_file(tmp_path):
    path = tmp_path / "weights.pth"
    path.write_text("these are not weights\n")
    with pytest.raises(DreamflowError, match=re.escape(f"weights file {path} could not be loaded")):
        models.build("googlenet", weights=str(path))


def test_weights_file_holding_a_whole_model_is_rejected_in_one_line(tmp_path):
    """torch.save(model) instead of torch.save(model.state_dict()) is the usual mistake; torch's own
    message about it spans several lines, which the CLI's one-line error report must not inherit."""
    path = tmp_path / "model.pth"
    torch.save(torch.nn.Linear(2, 2), path)
    with pytest.raises(DreamflowError) as caught:
        models.build("efficientnet_lite0", weights=str(path))
    message = str(caught.value)
    assert message.startswith(f"weights file {path} ")
    assert "state_dict()" in message
    assert "\n" not in message


def test_missing_weights_file_is_named(tmp_path):
    path = tmp_path / "absent.pth"
    with pytest.raises(DreamflowError, match=re.escape(f"weights file not found: {path}")):
        models.build("efficientnet_lite0", weights=str(path))


def test_state_dict_of_another_model_does_not_fit(tmp_path):
    path = tmp_path / "lite0.pth"
    torch.save(EfficientNet.from_name("efficientnet-lite0", image_size=None).state_dict(), path)
    with pytest.raises(DreamflowError, match=re.escape(f"weights file {path} does not fit this model")):
        models.build("googlenet", weights=str(path))


def test_efficientnet_state_dict_loads_from_the_weights_argument(tmp_path):
    state = EfficientNet.from_name("efficientnet-lite0", image_size=None).state_dict()
    path = tmp_path / "lite0.pth"
    torch.save(state, path)
    model = models.build("efficientnet_lite0", weights=str(path))
    assert torch.equal(stage(model, "stem")[0].weight, state["_conv_stem.weight"])
    embedded = models.build("efficientnet_lite0")
    assert not torch.equal(stage(embedded, "stem")[0].weight, state["_conv_stem.weight"])


def test_googlenet_state_dict_loads_from_the_weights_argument(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    state = torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=False).state_dict()
    path = tmp_path / "googlenet.pth"
    torch.save(state, path)
    model = models.build("googlenet", weights=str(path))
    assert torch.equal(stage(model, "conv1").conv.weight, state["conv1.conv.weight"])
    assert torch.equal(stage(model, "inception4c").branch1.conv.weight, state["inception4c.branch1.conv.weight"])
