"""Objectives: what a dream maximises. Small values that add and scale: `a + 0.5 * b`."""


class Objective:
    """A weighted sum of per-layer terms, evaluated on a dict of activations."""

    def __init__(self, terms):
        self.terms = tuple(terms)  # (weight, layer, term function)

    @property
    def layers(self):
        return sorted({layer for _, layer, _ in self.terms})

    def __call__(self, activations):
        return sum(weight * term(activations[layer]) for weight, layer, term in self.terms)

    def __add__(self, other):
        return Objective(self.terms + other.terms)

    def __mul__(self, factor):
        return Objective((weight * factor, layer, term) for weight, layer, term in self.terms)

    __rmul__ = __mul__


def _mean_square(activation):
    # the mean, not the sum, so layers of different sizes weigh alike and the value does not
    # grow with the frame size; step normalisation makes the overall scale irrelevant anyway
    return activation.pow(2).mean()


def layer_l2(layer):
    """Amplify whatever a layer already sees: the classic DeepDream objective (higher is more dream)."""
    return Objective([(1.0, layer, _mean_square)])


def layers_l2(layers):
    objective = layer_l2(layers[0])
    for layer in layers[1:]:
        objective = objective + layer_l2(layer)
    return objective
