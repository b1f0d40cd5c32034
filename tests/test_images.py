import os
import stat

import numpy as np
import pytest
import torch

from dreamflow.errors import DreamflowError
from dreamflow.images import atomic_path, publish, read_rgb, to_array, to_tensor, write_rgb
from helpers import (
    assert_one_line_error,
    fill,
    pattern_array,
    png_claiming_size,
    run_dreamflow,
    small_disk,
)


def test_png_round_trip_is_lossless(tmp_path):
    array = pattern_array()
    write_rgb(array, tmp_path / "frame.png")
    np.testing.assert_array_equal(read_rgb(tmp_path / "frame.png"), array)


def test_jpg_quality_is_applied(tmp_path):
    array = pattern_array(seed=1)
    write_rgb(array, tmp_path / "low.jpg", jpg_quality=5)
    write_rgb(array, tmp_path / "high.jpg", jpg_quality=100)
    assert os.path.getsize(tmp_path / "low.jpg") < os.path.getsize(tmp_path / "high.jpg")
    assert read_rgb(tmp_path / "low.jpg").shape == array.shape


def test_read_rgb_converts_to_three_channels(tmp_path):
    from PIL import Image

    Image.new("L", (5, 4), 100).save(tmp_path / "grey.png")
    Image.new("RGBA", (5, 4), (1, 2, 3, 4)).save(tmp_path / "alpha.png")
    assert read_rgb(tmp_path / "grey.png").shape == (4, 5, 3)
    assert read_rgb(tmp_path / "alpha.png")[0, 0].tolist() == [1, 2, 3]


def test_write_rgb_creates_missing_folders(tmp_path):
    write_rgb(pattern_array(), tmp_path / "a" / "b" / "frame.png")
    assert read_rgb(tmp_path / "a" / "b" / "frame.png").shape == (36, 64, 3)


def test_failed_save_leaves_no_partial_file_and_keeps_the_old_one(tmp_path):
    target = tmp_path / "frame.jpg"
    write_rgb(pattern_array(seed=1), target)
    before = target.read_bytes()
    with pytest.raises(ValueError):
        write_rgb(pattern_array(seed=2), target, jpg_quality="best")
    assert target.read_bytes() == before
    assert os.listdir(tmp_path) == ["frame.jpg"]


def test_atomic_path_publishes_nothing_when_the_block_fails(tmp_path):
    target = tmp_path / "video.mp4"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as temporary:
            with open(temporary, "wb") as handle:
                handle.write(b"half a video")
            raise RuntimeError("encoder crashed")
    assert os.listdir(tmp_path) == []


def test_atomic_path_publishes_the_file_when_the_block_succeeds(tmp_path):
    target = tmp_path / "probe.json"
    with atomic_path(target) as temporary:
        assert os.path.dirname(temporary) == str(tmp_path)
        assert not target.exists()
        with open(temporary, "w") as handle:
            handle.write("{}")
    assert target.read_text() == "{}"
    assert os.listdir(tmp_path) == ["probe.json"]


def test_written_files_get_the_same_permissions_as_a_plain_open(tmp_path):
    """Results are shared files: the temporary file must not keep mkstemp's owner-only mode."""
    (tmp_path / "plain.png").write_bytes(b"")
    expected = stat.S_IMODE(os.stat(tmp_path / "plain.png").st_mode)
    write_rgb(pattern_array(), tmp_path / "frame.png")
    assert stat.S_IMODE(os.stat(tmp_path / "frame.png").st_mode) == expected


def test_unsupported_suffix_is_rejected_naming_the_path(tmp_path):
    target = tmp_path / "frame.gif"
    with pytest.raises(DreamflowError, match="frame.gif"):
        write_rgb(pattern_array(), target)
    assert os.listdir(tmp_path) == []


def test_read_rgb_of_a_non_image_names_the_path(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("this is text")
    with pytest.raises(DreamflowError) as caught:
        read_rgb(path)
    assert str(caught.value).startswith(f"cannot read image {path}")


def test_read_rgb_of_a_missing_file_names_the_path(tmp_path):
    path = tmp_path / "absent.png"
    with pytest.raises(DreamflowError, match="image not found") as caught:
        read_rgb(path)
    assert str(path) in str(caught.value)


def test_tensor_conversion_round_trips_exactly():
    array = pattern_array()
    tensor = to_tensor(array.copy())
    assert tensor.shape == (1, 3, 36, 64)
    assert tensor.dtype == torch.float32
    assert 0.0 <= float(tensor.min()) and float(tensor.max()) <= 1.0
    np.testing.assert_array_equal(to_array(tensor), array)


def test_to_array_clamps_out_of_range_values():
    tensor = torch.tensor([-0.5, 0.5, 1.5]).reshape(1, 3, 1, 1)
    assert to_array(tensor).reshape(-1).tolist() == [0, 128, 255]


def test_an_image_claiming_a_huge_size_is_refused_naming_the_file(tmp_path):
    png_claiming_size(tmp_path / "bomb.png", 30000, 30000)
    with pytest.raises(DreamflowError, match=r"^cannot read image .*bomb\.png: Image size"):
        read_rgb(tmp_path / "bomb.png")
    # the workflow's first step on an image input
    result = run_dreamflow("probe", tmp_path / "bomb.png", "-o", tmp_path / "probe.json")
    assert_one_line_error(result, f"cannot read image {tmp_path / 'bomb.png'}: Image size")


@pytest.mark.parametrize("keep", [0.3, 0.9])
def test_a_truncated_image_is_refused_naming_the_file(tmp_path, keep):
    write_rgb(pattern_array(seed=3), tmp_path / "whole.png")
    data = (tmp_path / "whole.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(DreamflowError, match=r"^cannot read image .*cut\.png: "):
        read_rgb(tmp_path / "cut.png")
    result = run_dreamflow("probe", tmp_path / "cut.png", "-o", tmp_path / "probe.json")
    assert_one_line_error(result, f"cannot read image {tmp_path / 'cut.png'}: ")


def test_a_full_disk_is_one_error_naming_the_file_and_leaves_no_partial_file(tmp_path):
    with small_disk(tmp_path / "disk", 64) as disk:
        fill(disk, leave_bytes=2048)
        with pytest.raises(DreamflowError) as caught:
            write_rgb(pattern_array(480, 640, seed=4), disk / "frame.png")
        assert str(caught.value) == f"cannot write {disk / 'frame.png'}: No space left on device"
        assert sorted(os.listdir(disk)) == ["filler"]


def test_publish_copies_whole_files_only(tmp_path):
    write_rgb(pattern_array(seed=5), tmp_path / "dreamed.png")
    publish(tmp_path / "dreamed.png", tmp_path / "results" / "x.png")
    assert (tmp_path / "results" / "x.png").read_bytes() == (tmp_path / "dreamed.png").read_bytes()
    with small_disk(tmp_path / "disk", 64) as disk:
        fill(disk, leave_bytes=1024)
        with pytest.raises(DreamflowError, match=r"No space left on device$"):
            publish(tmp_path / "dreamed.png", disk / "x.png")
        assert sorted(os.listdir(disk)) == ["filler"]
    with pytest.raises(DreamflowError, match=r"^cannot read .*missing\.png: No such file"):
        publish(tmp_path / "missing.png", tmp_path / "y.png")
