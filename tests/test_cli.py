import json
import os
import subprocess
import sys

import torch

from dreamflow import models
from dreamflow.images import read_rgb, write_rgb

from unit_helpers import pattern_array

FAST = ["--octaves", "1", "--iterations", "2", "--jitter", "4", "--device", "cpu", "--threads", "2"]


def dreamflow(*arguments, cwd=None):
    return subprocess.run([sys.executable, "-m", "dreamflow", *map(str, arguments)],
                          capture_output=True, text=True, cwd=cwd)


def assert_one_line_error(result):
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("dreamflow: error: ")
    return lines[0]


def test_layers_of_googlenet_are_listed_one_per_line():
    result = dreamflow("layers", "--model", "googlenet")
    assert result.returncode == 0
    assert result.stdout.splitlines() == list(models.GOOGLENET_LAYERS)
    assert "inception4c" in result.stdout.splitlines()


def test_models_are_listed_with_descriptions():
    result = dreamflow("models")
    assert result.returncode == 0
    names = [line.split("\t")[0] for line in result.stdout.splitlines()]
    assert names == ["efficientnet_lite0", "googlenet"]


def test_layers_of_an_unknown_model_is_a_one_line_error():
    line = assert_one_line_error(dreamflow("layers", "--model", "vgg"))
    assert "unknown model 'vgg'" in line


def test_dream_writes_an_image_of_the_same_size(tmp_path):
    source = pattern_array(36, 64)
    write_rgb(source, tmp_path / "in.png")
    result = dreamflow("dream", tmp_path / "in.png", "-o", tmp_path / "out.png", "--layers", "block4", *FAST)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(tmp_path / "out.png")
    dreamed = read_rgb(tmp_path / "out.png")
    assert dreamed.shape == source.shape
    assert not (dreamed == source).all()


def test_dream_of_a_missing_image_is_a_one_line_error(tmp_path):
    missing = tmp_path / "missing.png"
    line = assert_one_line_error(dreamflow("dream", missing, "-o", tmp_path / "out.png", *FAST))
    assert str(missing) in line
    assert not (tmp_path / "out.png").exists()


def test_dream_with_an_unknown_layer_is_a_one_line_error(tmp_path):
    write_rgb(pattern_array(), tmp_path / "in.png")
    result = dreamflow("dream", tmp_path / "in.png", "-o", tmp_path / "out.png", "--layers", "block100", *FAST)
    line = assert_one_line_error(result)
    assert "unknown layer 'block100'" in line and "close matches: block10" in line


def test_dream_with_several_bad_values_is_still_a_one_line_error(tmp_path):
    write_rgb(pattern_array(), tmp_path / "in.png")
    result = dreamflow("dream", tmp_path / "in.png", "-o", tmp_path / "out.png", "--device", "cpu",
                       "--octaves", "0", "--iterations", "0")
    line = assert_one_line_error(result)
    assert "dream.octaves" in line and "dream.iterations" in line


def test_dream_with_a_pickled_model_as_weights_is_a_one_line_error(tmp_path):
    write_rgb(pattern_array(), tmp_path / "in.png")
    weights = tmp_path / "model.pth"
    torch.save(torch.nn.Linear(2, 2), weights)
    result = dreamflow("dream", tmp_path / "in.png", "-o", tmp_path / "out.png", "--weights", weights, *FAST)
    assert str(weights) in assert_one_line_error(result)


def test_probe_writes_json_for_an_image(tmp_path):
    write_rgb(pattern_array(36, 64), tmp_path / "still.png")
    result = dreamflow("probe", tmp_path / "still.png", "-o", tmp_path / "probe.json")
    assert result.returncode == 0, result.stderr
    probed = json.loads((tmp_path / "probe.json").read_text())
    assert (probed["kind"], probed["width"], probed["height"], probed["frame_count"]) == ("image", 64, 36, 1)


def test_probe_of_a_missing_input_is_a_one_line_error(tmp_path):
    line = assert_one_line_error(dreamflow("probe", tmp_path / "gone.mp4", "-o", tmp_path / "probe.json"))
    assert "input not found" in line
    assert os.listdir(tmp_path) == []


def test_invalid_settings_json_is_a_one_line_error(tmp_path):
    write_rgb(pattern_array(), tmp_path / "still.png")
    assert dreamflow("probe", tmp_path / "still.png", "-o", tmp_path / "probe.json").returncode == 0
    result = dreamflow("extract", "--probe", tmp_path / "probe.json", "--settings", "{not json",
                       "-o", tmp_path / "frames")
    assert "--settings is not valid JSON" in assert_one_line_error(result)


def test_extract_with_a_missing_probe_file_is_a_one_line_error(tmp_path):
    result = dreamflow("extract", "--probe", tmp_path / "missing.json", "--settings", "{}", "-o", tmp_path / "frames")
    assert f"file not found: {tmp_path / 'missing.json'}" in assert_one_line_error(result)
