"""The dream engine: gradient ascent on an objective, over octaves, with jitter and optional tiling.

Images are float tensors of shape (1, 3, H, W) with values in [0, 1]. Step sizes are given in
0-255 pixel units, as in google/deepdream, and converted here. The engine knows nothing about
which objective it runs: it ascends whatever value the objective returns.
"""

from dataclasses import dataclass

import torch

from . import transforms
from .errors import DreamflowError

MIN_OCTAVE_SIDE = 16  # smaller octaves carry no useful detail and break deep layers
# Tile edges sit on multiples of the nets' largest stride (32 for every model in the zoo), so each
# strided layer samples a tile on the same grid as the whole image; off-grid tiles give visibly
# different gradients (cosine similarity with the untiled gradient ~0.2 instead of ~1 at block4).
TILE_ALIGN = 32
MIN_TILE_SIZE = 4 * TILE_ALIGN  # margins of one TILE_ALIGN each still leave a core twice as wide
AUTOCAST_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}  # float32: no autocast
NOISE_AMPLITUDE = 0.1  # noise start: grey +- this; enough texture for a net to latch onto


@dataclass(frozen=True)
class DreamParams:
    octaves: int = 3
    octave_scale: float = 1.4
    iterations: int = 10
    step_size: float = 1.5
    jitter: int = 32
    seed: int = 0
    tile_size: int | None = (
        None  # None: whole octave at once; else tiles of at most this many px a side
    )
    precision: str = "float32"  # float32, or bfloat16/float16 autocast of the forward pass

    def __post_init__(self):
        if self.tile_size is not None and self.tile_size < MIN_TILE_SIZE:
            raise DreamflowError(
                f"config key dream.tile_size: {self.tile_size} is too small for tiles with "
                f"margins; use at least {MIN_TILE_SIZE}, or null for no tiling"
            )

    @classmethod
    def from_settings(cls, dream_settings):
        """Params from a dream settings dict; other keys in it are ignored, tile_size may be
        absent."""
        required = ("octaves", "octave_scale", "iterations", "step_size", "jitter", "seed")
        return cls(
            **{key: dream_settings[key] for key in required},
            tile_size=dream_settings.get("tile_size"),
            precision=dream_settings.get("precision") or "float32",
        )


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
    return torch.nn.functional.interpolate(image, size=size, mode="bilinear", align_corners=False)


def noise_image(height, width, seed, amplitude=NOISE_AMPLITUDE):
    """A (1, 3, H, W) start image: mid-grey plus uniform noise, the same for the same seed."""
    generator = torch.Generator().manual_seed(seed)
    noise = torch.rand((1, 3, height, width), generator=generator)
    return 0.5 + amplitude * (2.0 * noise - 1.0)


def tile_layout(tile_size):
    """(tile, overlap) for a requested tile size: both multiples of TILE_ALIGN, tile <= tile_size.

    The overlap is the margin of context around each tile's core, about an eighth of the tile.
    """
    tile = tile_size // TILE_ALIGN * TILE_ALIGN
    overlap = max(TILE_ALIGN, tile // 8 // TILE_ALIGN * TILE_ALIGN)
    return tile, overlap


def _axis_segments(size, tile_size, overlap, offset):
    """[(core (start, end), padded (start, end))] along one axis; see tile_grid."""
    if size <= tile_size:
        return [((0, size), (0, size))]
    core = tile_size - 2 * overlap
    inner_cuts = [cut for cut in range(offset % core, size, core) if cut > 0]
    cuts = [0, *inner_cuts, size]
    return [
        ((start, end), (max(0, start - overlap), min(size, end + overlap)))
        for start, end in zip(cuts, cuts[1:], strict=False)
    ]


def tile_grid(height, width, tile_size, overlap, offset_y, offset_x):
    """Tiles covering an image: [(core box, padded box)], boxes as (top, left, bottom, right), ends
    exclusive.

    The cores partition the image, so every pixel belongs to exactly one core. Along an axis longer
    than `tile_size` the cores are `tile_size - 2 * overlap` long, with cuts at `offset + k * core`
    (a partial core at either end), and each padded box is its core grown by `overlap` on each side,
    clipped to the image: at most `tile_size` long. An axis that fits in one tile is one segment.
    When tile_size, overlap and the offsets are multiples of some m, every box edge inside the
    image is a multiple of m too.
    """
    rows = _axis_segments(height, tile_size, overlap, offset_y)
    columns = _axis_segments(width, tile_size, overlap, offset_x)
    return [
        ((top, left, bottom, right), (pad_top, pad_left, pad_bottom, pad_right))
        for (top, bottom), (pad_top, pad_bottom) in rows
        for (left, right), (pad_left, pad_right) in columns
    ]


def objective_gradient(model, objective, image, precision="float32"):
    """d objective / d image, with the forward graph freed on return.

    With precision bfloat16 or float16 the forward pass runs under autocast (tensor cores on a GPU);
    the objective and the gradient stay float32. On the CPU autocast works too but gains nothing.
    """
    leaf = image.detach().requires_grad_(True)
    dtype = AUTOCAST_DTYPES.get(precision)
    with torch.autocast(leaf.device.type, dtype=dtype, enabled=dtype is not None):
        activations = model.activations(leaf, objective.layers)
    score = objective({layer: value.float() for layer, value in activations.items()})
    if precision == "float16":
        # objectives are means over up to millions of activations, so their gradients fall below
        # float16's range (bfloat16 has float32's range): scaling by the activation count brings
        # them back to the size of the activations. The step divides the gradient by its mean
        # size, so the scale changes nothing else.
        score = score * float(max(value.numel() for value in activations.values()))
    (gradient,) = torch.autograd.grad(score, leaf)
    if precision == "float16" and not torch.isfinite(gradient).all():
        return objective_gradient(model, objective, image)  # overflowed: this step in float32
    return gradient


def tiled_gradient(model, objective, image, tile_size, generator, precision="float32"):
    """The gradient computed one padded tile at a time, keeping each tile's core only.

    A random grid offset per step moves the seams, so no seam stays in one place long enough to
    show. Only one tile's graph is alive at a time, so memory follows the tile size, not the image.
    """
    height, width = image.shape[-2:]
    tile_side, overlap = tile_layout(tile_size)
    core_steps = (tile_side - 2 * overlap) // TILE_ALIGN
    offset_y, offset_x = (
        TILE_ALIGN * torch.randint(0, core_steps, (2,), generator=generator)
    ).tolist()
    gradient = torch.zeros_like(image)
    for (top, left, bottom, right), (pad_top, pad_left, pad_bottom, pad_right) in tile_grid(
        height, width, tile_side, overlap, offset_y, offset_x
    ):
        tile = image[:, :, pad_top:pad_bottom, pad_left:pad_right].contiguous()
        # objectives are spatial means, so a tile's mean stands for (its area / image area) of the
        # whole image's; weighting by the padded area keeps each pixel's gradient on the untiled
        # scale
        weight = (pad_bottom - pad_top) * (pad_right - pad_left) / (height * width)
        tile_gradient = objective_gradient(model, weight * objective, tile, precision)
        gradient[:, :, top:bottom, left:right] = tile_gradient[
            :, :, top - pad_top : bottom - pad_top, left - pad_left : right - pad_left
        ]
    return gradient


def image_gradient(model, objective, image, params, generator):
    height, width = image.shape[-2:]
    tile_size = params.tile_size
    if tile_size is None or (height <= tile_size and width <= tile_size):
        # not merely equivalent to one tile: the very same computation, so results are bit-identical
        return objective_gradient(model, objective, image, params.precision)
    return tiled_gradient(model, objective, image, tile_size, generator, params.precision)


def gradient_step(model, objective, image, params, generator):
    """One ascent step: shift, follow the normalised gradient, shift back, keep pixels in range."""
    offset = transforms.random_shift(generator, params.jitter)
    shifted = transforms.shift(image, offset)
    gradient = image_gradient(model, objective, shifted, params, generator)
    # normalising by mean |g| makes step_size mean "pixels per step" whatever the layer's scale
    # clamp_min, not "+ eps": tiny but real gradients (random-init nets) must still take full steps
    gradient = gradient / gradient.abs().mean().clamp_min(1e-30)
    stepped = shifted + (params.step_size / 255.0) * gradient
    return transforms.unshift(stepped, offset).clamp_(0.0, 1.0)


def dream(model, objective, image, params):
    """Dream `image` and return the result, same shape, values in [0, 1].

    The same image, params and model give bit-identical results on the same machine and thread
    count.
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
            result = gradient_step(model, objective, result, params, generator)
        detail = result - base
    return result
