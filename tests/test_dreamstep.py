import numpy as np
import pytest

from dreamflow.dreamstep import Dreamer, blended_input, dream_frame_file, pick_device
from dreamflow.errors import DreamflowError
from dreamflow.images import read_rgb, write_rgb

from unit_helpers import defaults, pattern_array

FAST_DREAM = defaults("dream", octaves=1, iterations=1, jitter=2, device="cpu", layers=["block3"])


@pytest.fixture(scope="module")
def dreamer():
    return Dreamer(FAST_DREAM, threads=2)


def test_first_frame_is_dreamed_raw_even_when_blending():
    frame, previous = pattern_array(seed=1), pattern_array(seed=2)
    result = blended_input(frame, previous, defaults("blend", mode="constant", factor=1.0), 1)
    np.testing.assert_array_equal(result, frame)


def test_blend_factor_one_gives_the_previous_dream():
    frame, previous = pattern_array(seed=1), pattern_array(seed=2)
    result = blended_input(frame, previous, defaults("blend", mode="constant", factor=1.0), 2)
    np.testing.assert_array_equal(result, previous)


def test_blend_mixes_raw_frame_and_previous_dream():
    frame = np.full((4, 4, 3), 100, np.uint8)
    previous = np.full((4, 4, 3), 200, np.uint8)
    result = blended_input(frame, previous, defaults("blend", mode="constant", factor=0.25), 2)
    assert result.dtype == np.uint8
    assert result[0, 0].tolist() == [125, 125, 125]


def test_previous_dream_of_another_size_is_an_error():
    with pytest.raises(DreamflowError, match="previous dreamed frame has size 20x10, frame 3 has 64x36"):
        blended_input(pattern_array(), pattern_array(10, 20), defaults("blend", mode="constant"), 3)


def test_cuda_request_without_cuda_names_the_key():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    with pytest.raises(DreamflowError, match=r"dream\.device"):
        pick_device("cuda")
    assert pick_device("auto").type == "cpu"


def test_dream_frame_file_writes_a_dreamed_frame_of_the_same_size(dreamer, tmp_path):
    frame = pattern_array()
    write_rgb(frame, tmp_path / "000001.png")
    dream_frame_file(dreamer, str(tmp_path / "000001.png"), str(tmp_path / "out" / "000001.png"), 1,
                     defaults("blend"))
    dreamed = read_rgb(tmp_path / "out" / "000001.png")
    assert dreamed.shape == frame.shape
    assert not np.array_equal(dreamed, frame)


def test_blended_frame_without_its_previous_dream_is_an_error(dreamer, tmp_path):
    write_rgb(pattern_array(), tmp_path / "000002.png")
    with pytest.raises(DreamflowError, match="blend mode loop needs the previous dreamed frame for frame 2"):
        dream_frame_file(dreamer, str(tmp_path / "000002.png"), str(tmp_path / "out.png"), 2,
                         defaults("blend", mode="loop"))
    assert not (tmp_path / "out.png").exists()


def test_blended_frame_uses_its_previous_dream(dreamer, tmp_path):
    """With factor 1 the raw frame is ignored, so the result depends only on the previous dream."""
    write_rgb(pattern_array(seed=1), tmp_path / "a.png")
    write_rgb(pattern_array(seed=2), tmp_path / "b.png")
    write_rgb(pattern_array(seed=3), tmp_path / "previous.png")
    blend = defaults("blend", mode="constant", factor=1.0)
    for name in ("a", "b"):
        dream_frame_file(dreamer, str(tmp_path / f"{name}.png"), str(tmp_path / f"{name}-out.png"), 2, blend,
                         previous_path=str(tmp_path / "previous.png"))
    np.testing.assert_array_equal(read_rgb(tmp_path / "a-out.png"), read_rgb(tmp_path / "b-out.png"))
