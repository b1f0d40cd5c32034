import os
import re
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
import torchvision

from dreamflow import flow, models
from dreamflow.errors import DreamflowError
from dreamflow.flow import FlowFileError, compute_flow, load_flow, save_flow, warp


def texture(height, width, seed, blur=3.0):
    """A smooth random grey texture in 0..255, float32: every pixel lies on a gradient that flow
    estimators can follow."""
    noise = np.random.default_rng(seed).random((height, width)).astype(np.float32)
    smooth = cv2.GaussianBlur(noise, (0, 0), blur)
    return (smooth - smooth.min()) / (smooth.max() - smooth.min()) * 255.0


def shifted_pair(dx, dy, height=140, width=200, margin=20):
    """(previous, frame) uint8 RGB, where the frame is the previous one moved by (dx, dy)."""
    base = texture(height + 2 * margin, width + 2 * margin, seed=0)
    moved = cv2.warpAffine(
        base,
        np.float32([[1, 0, dx], [0, 1, dy]]),
        base.shape[::-1],
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REFLECT,
    )
    crop = (slice(margin, margin + height), slice(margin, margin + width))

    def rgb(image):
        return np.repeat(image[crop][..., None], 3, axis=2).round().astype(np.uint8)

    return rgb(base), rgb(moved)


@pytest.mark.parametrize("method", ["dis", "farneback"])
def test_opencv_flow_recovers_a_shift_and_warp_lines_the_previous_frame_up(method):
    previous, frame = shifted_pair(2.5, -1.5)
    backward, reliable = compute_flow(previous, frame, method=method)
    assert backward.dtype == np.float32 and backward.shape == (140, 200, 2)
    assert reliable.dtype == bool and reliable.shape == (140, 200)
    # frame pixel x shows what was at x - (2.5, -1.5) in the previous frame
    assert np.median(backward[..., 0]) == pytest.approx(-2.5, abs=0.25)
    assert np.median(backward[..., 1]) == pytest.approx(1.5, abs=0.25)
    assert reliable.mean() > 0.9
    warped = warp(previous, backward).astype(np.float32)
    assert np.abs(warped - frame)[reliable].mean() < 1.0
    assert np.abs(previous.astype(np.float32) - frame).mean() > 5.0  # the frames do differ


def test_the_background_uncovered_behind_a_moving_square_is_unreliable():
    height, width = 180, 240
    background = np.repeat(texture(height, width, seed=1)[..., None], 3, axis=2)
    square = np.stack([texture(60, 60, seed=s, blur=2.0) for s in (2, 3, 4)], axis=2)

    def scene(left):
        image = background.copy()
        image[60:120, left : left + 60] = square
        return image.round().astype(np.uint8)

    backward, reliable = compute_flow(scene(80), scene(92), method="dis")
    assert np.median(backward[70:110, 100:145], axis=(0, 1)) == pytest.approx([-12, 0], abs=0.5)
    # columns 80..91 of the frame show background the square covered in the previous frame
    assert reliable[65:115, 82:90].mean() < 0.3
    assert np.concatenate([reliable[:40].ravel(), reliable[140:].ravel()]).mean() > 0.95


def test_frames_of_different_sizes_are_refused():
    with pytest.raises(DreamflowError, match="frames differ in size: 20x10 and 20x12"):
        compute_flow(np.zeros((10, 20, 3), np.uint8), np.zeros((12, 20, 3), np.uint8))


def test_importing_flow_does_not_import_torch():
    code = "import sys, dreamflow.flow; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


# --- flow files ---


def random_flow(height=37, width=53, seed=0):
    rng = np.random.default_rng(seed)
    backward = rng.uniform(-40, 40, (height, width, 2)).astype(np.float32)
    return backward, rng.random((height, width)) > 0.3


def test_flow_file_round_trip_keeps_the_mask_and_float16_precision(tmp_path):
    backward, reliable = random_flow()
    path = tmp_path / "pairs" / "flow_000002.npz"
    save_flow(path, backward, reliable, "dis")
    assert os.listdir(path.parent) == [path.name]  # no temporary left beside it
    loaded, loaded_reliable = load_flow(path, size=(37, 53))
    assert loaded.dtype == np.float32 and loaded.shape == (37, 53, 2)
    assert np.abs(loaded - backward).max() <= 1 / 64  # float16 below 64 px
    assert loaded_reliable.dtype == bool and np.array_equal(loaded_reliable, reliable)
    # compact: float16 and one bit a pixel, about half the float32 flow even for random values
    big_flow, big_reliable = random_flow(120, 160)
    save_flow(path, big_flow, big_reliable, "dis")
    assert path.stat().st_size < 0.55 * big_flow.nbytes


def test_flow_file_of_another_size_is_refused_naming_the_file(tmp_path):
    path = tmp_path / "flow.npz"
    save_flow(path, *random_flow(), "farneback")
    with pytest.raises(FlowFileError, match=re.escape(f"{path} is for 53x37 frames, not 54x37")):
        load_flow(path, size=(37, 54))


def test_an_unreadable_flow_file_is_a_one_line_error_naming_the_file(tmp_path):
    good = tmp_path / "good.npz"
    save_flow(good, *random_flow(), "dis")
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    text = tmp_path / "text.npz"
    text.write_text("not a flow\n")
    array = tmp_path / "array.npy"
    np.save(array, np.zeros(3))
    for path in (truncated, text, array, tmp_path / "missing.npz"):
        with pytest.raises(FlowFileError) as caught:
            load_flow(path)
        message = str(caught.value)
        assert str(path) in message and "\n" not in message
        assert isinstance(caught.value, DreamflowError)
    with pytest.raises(FlowFileError, match="flow file not found: "):
        load_flow(tmp_path / "missing.npz")


def test_a_flow_file_of_another_format_version_is_refused(tmp_path):
    path = tmp_path / "flow.npz"
    save_flow(path, *random_flow(), "dis")
    with np.load(path) as data:
        fields = dict(data)
    np.savez_compressed(path, **{**fields, "version": np.int64(99)})
    with pytest.raises(FlowFileError, match=f"{re.escape(str(path))} has format version 99"):
        load_flow(path)


def test_a_flow_file_whose_arrays_disagree_with_its_size_is_refused(tmp_path):
    path = tmp_path / "flow.npz"
    save_flow(path, *random_flow(), "dis")
    with np.load(path) as data:
        fields = dict(data)
    np.savez_compressed(path, **{**fields, "height": np.int64(36)})
    with pytest.raises(FlowFileError, match=f"{re.escape(str(path))} is corrupt"):
        load_flow(path)


# --- RAFT ---


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    home = tmp_path / "torch_home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    return home


@pytest.fixture(scope="module")
def raft_small_file(tmp_path_factory):
    """A random-init raft_small state dict, saved as torchvision's file is."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "my-raft-small.pth"
    torch.save(torchvision.models.optical_flow.raft_small(weights=None).state_dict(), path)
    return path


def test_flow_weights_table_matches_torchvision():
    from torchvision.models import optical_flow

    for method, (enum, file_name) in models.FLOW_WEIGHTS.items():
        assert method in flow.FLOW_METHODS
        assert models.weights_url(method).endswith("/" + file_name)
        assert models.weights_url(method) == getattr(optical_flow, enum).DEFAULT.url


def test_raft_computes_both_flows_of_a_frame_of_any_size_on_the_cpu(torch_home, raft_small_file):
    models.fetch_weights("raft_small", source=str(raft_small_file))
    previous, frame = shifted_pair(2.0, 1.0, height=60, width=90)
    backward, reliable = compute_flow(previous, frame, method="raft_small", device="cpu")
    assert backward.dtype == np.float32 and backward.shape == (60, 90, 2)
    assert np.isfinite(backward).all()
    assert reliable.dtype == bool and reliable.shape == (60, 90)
    # the network is loaded once per process
    assert compute_flow(previous, frame, method="raft_small", device="cpu")[0] == pytest.approx(
        backward
    )
    assert len([key for key in flow._RAFT_NETWORKS if str(torch_home) in key[2]]) == 1


def test_missing_raft_weights_name_the_cache_file_and_the_fetch_command(torch_home):
    frame = np.zeros((64, 64, 3), np.uint8)
    path = torch_home / "hub" / "checkpoints" / "raft_small_C_T_V2-01064c6d.pth"
    with pytest.raises(DreamflowError) as caught:
        compute_flow(frame, frame, method="raft_small", device="cpu")
    message = str(caught.value)
    assert f"raft_small flow weights not found at {path}" in message
    assert "`dreamflow fetch-models --model raft_small`" in message and "\n" not in message


def test_raft_weights_that_do_not_fit_are_a_one_line_error_naming_the_file(torch_home):
    path = torch_home / "hub" / "checkpoints" / "raft_large_C_T_SKHT_V2-ff5fadd5.pth"
    path.parent.mkdir(parents=True)
    torch.save(torchvision.models.optical_flow.raft_small(weights=None).state_dict(), path)
    frame = np.zeros((64, 64, 3), np.uint8)
    with pytest.raises(DreamflowError) as caught:
        compute_flow(frame, frame, method="raft_large", device="cpu")
    message = str(caught.value)
    assert message.startswith(f"weights file {path} does not fit model raft_large")
    assert "\n" not in message


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_raft_on_cuda_without_cuda_names_the_config_key(torch_home, raft_small_file):
    frame = np.zeros((64, 64, 3), np.uint8)
    with pytest.raises(DreamflowError, match="dream.device"):
        compute_flow(frame, frame, method="raft_small", device="cuda")


def test_fetch_places_raft_weights_where_the_flow_reads_them(torch_home, raft_small_file, capsys):
    target = models.fetch_weights("raft_small", source=str(raft_small_file))
    assert target == flow.raft_weights_file("raft_small")
    assert target == str(torch_home / "hub" / "checkpoints" / "raft_small_C_T_V2-01064c6d.pth")
    assert f"raft_small: weights from {raft_small_file} placed at {target}" in (
        capsys.readouterr().out
    )
    assert os.listdir(os.path.dirname(target)) == [os.path.basename(target)]
    assert models.model_of_weights_file(os.path.basename(target)) == "raft_small"


@pytest.mark.parametrize("content", ["text", "classifier"])
def test_fetch_refuses_a_file_that_is_not_raft_weights_and_leaves_nothing(
    torch_home, tmp_path, content
):
    source = tmp_path / "weights.pth"
    if content == "text":
        source.write_text("<html>not found</html>\n")
    else:
        torch.save(torchvision.models.resnet18(weights=None).state_dict(), source)
    with pytest.raises(DreamflowError, match=f"weights file {re.escape(str(source))} "):
        models.fetch_weights("raft_small", source=str(source))
    assert not os.listdir(torch_home / "hub" / "checkpoints")
