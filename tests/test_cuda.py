"""Every CUDA path of dreamflow on a GPU, with real parts: the Dreamer in each precision and with
cudnn_benchmark, the model server, RAFT flow, and device auto.

Marked `cuda`: tests/conftest.py skips them without a CUDA GPU; tests/benchmarks/gpu_check.py
runs them on one.
"""

import os

import numpy as np
import pytest
import torch
import torchvision

from dreamflow import flow, models
from dreamflow.config import resolve_dream
from dreamflow.dreamstep import Dreamer, pick_device
from dreamflow.images import read_rgb, write_rgb
from helpers import (
    LONG_IDLE,
    assert_dreamed,
    assert_same_dream,
    defaults,
    dream_frame,
    dreamed_by_server,
    job_settings,
    kill_servers,
    pattern_array,
)

pytestmark = pytest.mark.cuda

# one step without jitter: lower precision changes the gradient a little, and every further step
# compounds that, so only a single step can be compared with float32 pixel by pixel
ONE_STEP = {"octaves": 1, "iterations": 1, "jitter": 0, "device": "cuda"}


def settings(**overrides):
    return resolve_dream(defaults("dream", **{**ONE_STEP, **overrides}))


def mean_difference(a, b):
    return np.abs(a.astype(np.int16) - b.astype(np.int16)).mean()


@pytest.fixture(scope="module")
def frame():
    return np.array(pattern_array(180, 320, seed=1))


@pytest.fixture(scope="module")
def float32_dream(frame):
    return Dreamer(settings()).dream_array(frame)


@pytest.mark.parametrize("precision", ["float32", "bfloat16", "float16"])
def test_a_dream_on_cuda_in_each_precision(frame, float32_dream, precision):
    dreamer = Dreamer(settings(precision=precision))
    assert next(dreamer.model.stages[0][1].parameters()).device.type == "cuda"
    result = dreamer.dream_array(frame)
    assert result.dtype == np.uint8 and result.shape == frame.shape
    if precision == "float32":
        assert_dreamed(frame, result, ONE_STEP)
    else:
        # reduced precision rounds the gradient: after one step the same dream within rounding
        assert_same_dream(frame, result, float32_dream, ONE_STEP)


def test_cudnn_benchmark_dreams_the_same_picture(frame, float32_dream):
    dreamer = Dreamer(settings(cudnn_benchmark=True))
    try:
        result = dreamer.dream_array(frame)
        assert torch.backends.cudnn.benchmark
    finally:
        torch.backends.cudnn.benchmark = False
    assert result.dtype == np.uint8 and result.shape == frame.shape
    # the algorithms it picks sum in another order: rounding differences only
    assert mean_difference(result, float32_dream) < 0.1 * mean_difference(float32_dream, frame)


@pytest.fixture
def server_env(tmp_path):
    """The environment of test_server.py's env fixture: a server directory of the test's own."""
    directory = tmp_path / "servers"
    values = {
        **os.environ,
        "DREAMFLOW_SERVER_DIR": str(directory),
        "DREAMFLOW_SERVER_IDLE": str(LONG_IDLE),
    }
    values.pop("DREAMFLOW_SERVER", None)
    yield values
    kill_servers(directory)


def test_the_model_server_dreams_on_cuda_as_a_process_does(tmp_path, server_env):
    write_rgb(pattern_array(seed=1), tmp_path / "frame.png")
    cuda = job_settings(device="cuda")
    served = dream_frame(tmp_path, server_env, tmp_path / "frame.png", "served.png", settings=cuda)
    assert served.returncode == 0, served.stderr
    dreamed_by_server(served)
    local = dream_frame(
        tmp_path,
        {**server_env, "DREAMFLOW_SERVER": "off"},
        tmp_path / "frame.png",
        "local.png",
        settings=cuda,
    )
    assert local.returncode == 0, local.stderr
    assert "dreamflow: dreamed in-process: pid " in local.stderr
    frame, served, local = (
        read_rgb(tmp_path / name) for name in ("frame.png", "served.png", "local.png")
    )
    # Not byte for byte, as on the CPU (test_server.py): CUDA sums some gradients with atomic adds
    # in no fixed order (the adaptive average pooling of EfficientNet's squeeze-and-excite blocks,
    # some cuDNN backward algorithms), so two processes may round a few pixels apart
    assert mean_difference(served, local) < 0.1 * mean_difference(local, frame)


@pytest.fixture
def raft_small_cache(tmp_path, monkeypatch):
    """Random-init raft_small weights in a torch cache of the test's own, as test_flow.py's
    torch_home and raft_small_file fixtures put them there."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    torch.manual_seed(0)
    weights = tmp_path / "my-raft-small.pth"
    torch.save(torchvision.models.optical_flow.raft_small(weights=None).state_dict(), weights)
    models.fetch_weights("raft_small", source=str(weights))


def test_raft_flow_on_cuda(raft_small_cache, tmp_path):
    previous = np.array(pattern_array(60, 90, seed=2))
    frame = np.roll(previous, 2, axis=1)
    backward, reliable = flow.compute_flow(previous, frame, method="raft_small", device="cuda")
    assert backward.dtype == np.float32 and backward.shape == (60, 90, 2)
    assert np.isfinite(backward).all()
    assert reliable.dtype == bool and reliable.shape == (60, 90)
    [(net, device)] = [
        entry
        for (method, where, path), entry in flow._RAFT_NETWORKS.items()
        if (method, where) == ("raft_small", "cuda") and path.startswith(str(tmp_path))
    ]
    assert device.type == "cuda" and next(net.parameters()).is_cuda


def test_device_auto_picks_cuda():
    assert pick_device("auto") == torch.device("cuda")
    assert Dreamer(settings(device="auto")).device.type == "cuda"
