"""Tiny image transforms, each a pure function on (1, 3, H, W) tensors in [0, 1]."""

import math

import torch
import torch.nn.functional as F


def random_shift(generator, max_shift):
    """A seeded (dy, dx), each in [-max_shift, max_shift]."""
    if max_shift == 0:
        return 0, 0
    dy, dx = torch.randint(-max_shift, max_shift + 1, (2,), generator=generator).tolist()
    return dy, dx


def shift(image, offset):
    """Roll the image by (dy, dx), wrapping around: jitter, so no pixel sits at one spot in the
    net."""
    return torch.roll(image, shifts=offset, dims=(2, 3))


def unshift(image, offset):
    dy, dx = offset
    return torch.roll(image, shifts=(-dy, -dx), dims=(2, 3))


def zoom(image, factor, angle=0.0):
    """Zoom into the centre by `factor` (>1 zooms in) and rotate by `angle` degrees, same size,
    bilinear.

    Corners that rotation or zooming out reveal are filled by reflection, not black, so the next
    dream has something to work on there.
    """
    if factor == 1.0 and angle == 0.0:
        return image
    height, width = image.shape[-2:]
    cos, sin = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    # affine_grid works in [-1, 1] per axis; the aspect terms make the rotation rigid in pixels
    theta = (
        torch.tensor(
            [[cos, -sin * height / width, 0.0], [sin * width / height, cos, 0.0]],
            dtype=image.dtype,
            device=image.device,
        )
        / factor
    )
    grid = F.affine_grid(theta.unsqueeze(0), list(image.shape), align_corners=False)
    return F.grid_sample(
        image, grid, mode="bilinear", padding_mode="reflection", align_corners=False
    )


def fit_within(image, max_side):
    """Shrink (never enlarge) so the longer side is at most `max_side`, keeping the aspect ratio."""
    height, width = image.shape[-2:]
    scale = max_side / max(height, width)
    if scale >= 1.0:
        return image
    size = (max(1, round(height * scale)), max(1, round(width * scale)))
    return F.interpolate(image, size=size, mode="bilinear", align_corners=False, antialias=True)
