import json
import os
import subprocess
import sys

import torch
import torchvision

from dreamflow import __version__, models
from dreamflow.images import read_rgb, write_rgb
from helpers import TINY_DREAM_OPTIONS, assert_one_line_error, pattern_array

FAST = [*TINY_DREAM_OPTIONS, "--device", "cpu", "--threads", "2"]


def dreamflow(*arguments, cwd=None, env=None):
    return subprocess.run(
        [sys.executable, "-m", "dreamflow", *map(str, arguments)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, **(env or {})},
    )


def test_layers_of_googlenet_are_listed_one_per_line_with_shapes_and_the_default_marked():
    result = dreamflow("layers", "--model", "googlenet")
    assert result.returncode == 0, result.stderr
    rows = [line.split("\t") for line in result.stdout.splitlines()]
    assert [row[0] for row in rows] == list(models.GOOGLENET_LAYERS)
    assert rows[0] == ["conv1", "64 x 112 x 112"]  # 224x224 by default
    assert [row[0] for row in rows if row[-1] == "default"] == ["inception4c"]
    assert ["inception4c", "512 x 14 x 14", "default"] in rows


def test_layers_of_vgg16_at_a_given_size():
    result = dreamflow("layers", "--model", "vgg16", "--size", "64x64")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "conv1_1\t64 x 64 x 64"
    assert "relu4_3\t512 x 8 x 8\tdefault" in lines
    assert lines[-1] == "pool5\t512 x 2 x 2"


def test_layers_a_small_input_cannot_reach_are_marked():
    result = dreamflow("layers", "--model", "inception_v3", "--size", "64x48")
    assert result.returncode == 0, result.stderr
    assert "mixed_7c\t(a 64x48 input is too small)" in result.stdout.splitlines()


def test_layers_with_a_malformed_size_is_a_usage_error():
    result = dreamflow("layers", "--model", "vgg16", "--size", "64")
    assert result.returncode == 2
    assert "expected HEIGHTxWIDTH" in result.stderr


def test_models_are_listed_with_descriptions():
    result = dreamflow("models")
    assert result.returncode == 0
    names = [line.split("\t")[0] for line in result.stdout.splitlines()]
    assert names == [
        "efficientnet_lite0",
        "googlenet",
        "inception_v3",
        "resnet50",
        "vgg16",
        "vgg19",
    ]


def test_fetch_models_from_a_local_file_fills_the_cache_that_build_reads(tmp_path, monkeypatch):
    state = torchvision.models.googlenet(
        weights=None, aux_logits=True, init_weights=False
    ).state_dict()
    torch.save(state, tmp_path / "downloaded.pth")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    cache_file = models.weights_cache_file("googlenet")
    result = dreamflow(
        "fetch-models", "--model", "googlenet", "--from", tmp_path / "downloaded.pth"
    )
    assert result.returncode == 0, result.stderr
    assert cache_file in result.stdout
    model = models.build("googlenet")
    assert torch.equal(dict(model.stages)["conv1"].conv.weight, state["conv1.conv.weight"])
    again = dreamflow("fetch-models", "--model", "googlenet", "--model", "efficientnet_lite0")
    assert again.returncode == 0, again.stderr
    assert "already in the cache" in again.stdout and "nothing to fetch" in again.stdout


def test_fetch_models_of_a_corrupt_file_is_a_one_line_error_leaving_the_cache_empty(tmp_path):
    (tmp_path / "corrupt.pth").write_bytes(b"PK\x03\x04 truncated")
    result = dreamflow(
        "fetch-models",
        "--model",
        "vgg16",
        "--from",
        tmp_path / "corrupt.pth",
        env={"TORCH_HOME": str(tmp_path / "torch")},
    )
    corrupt = tmp_path / "corrupt.pth"
    assert_one_line_error(result, f"weights file {corrupt} could not be loaded as a state dict")
    assert os.listdir(tmp_path / "torch" / "hub" / "checkpoints") == []


def test_fetch_models_rejects_an_unknown_model_and_one_file_for_several_models(tmp_path):
    line = assert_one_line_error(dreamflow("fetch-models", "--model", "vgg"))
    assert "unknown model 'vgg'" in line and "all" in line
    line = assert_one_line_error(
        dreamflow("fetch-models", "--model", "all", "--from", tmp_path / "x.pth")
    )
    assert "exactly one --model" in line


def test_layers_of_an_unknown_model_is_a_one_line_error():
    line = assert_one_line_error(dreamflow("layers", "--model", "vgg"))
    assert "unknown model 'vgg'" in line


def test_dream_writes_an_image_of_the_same_size(tmp_path):
    source = pattern_array(36, 64)
    write_rgb(source, tmp_path / "in.png")
    result = dreamflow(
        "dream", tmp_path / "in.png", "-o", tmp_path / "out.png", "--layers", "block4", *FAST
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(tmp_path / "out.png")
    dreamed = read_rgb(tmp_path / "out.png")
    assert dreamed.shape == source.shape
    assert not (dreamed == source).all()


def test_dream_of_a_missing_image_is_a_one_line_error(tmp_path):
    missing = tmp_path / "missing.png"
    result = dreamflow("dream", missing, "-o", tmp_path / "out.png", *FAST)
    assert assert_one_line_error(result) == f"dreamflow: error: image not found: {missing}"
    assert not (tmp_path / "out.png").exists()


def test_dream_with_an_unknown_layer_is_a_one_line_error(tmp_path):
    write_rgb(pattern_array(), tmp_path / "in.png")
    result = dreamflow(
        "dream", tmp_path / "in.png", "-o", tmp_path / "out.png", "--layers", "block100", *FAST
    )
    line = assert_one_line_error(result)
    assert "unknown layer 'block100'" in line and "close matches: block10" in line


def test_dream_with_several_bad_values_is_still_a_one_line_error(tmp_path):
    write_rgb(pattern_array(), tmp_path / "in.png")
    result = dreamflow(
        "dream",
        tmp_path / "in.png",
        "-o",
        tmp_path / "out.png",
        "--device",
        "cpu",
        "--octaves",
        "0",
        "--iterations",
        "0",
    )
    line = assert_one_line_error(result)
    assert "dream.octaves" in line and "dream.iterations" in line


def test_dream_with_a_pickled_model_as_weights_is_a_one_line_error(tmp_path):
    write_rgb(pattern_array(), tmp_path / "in.png")
    weights = tmp_path / "model.pth"
    torch.save(torch.nn.Linear(2, 2), weights)
    result = dreamflow(
        "dream", tmp_path / "in.png", "-o", tmp_path / "out.png", "--weights", weights, *FAST
    )
    assert_one_line_error(result, f"weights file {weights} could not be loaded as a state dict")


def test_probe_writes_json_for_an_image(tmp_path):
    write_rgb(pattern_array(36, 64), tmp_path / "still.png")
    result = dreamflow("probe", tmp_path / "still.png", "-o", tmp_path / "probe.json")
    assert result.returncode == 0, result.stderr
    probed = json.loads((tmp_path / "probe.json").read_text())
    assert (probed["kind"], probed["width"], probed["height"], probed["frame_count"]) == (
        "image",
        64,
        36,
        1,
    )


def test_probe_of_a_missing_input_is_a_one_line_error(tmp_path):
    line = assert_one_line_error(
        dreamflow("probe", tmp_path / "gone.mp4", "-o", tmp_path / "probe.json")
    )
    assert "input not found" in line
    assert os.listdir(tmp_path) == []


def test_invalid_settings_json_is_a_one_line_error(tmp_path):
    write_rgb(pattern_array(), tmp_path / "still.png")
    assert dreamflow("probe", tmp_path / "still.png", "-o", tmp_path / "probe.json").returncode == 0
    result = dreamflow(
        "extract",
        "--probe",
        tmp_path / "probe.json",
        "--settings",
        "{not json",
        "-o",
        tmp_path / "frames",
    )
    assert "--settings is not valid JSON" in assert_one_line_error(result)


def test_extract_with_a_missing_probe_file_is_a_one_line_error(tmp_path):
    result = dreamflow(
        "extract",
        "--probe",
        tmp_path / "missing.json",
        "--settings",
        "{}",
        "-o",
        tmp_path / "frames",
    )
    assert f"file not found: {tmp_path / 'missing.json'}" in assert_one_line_error(result)


def test_dream_into_a_folder_names_the_file_after_the_settings(tmp_path):
    write_rgb(pattern_array(), tmp_path / "cat.png")
    out = tmp_path / "out"
    out.mkdir()
    result = dreamflow(
        "dream", tmp_path / "cat.png", "-o", out, "--layers", "block4:3", "block5", *FAST
    )
    assert result.returncode == 0, result.stderr
    expected = out / "cat_efficientnet_lite0_block4-3+block5_o1x1.4_i2_s1.5_j4_seed0.png"
    assert result.stdout.strip() == str(expected)
    assert read_rgb(expected).shape == pattern_array().shape


def test_dream_from_noise_of_any_size_is_reproducible(tmp_path):
    outputs = []
    for name in ("a.png", "b.png"):
        result = dreamflow(
            "dream", "--start", "noise", "--size", "29x47", "-o", tmp_path / name, *FAST
        )
        assert result.returncode == 0, result.stderr
        outputs.append((tmp_path / name).read_bytes())
    assert outputs[0] == outputs[1]
    assert read_rgb(tmp_path / "a.png").shape == (29, 47, 3)


def test_dream_without_image_or_noise_size_is_a_one_line_error(tmp_path):
    line = assert_one_line_error(dreamflow("dream", "-o", tmp_path / "x.png", *FAST))
    assert "give an input image, or --start noise with --size HxW" in line


def test_dream_with_an_out_of_range_channel_is_a_one_line_error(tmp_path):
    write_rgb(pattern_array(), tmp_path / "cat.png")
    result = dreamflow(
        "dream", tmp_path / "cat.png", "-o", tmp_path / "x.png", "--layers", "block4:999", *FAST
    )
    assert "channel 999 of layer block4 is out of range" in assert_one_line_error(result)
    assert not (tmp_path / "x.png").exists()


def sweep(tmp_path, *items):
    write_rgb(pattern_array(), tmp_path / "cat.png")
    command = ["sweep", tmp_path / "cat.png", "--layers", *items, "--columns", "2"]
    return dreamflow(*command, "-o", tmp_path / "sweep", *FAST)


def test_sweep_writes_one_image_per_item_and_a_contact_sheet(tmp_path):
    result = sweep(tmp_path, "block2", "block4+block5:1")
    assert result.returncode == 0, result.stderr
    # the workflow's names: sweep/<item>.png beside <name>_sweep.png
    assert sorted(os.listdir(tmp_path / "sweep")) == ["cat_sweep.png", "sweep"]
    items = sorted(os.listdir(tmp_path / "sweep" / "sweep"))
    assert items == ["01-block2.png", "02-block4+block5-1.png"]
    first, second = (read_rgb(tmp_path / "sweep" / "sweep" / item) for item in items)
    assert first.shape == second.shape == pattern_array().shape
    assert (first != second).any()  # each item dreamed with its own layers
    sheet = read_rgb(tmp_path / "sweep" / "cat_sweep.png")
    assert sheet.shape[1] > 2 * pattern_array().shape[1]


def test_sweep_checks_every_layer_before_dreaming(tmp_path):
    result = sweep(tmp_path, "block2", "blok9")
    assert "unknown layer 'blok9'" in assert_one_line_error(result)
    assert not (tmp_path / "sweep").exists()


def test_contact_sheet_needs_one_label_per_image(tmp_path):
    write_rgb(pattern_array(), tmp_path / "a.png")
    result = dreamflow(
        "contact-sheet",
        tmp_path / "a.png",
        tmp_path / "a.png",
        "--labels",
        "x",
        "-o",
        tmp_path / "s.png",
    )
    assert "2 images but 1 labels" in assert_one_line_error(result)


# ---- the frame steps and the coherence figure ----


def write_pan(folder, frames=4, shift=3):
    """Raw frames of a pan, 000001.png ..., and returns their folder."""
    folder.mkdir(parents=True, exist_ok=True)
    texture = pattern_array(36, 64 + shift * frames, seed=2)
    for number in range(1, frames + 1):
        part = texture[:, shift * (number - 1) : shift * (number - 1) + 64]
        write_rgb(part.copy(), folder / f"{number:06d}.png")
    return folder


def test_coherence_of_two_folders_writes_the_figures_and_the_plot(tmp_path):
    raw = write_pan(tmp_path / "raw")
    dreamed = tmp_path / "dreamed"
    dreamed.mkdir()
    for number in range(1, 5):  # a dream fixed on the screen: it ghosts
        frame = read_rgb(raw / f"{number:06d}.png").astype(int)
        frame[10:20, 10:30] += 60
        write_rgb(frame.clip(0, 255).astype("uint8"), dreamed / f"{number:06d}.png")
    result = dreamflow(
        "coherence", raw, dreamed, "-o", tmp_path / "c.json", "--plot", tmp_path / "c.png"
    )
    assert result.returncode == 0, result.stderr
    figures = json.loads((tmp_path / "c.json").read_text())
    assert figures["pairs"] == 3 and figures["e_warp_dreamed"] > 10 * figures["e_warp_raw"]
    assert result.stdout.startswith("E_warp dreamed ")
    assert read_rgb(tmp_path / "c.png").shape == (240, 640, 3)


def test_coherence_takes_overlap_frames_from_the_seams_folder(tmp_path):
    raw = write_pan(tmp_path / "raw")
    seams = tmp_path / "seams"
    seams.mkdir()
    write_rgb(pattern_array(36, 64, seed=9).copy(), seams / "000003.png")
    plain = dreamflow(
        "coherence", raw, "--frames-dir", raw, "--count", 4, "-o", tmp_path / "a.json"
    )
    seamed = dreamflow(
        "coherence",
        raw,
        "--frames-dir",
        raw,
        "--count",
        4,
        "--seams-dir",
        seams,
        "--seams",
        "3",
        "-o",
        tmp_path / "b.json",
    )
    assert plain.returncode == 0 and seamed.returncode == 0, seamed.stderr
    assert json.loads((tmp_path / "a.json").read_text())["strength"] == 0
    assert json.loads((tmp_path / "b.json").read_text())["strength"] > 0


def test_coherence_of_folders_of_different_lengths_is_a_one_line_error(tmp_path):
    raw = write_pan(tmp_path / "raw", frames=4)
    short = write_pan(tmp_path / "short", frames=3)
    line = assert_one_line_error(dreamflow("coherence", raw, short))
    assert str(raw) in line and str(short) in line


def test_flow_then_blend_from_the_command_line(tmp_path):
    raw = write_pan(tmp_path / "raw", frames=2)
    env = {"DREAMFLOW_SERVER": "off"}
    flow = dreamflow(
        "flow",
        "--previous-frame",
        raw / "000001.png",
        "--frame",
        raw / "000002.png",
        "-o",
        tmp_path / "flow.npz",
        env=env,
    )
    assert flow.returncode == 0, flow.stderr
    settings = json.dumps(
        {
            "blend": {
                "mode": "constant",
                "factor": 1.0,
                "flow": "dis",
                "carry": "detail",
                "low": 0.5,
                "high": 1.0,
                "period": 10,
                "seed": 0,
            },
            "dreamflow": __version__,  # the version the workflow's settings name, checked
        }
    )
    blend = dreamflow(
        "blend",
        "--number",
        2,
        "--frame",
        raw / "000002.png",
        "--previous",
        raw / "000001.png",
        "--previous-frame",
        raw / "000001.png",
        "--flow",
        tmp_path / "flow.npz",
        "--settings",
        settings,
        "-o",
        tmp_path / "start.png",
        env=env,
    )
    assert blend.returncode == 0, blend.stderr
    # the previous dream is its raw frame: no detail to carry, the start image is raw frame 2
    difference = read_rgb(tmp_path / "start.png").astype(int) - read_rgb(raw / "000002.png")
    assert abs(difference).max() <= 1


def test_frame_step_commands_name_bad_values_in_one_line(tmp_path):
    raw = write_pan(tmp_path / "raw", frames=2)
    bad_method = dreamflow(
        "flow",
        "--previous-frame",
        raw / "000001.png",
        "--frame",
        raw / "000002.png",
        "--method",
        "lucas",
        "-o",
        tmp_path / "f.npz",
    )
    assert "'method' must be one of dis" in assert_one_line_error(bad_method)
    weight = dreamflow(
        "crossfade", raw / "000001.png", raw / "000002.png", "--weight", 2, "-o", tmp_path / "x.png"
    )
    assert "--weight: 2.0 is not between 0 and 1" in assert_one_line_error(weight)
    scenes = dreamflow(
        "scenes",
        "--frames",
        raw,
        "--settings",
        '{"cuts": [9], "threshold": 0.3}',
        "-o",
        tmp_path / "s.json",
    )
    assert "scenes.cuts" in assert_one_line_error(scenes)
    assert not any(tmp_path.glob("*.npz")) and not (tmp_path / "s.json").exists()


def test_a_named_command_gets_its_own_parser_alone_and_commands_lists_every_command():
    from dreamflow.cli import COMMANDS, build_parser

    def choices(parser):
        return tuple(parser._subparsers._group_actions[0].choices)

    assert choices(build_parser()) == COMMANDS
    assert choices(build_parser("no-such-command")) == COMMANDS  # argparse lists them in the error
    for command in COMMANDS:
        assert choices(build_parser(command)) == (command,)
    frame = build_parser("dream-frame").parse_args(
        ["dream-frame", "--number", "2", "--settings", "{}", "-o", "out.png"]
    )
    assert (frame.number, frame.output, frame.prepared) == (2, "out.png", False)


def test_a_full_disk_and_an_unforeseen_os_error_are_one_line_each(tmp_path):
    from helpers import fill, small_disk

    write_rgb(pattern_array(seed=6), tmp_path / "dreamed.png")
    with small_disk(tmp_path / "disk", 64) as disk:
        fill(disk, leave_bytes=512)
        line = assert_one_line_error(
            dreamflow("publish", "-o", disk / "x.png", "--", tmp_path / "dreamed.png")
        )
        assert line == f"dreamflow: error: cannot write {disk / 'x.png'}: No space left on device"
    (tmp_path / "probe.json").mkdir()
    line = assert_one_line_error(
        dreamflow("extract", "--probe", tmp_path / "probe.json", "--settings", "{}", "-o", "f")
    )
    assert line == f"dreamflow: error: {tmp_path / 'probe.json'}: Is a directory"
