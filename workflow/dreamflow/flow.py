"""Optical flow between consecutive raw frames, its reliability mask, and warping along it.

Conventions: frames are uint8 (H, W, 3) RGB arrays. The *backward* flow w of frame N maps each
pixel x of frame N to where it was in frame N-1: x + w(x). warp(image_{N-1}, w) therefore lines
frame N-1 up with frame N.

The flow of each pair of consecutive frames is computed once, by a workflow job, and stored in a
flow file (save_flow) that the blend step reads (load_flow).
"""

import os
import threading
import zipfile
import zlib

import numpy as np

from .errors import DreamflowError
from .images import atomic_path
from .job import FLOW_METHODS  # the list lives with the jobs, which import no numpy


def _gray(frame):
    import cv2

    return cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY)


def _opencv_flow(source, target, method):
    """Flow from `source` to `target` (for each pixel of source, where it went in target)."""
    import cv2

    if method == "dis":
        dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
        return dis.calc(_gray(source), _gray(target), None)
    if method == "farneback":
        return cv2.calcOpticalFlowFarneback(
            _gray(source), _gray(target), None, 0.5, 4, 21, 4, 7, 1.5, 0
        )
    raise DreamflowError(f"unknown flow method '{method}'; use one of {', '.join(FLOW_METHODS)}")


def warp(image, flow):
    """Sample `image` (H, W[, C], float32 or uint8) at x + flow(x): the image moved onto the frame
    the flow belongs to. Pixels whose source lies outside the image take the nearest edge pixel."""
    import cv2

    height, width = flow.shape[:2]
    grid_x, grid_y = np.meshgrid(
        np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32)
    )
    map_x = grid_x + flow[..., 0].astype(np.float32)
    map_y = grid_y + flow[..., 1].astype(np.float32)
    return cv2.remap(
        np.ascontiguousarray(image), map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )


def consistency_mask(backward, forward):
    """Where the backward flow of frame N can be trusted (Ruder et al. 2016): True for reliable.

    A pixel is unreliable where the forward flow, followed from where the pixel came from, does
    not bring it back: |w + w^(x + w)|^2 >= 0.01 (|w|^2 + |w^(x + w)|^2) + 0.5 (occluded or newly
    visible); at motion boundaries, |grad u|^2 + |grad v|^2 > 0.01 |w|^2 + 0.002; and where x + w
    falls outside frame N-1.
    """
    height, width = backward.shape[:2]
    forward_there = warp(forward, backward)
    round_trip = backward + forward_there
    backward_sq = np.sum(backward**2, axis=2)
    occluded = (
        np.sum(round_trip**2, axis=2)
        >= 0.01 * (backward_sq + np.sum(forward_there**2, axis=2)) + 0.5
    )
    du_y, du_x = np.gradient(backward[..., 0])
    dv_y, dv_x = np.gradient(backward[..., 1])
    boundary = du_x**2 + du_y**2 + dv_x**2 + dv_y**2 > 0.01 * backward_sq + 0.002
    grid_x, grid_y = np.meshgrid(np.arange(width), np.arange(height))
    source_x = grid_x + backward[..., 0]
    source_y = grid_y + backward[..., 1]
    outside = (source_x < 0) | (source_x > width - 1) | (source_y < 0) | (source_y > height - 1)
    return ~(occluded | boundary | outside)


def compute_flow(previous, frame, method="dis", device="auto"):
    """(backward flow of `frame` float32 (H, W, 2), reliable bool (H, W)) from the raw frame
    before it. `device` is used by the RAFT methods only."""
    if previous.shape != frame.shape:
        raise DreamflowError(
            f"frames differ in size: {previous.shape[1]}x{previous.shape[0]} and "
            f"{frame.shape[1]}x{frame.shape[0]}"
        )
    if method.startswith("raft"):
        backward, forward = _raft_flows(previous, frame, method, device)
    else:
        backward = _opencv_flow(frame, previous, method)
        forward = _opencv_flow(previous, frame, method)
    return backward, consistency_mask(backward, forward)


# A long-running process (the model server) computes many flows: each RAFT network is loaded once.
_RAFT_NETWORKS = {}
_RAFT_LOCK = threading.Lock()
# RAFT works at 1/8 scale and its correlation pyramid halves that three more times, down to 2x2
RAFT_MULTIPLE = 8
RAFT_MIN_SIDE = 128


def raft_weights_file(method):
    """The torch cache file the RAFT `method` reads its weights from; an error naming it and the
    command that fills it when it is missing."""
    from . import models

    path = models.weights_cache_file(method)
    if not os.path.isfile(path):
        raise DreamflowError(
            f"{method} flow weights not found at {path}: fetch them with "
            f"`dreamflow fetch-models --model {method}` (same TORCH_HOME)"
        )
    return path


def _raft_network(method, device):
    from . import models
    from .dreamstep import pick_device

    device = pick_device(device)
    path = raft_weights_file(method)
    key = (method, str(device), path)
    with _RAFT_LOCK:
        if key not in _RAFT_NETWORKS:
            net = models.flow_network(method)
            models.load_weights(net, path, method)
            _RAFT_NETWORKS[key] = (net.eval().to(device), device)
        return _RAFT_NETWORKS[key]


def _raft_flows(previous, frame, method, device):
    """(backward, forward) flows, float32 (H, W, 2), from one RAFT batch of both directions."""
    import torch
    import torch.nn.functional as F

    net, device = _raft_network(method, device)
    height, width = frame.shape[:2]
    pad_height = max(RAFT_MIN_SIDE, -(-height // RAFT_MULTIPLE) * RAFT_MULTIPLE)
    pad_width = max(RAFT_MIN_SIDE, -(-width // RAFT_MULTIPLE) * RAFT_MULTIPLE)
    with torch.inference_mode():
        images = torch.from_numpy(np.stack([frame, previous])).to(device)
        # [0, 255] -> [-1, 1], as torchvision's Raft weights transforms do
        images = images.permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)
        # padding at the bottom and right only keeps pixel coordinates, so cropping undoes it
        images = F.pad(images, (0, pad_width - width, 0, pad_height - height), mode="replicate")
        # image 1 -> image 2 per batch item: frame -> previous (backward), previous -> frame
        flows = net(images, images.flip(0))[-1][:, :, :height, :width]
        flows = flows.permute(0, 2, 3, 1).cpu().numpy()
    return np.ascontiguousarray(flows[0]), np.ascontiguousarray(flows[1])


# --- flow files: the flow of each pair of consecutive frames, written once, read by the blend ---

FLOW_FILE_VERSION = 1
_FLOW_FILE_FIELDS = ("version", "method", "height", "width", "flow", "reliable")
_ZIP_MAGIC = b"PK\x03\x04"


class FlowFileError(DreamflowError):
    """A flow file that is missing, unreadable, of another format version or of the wrong size."""


def save_flow(path, flow, reliable, method):
    """Write the backward flow and its reliability mask compressed to `path`, atomically. The flow
    is stored as float16, precise to 1/32 px below 64 px of motion and to 1/4 px below 512; the
    mask as one bit a pixel."""
    flow = np.asarray(flow)
    reliable = np.asarray(reliable, dtype=bool)
    height, width = reliable.shape
    if flow.shape != (height, width, 2):
        raise ValueError(f"flow of shape {flow.shape} does not match a mask of {reliable.shape}")
    with atomic_path(path) as temporary, open(temporary, "wb") as handle:
        # a file object, not a name: savez would append .npz to a name that lacks it
        np.savez_compressed(
            handle,
            version=np.int64(FLOW_FILE_VERSION),
            method=np.str_(method),
            height=np.int64(height),
            width=np.int64(width),
            flow=flow.astype(np.float16),
            reliable=np.packbits(reliable, axis=None),
        )


def load_flow(path, size=None):
    """(flow float32 (H, W, 2), reliable bool (H, W)) from a file written by save_flow; with
    `size` (height, width), the file must be of that size. Any problem is a FlowFileError naming
    the file."""
    try:
        with open(path, "rb") as handle:
            # checked here: np.load would try other formats, and its errors for them suggest
            # allow_pickle
            if handle.read(len(_ZIP_MAGIC)) != _ZIP_MAGIC:
                raise FlowFileError(
                    f"flow file {path} is not an .npz archive (empty, or another kind of file)"
                )
            handle.seek(0)
            with np.load(handle, allow_pickle=False) as data:
                missing = ", ".join(sorted(set(_FLOW_FILE_FIELDS) - set(data.files)))
                if missing:
                    raise FlowFileError(f"flow file {path} is not a flow file: it lacks {missing}")
                version = int(data["version"])
                if version != FLOW_FILE_VERSION:
                    raise FlowFileError(
                        f"flow file {path} has format version {version}, not {FLOW_FILE_VERSION}: "
                        "delete it to compute it again"
                    )
                height, width = int(data["height"]), int(data["width"])
                flow = data["flow"]
                packed = data["reliable"]
    except FileNotFoundError:
        raise FlowFileError(f"flow file not found: {path}") from None
    except (
        OSError,
        ValueError,
        TypeError,
        EOFError,
        KeyError,
        zipfile.BadZipFile,
        zlib.error,
    ) as error:
        # numpy and zipfile report a truncated archive, or a file of something else, in many ways
        detail = " ".join(str(error).split()) or type(error).__name__
        raise FlowFileError(
            f"flow file {path} cannot be read (truncated, or not a flow file): {detail}"
        ) from None
    if (
        flow.shape != (height, width, 2)
        or flow.dtype != np.float16
        or packed.shape != (-(-height * width // 8),)
        or packed.dtype != np.uint8
    ):
        raise FlowFileError(
            f"flow file {path} is corrupt: a {flow.dtype} flow of shape {flow.shape} and a "
            f"{packed.dtype} mask of shape {packed.shape} for {width}x{height} frames"
        )
    if size is not None and tuple(size) != (height, width):
        raise FlowFileError(
            f"flow file {path} is for {width}x{height} frames, not {size[1]}x{size[0]}"
        )
    reliable = np.unpackbits(packed, count=height * width).reshape(height, width).astype(bool)
    return flow.astype(np.float32), reliable
