"""The dream engine: gradient ascent on an objective, over octaves, with jitter.

Images are float tensors of shape (1, 3, H, W) with values in [0, 1]. Step sizes are given in
0-255 pixel units, as in google/deepdream, and converted here.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F

MIN_OCTAVE_SIDE = 16  # smaller octaves carry no useful detail and break deep layers


@dataclass(frozen=True)
class DreamParams:
    octaves: int = 3
    octave_scale: float = 1.4
    iterations: int = 10
    step_size: float = 1.5
    jitter: int = 32
    seed: int = 0

    @classmethod
    def from_settings(cls, dream_settings):
        return cls(**{key: dream_settings[key] for key in cls.__dataclass_fields__})


def octave_sizes(height, width, octaves, scale, min_side=MIN_OCTAVE_SIDE):
    """(h, w) per octave, smallest first, ending with the full size.

    Octave i (counting down from the full size) is the full size divided by scale**i; octaves whose
    shorter side would fall below `min_side` are left out.
    """
    sizes = []
    for i in range(octaves):
        h, w = round(height / scale**i), round(width / scale**i)
        if i > 0 and min(h, w) < min_side:
            break
        sizes.append((h, w))
    return sizes[::-1]


def resize(image, size):
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    return F.interpolate(image, size=size, mode="bilinear", align_corners=False)


def jitter_offsets(generator, jitter):
    if jitter == 0:
        return 0, 0
    dy, dx = torch.randint(-jitter, jitter + 1, (2,), generator=generator).tolist()
    return dy, dx


def gradient_step(model, objective, image, step_size, jitter, generator):
    """One ascent step: shift, follow the normalised gradient, shift back, keep pixels in range."""
    dy, dx = jitter_offsets(generator, jitter)
    shifted = torch.roll(image, shifts=(dy, dx), dims=(2, 3)).requires_grad_(True)
    score = objective(model.activations(shifted, objective.layers))
    (gradient,) = torch.autograd.grad(score, shifted)
    # normalising by mean |g| makes step_size mean "pixels per step" whatever the layer's scale
    # clamp_min, not "+ eps": tiny but real gradients (random-init nets) must still take full steps
    gradient = gradient / gradient.abs().mean().clamp_min(1e-30)
    stepped = shifted.detach() + (step_size / 255.0) * gradient
    return torch.roll(stepped, shifts=(-dy, -dx), dims=(2, 3)).clamp_(0.0, 1.0)


def dream(model, objective, image, params):
    """Dream `image` and return the result, same shape, values in [0, 1].

    The same image, params and model give bit-identical results on the same machine and thread count.
    """
    generator = torch.Generator().manual_seed(params.seed)
    height, width = image.shape[-2:]
    sizes = octave_sizes(height, width, params.octaves, params.octave_scale)
    detail = None
    result = image
    for size in sizes:
        # each octave base comes from the original, so repeated resizing does not blur it
        base = resize(image, size)
        detail = torch.zeros_like(base) if detail is None else resize(detail, size)
        result = (base + detail).clamp(0.0, 1.0)
        for _ in range(params.iterations):
            result = gradient_step(model, objective, result, params.step_size, params.jitter, generator)
        detail = result - base
    return result


def score(model, objective, image):
    """The objective's value for `image`, without gradients (to check that dreaming raised it)."""
    with torch.no_grad():
        return float(objective(model.activations(image, objective.layers)))
