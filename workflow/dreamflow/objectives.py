"""Objectives: what a dream maximises. Small values that add and scale: `a + 0.5 * b`.

Sign convention: every objective returns a value to MAXIMISE. The engine ascends its gradient;
nothing here is negated to suit an optimiser that minimises.

`parse` is the one place that turns config and command-line terms ("block10", "block10:97",
{"layer": ..., "channel": ..., "weight": ...}) into an Objective. It needs no torch, so code that
must stay light (the Snakefile, config checks) can call it to learn which layers a config uses.
"""

import re
from collections.abc import Mapping

from .errors import DreamflowError

LAYER_NAME = re.compile(
    r"[A-Za-z0-9_.]+"
)  # the config schema's term grammar (a test compares them)
GUIDE_MAX_SIDE = 512  # google/deepdream shrinks guides too: features of a huge guide add nothing
GUIDE_MATCH_CHUNK = (
    4096  # positions matched at once; bounds the (positions x guide positions) matrix
)


class Objective:
    """A weighted sum of per-layer terms, evaluated on a dict of activations."""

    def __init__(self, terms):
        self.terms = tuple(
            terms
        )  # (weight, layer, measure); measure maps one activation to a scalar

    @property
    def layers(self):
        return sorted({layer for _, layer, _ in self.terms})

    def __call__(self, activations):
        return sum(weight * measure(activations[layer]) for weight, layer, measure in self.terms)

    def __add__(self, other):
        return Objective(self.terms + other.terms)

    def __mul__(self, factor):
        return Objective((weight * factor, layer, measure) for weight, layer, measure in self.terms)

    __rmul__ = __mul__


def mean_square(activation):
    # the mean, not the sum, so layers of different sizes weigh alike and the value does not
    # grow with the frame size; step normalisation makes the overall scale irrelevant anyway
    return activation.pow(2).mean()


def layer_l2(layer):
    """Amplify whatever a layer already sees: the classic DeepDream objective (higher is more
    dream)."""
    return Objective([(1.0, layer, mean_square)])


def channel(layer, index):
    """Amplify one feature: the mean activation of channel `index` of `layer` (higher is more of
    it)."""

    def mean_of_channel(activation):
        channels = activation.shape[1]
        if not 0 <= index < channels:
            raise DreamflowError(
                f"channel {index} of layer {layer} is out of range: "
                f"it has {channels} channels (0-{channels - 1})"
            )
        return activation[:, index].mean()

    return Objective([(1.0, layer, mean_of_channel)])


def _malformed(term, why):
    return DreamflowError(
        f"objective term {term!r} is malformed: {why}; write 'layer', 'layer:channel' "
        "(e.g. 'block10:97') or a mapping {layer: ..., channel: ..., weight: ...}"
    )


def _parse_string(term):
    layer, colon, index = term.partition(":")
    if not layer:
        raise _malformed(term, "the layer name is empty")
    if not LAYER_NAME.fullmatch(layer):
        raise _malformed(
            term, f"layer name {layer!r} has characters other than letters, digits, _ and ."
        )
    if not colon:
        return layer_l2(layer)
    if not index.isascii() or not index.isdigit():
        raise _malformed(term, f"channel {index!r} is not an integer")
    return channel(layer, int(index))


def _parse_mapping(term):
    unknown = sorted(set(term) - {"layer", "channel", "weight"})
    if unknown:
        raise _malformed(term, f"unknown keys {', '.join(map(str, unknown))}")
    layer, index, weight = term.get("layer"), term.get("channel"), term.get("weight", 1.0)
    if not isinstance(layer, str) or not LAYER_NAME.fullmatch(layer):
        raise _malformed(term, "'layer' must be a layer name (the channel goes under 'channel')")
    if index is not None and (isinstance(index, bool) or not isinstance(index, int)):
        raise _malformed(term, "'channel' must be an integer")
    if isinstance(weight, bool) or not isinstance(weight, (int, float)):
        raise _malformed(term, "'weight' must be a number")
    part = layer_l2(layer) if index is None else channel(layer, index)
    return float(weight) * part


def parse(terms):
    """The Objective for one term or a list of terms, summed. `.layers` of the result lists the
    layer names the terms need, without channel suffixes."""
    if isinstance(terms, (str, Mapping)):
        terms = [terms]
    parts = []
    for term in terms:
        if isinstance(term, str):
            parts.append(_parse_string(term))
        elif isinstance(term, Mapping):
            parts.append(_parse_mapping(term))
        else:
            raise _malformed(term, "a term is a string or a mapping")
    if not parts:
        raise DreamflowError("no objective terms given: name at least one layer")
    return sum(parts[1:], parts[0])


def guide(layer, guide_features):
    """Make `layer` look like the guide: google/deepdream's objective_guide (higher = more like it).

    `guide_features` is the guide image's activation at `layer`, shape (C, HW'). Each position of
    the current activation x (C x HW) is matched, without gradient, to the guide feature with the
    largest dot product; the objective is the mean of those dot products over positions and
    channels, so it does not grow with the frame size or the channel count. Its gradient at each
    position is the matched guide feature, which pulls the dream towards what the guide shows.
    """

    def match_guide(activation):
        import torch

        features = activation[0].flatten(1)  # C x HW
        with torch.no_grad():
            best = torch.cat(
                [
                    (chunk.T @ guide_features).argmax(1)
                    for chunk in features.split(GUIDE_MATCH_CHUNK, dim=1)
                ]
            )
        return (features * guide_features[:, best]).mean()

    return Objective([(1.0, layer, match_guide)])


def guide_features(model, guide_image, layers, max_side=GUIDE_MAX_SIDE):
    """{layer: (C, HW') features} of a (1, 3, H, W) guide image, shrunk to at most `max_side` px."""
    import torch

    from .transforms import fit_within

    with torch.no_grad():
        activations = model.activations(fit_within(guide_image, max_side), layers)
    return {
        layer: activation[0].flatten(1).contiguous() for layer, activation in activations.items()
    }


def guided(objective, features):
    """`objective` with each layer-L2 term replaced by a guide term for that layer, same weight.

    Channel terms stay as they are: they already say what to look for. `features` is the
    `guide_features` dict and must hold every layer with an L2 term.
    """
    parts = [
        weight * guide(layer, features[layer])
        if measure is mean_square
        else Objective([(weight, layer, measure)])
        for weight, layer, measure in objective.terms
    ]
    return sum(parts[1:], parts[0])
