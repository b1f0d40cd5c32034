"""Image files: reading with clear errors, and atomic writes (no half-written file looks
complete)."""

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import DreamflowError

# the name of atomic_path's temporaries: a run that finds one left by a killed job removes it
TEMPORARY_PREFIX = ".partial-"


def read_rgb(path):
    """An image file as a uint8 array of shape (H, W, 3)."""
    try:
        with Image.open(path) as image:
            return np.array(image.convert("RGB"))  # a writable copy: torch.from_numpy needs one
    except FileNotFoundError:
        raise DreamflowError(f"image not found: {path}") from None
    except Image.DecompressionBombError as error:
        # a header claiming a huge size would make decoding take all the memory there is
        raise DreamflowError(f"cannot read image {path}: {error}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        # Pillow reports damaged files as OSError, SyntaxError ("broken PNG file") or ValueError
        reason = getattr(error, "strerror", None) or error
        raise DreamflowError(f"cannot read image {path}: {reason}") from None


def write_rgb(array, path, jpg_quality=95):
    """Write a uint8 (H, W, 3) array; the format follows the suffix (.png or .jpg)."""
    image = Image.fromarray(np.ascontiguousarray(array), mode="RGB")
    suffix = Path(path).suffix.lower()
    # zlib level 1, not Pillow's 6: at 1280x720 it encodes 2.6x faster for 14% more bytes, and a
    # frame's encode is on the path of every chained frame (and longer than a dream on a GPU)
    options = {"quality": jpg_quality} if suffix in (".jpg", ".jpeg") else {"compress_level": 1}
    image_format = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG"}.get(suffix)
    if image_format is None:
        raise DreamflowError(f"unsupported image format for {path}: use .png or .jpg")
    with atomic_path(path) as temporary:
        image.save(temporary, format=image_format, **options)


def publish(source, destination):
    """Copy a finished file to where users look for it, atomically: an interrupted copy never
    looks complete."""
    try:
        source_file = open(source, "rb")
    except OSError as error:
        raise DreamflowError(f"cannot read {source}: {error.strerror}") from None
    with source_file, atomic_path(destination) as temporary, open(temporary, "wb") as copy:
        shutil.copyfileobj(source_file, copy)


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside `path`; rename it over `path` only if the block succeeds.
    An OS error on the way (disk full, no permission, a read-only folder) is one line naming
    `path`, and the temporary is removed."""
    path = str(path)
    temporary = None
    try:
        with writing(path):
            directory = os.path.dirname(path) or "."
            os.makedirs(directory, exist_ok=True)
            handle, temporary = tempfile.mkstemp(
                prefix=TEMPORARY_PREFIX, suffix=Path(path).suffix, dir=directory
            )
            os.close(handle)
            # mkstemp makes the file owner-only (0600); give it the mode a plain open() would
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(temporary, 0o666 & ~umask)
            yield temporary
            os.replace(temporary, path)
    finally:
        if temporary is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)


@contextlib.contextmanager
def writing(path):
    """An OSError in the block (a full disk, a read-only or forbidden folder) becomes one line
    naming `path`, the file or folder the block makes."""
    try:
        yield
    except OSError as error:
        raise DreamflowError(f"cannot write {path}: {error.strerror or error}") from None


def to_tensor(array):
    import torch

    return torch.from_numpy(array).permute(2, 0, 1).unsqueeze(0).float().div_(255.0)


def to_array(tensor):
    return (
        tensor.detach()
        .squeeze(0)
        .permute(1, 2, 0)
        .mul(255.0)
        .round_()
        .clamp_(0, 255)
        .byte()
        .cpu()
        .numpy()
    )
