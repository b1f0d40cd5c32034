import json
import os

import pytest
import yaml

from dreamflow import config
from dreamflow.errors import DreamflowError
from helpers import assert_one_line_error, defaults, run_dreamflow, solid_image


def minimal(**sections):
    return {"inputs": {"clip": {"path": "clip.mp4"}}, **sections}


def error_of(raw):
    with pytest.raises(DreamflowError) as caught:
        config.validate(raw)
    return str(caught.value)


def _refusal(raw):
    """The message that the config `raw` is refused with, and what a user sees of it: the one line
    of `dreamflow status`, which reads config.yaml (written here, in the current directory) as the
    Snakefile does."""
    with pytest.raises(DreamflowError) as caught:
        config.check_inputs(config.validate(raw))
    message = str(caught.value)
    with open("config.yaml", "w") as handle:
        yaml.safe_dump(raw, handle)
    line = assert_one_line_error(run_dreamflow("status"))
    assert line == f"dreamflow: error: config.yaml: {message}"
    return message


def test_validate_fills_every_default():
    validated = config.validate(minimal())
    assert validated["work_dir"] == "work"
    assert validated["results_dir"] == "results"
    assert validated["resources"] == {"dream_threads": "auto", "ffmpeg_threads": 2}
    assert validated["dream"]["model"] == "efficientnet_lite0"
    assert validated["dream"]["layers"] is None
    assert config.settings_for(validated, "clip")["dream"]["layers"] == ["block10"]
    assert validated["dream"]["octaves"] == 3
    assert validated["blend"]["mode"] == "none"
    assert validated["frames"]["format"] == "png"
    assert validated["frames"]["start"] is None
    assert validated["encode"] == {"codec": "libx264", "crf": 18, "preset": "medium", "audio": True}


def test_validate_keeps_given_values_and_does_not_modify_its_argument():
    raw = minimal(dream={"octaves": 5})
    snapshot = json.dumps(raw, sort_keys=True)
    validated = config.validate(raw)
    assert validated["dream"]["octaves"] == 5
    assert validated["dream"]["iterations"] == 10
    assert json.dumps(raw, sort_keys=True) == snapshot


def test_validate_requires_inputs():
    assert "'inputs' is a required property" in error_of({})


def test_validate_rejects_a_non_mapping():
    with pytest.raises(DreamflowError, match="mapping"):
        config.validate(["inputs"])


def test_unknown_top_level_key_is_named_with_a_suggestion():
    message = error_of(minimal(dreem={}))
    assert "unknown key 'dreem'" in message
    assert "did you mean 'dream'?" in message


def test_unknown_section_key_is_named_with_its_section_and_a_suggestion():
    message = error_of(minimal(dream={"layer": ["block1"]}))
    assert message.startswith("config key dream:")
    assert "unknown key 'layer' (did you mean 'layers'?)" in message
    assert "allowed keys:" in message and "iterations" in message


def test_unknown_key_in_an_input_override_names_the_input():
    raw = {"inputs": {"clip": {"path": "clip.mp4", "dream": {"iteration": 3}}}}
    message = error_of(raw)
    assert message.startswith("config key inputs.clip.dream:")
    assert "did you mean 'iterations'?" in message


def test_out_of_range_value_names_the_key():
    message = error_of(minimal(dream={"octaves": 0}))
    assert message.startswith("config key dream.octaves:")
    assert "minimum of 1" in message
    assert error_of(minimal(blend={"factor": 1.5})).startswith("config key blend.factor:")
    assert error_of(minimal(encode={"crf": 52})).startswith("config key encode.crf:")


def test_wrong_type_names_the_key():
    assert error_of(minimal(frames={"width": "wide"})).startswith("config key frames.width:")


def test_every_problem_is_reported_one_per_line():
    lines = error_of(minimal(dream={"octaves": 0, "iterations": 0})).splitlines()
    assert len(lines) == 2
    assert any(line.startswith("config key dream.octaves:") for line in lines)
    assert any(line.startswith("config key dream.iterations:") for line in lines)


def test_bad_enum_value_lists_the_allowed_values():
    message = error_of(minimal(dream={"model": "alexnet"}))
    assert message.startswith("config key dream.model: 'alexnet' is not allowed")
    assert (
        "allowed values: efficientnet_lite0, googlenet, inception_v3, vgg16, vgg19, resnet50"
        in message
    )


def test_bad_enum_value_in_an_override_names_the_input():
    raw = {"inputs": {"clip": {"path": "clip.mp4", "encode": {"preset": "quick"}}}}
    message = error_of(raw)
    assert message.startswith("config key inputs.clip.encode.preset:")
    assert "ultrafast" in message and "veryslow" in message


def test_override_of_one_dream_key_keeps_the_other_global_dream_keys():
    raw = {
        "inputs": {"a": {"path": "a.mp4", "dream": {"iterations": 3}}, "b": {"path": "b.mp4"}},
        "dream": {"octaves": 2, "layers": ["block4"]},
    }
    validated = config.validate(raw)
    assert validated["inputs"]["a"]["dream"] == {"iterations": 3}
    a, b = config.settings_for(validated, "a"), config.settings_for(validated, "b")
    assert a["dream"]["iterations"] == 3
    assert a["dream"]["octaves"] == 2
    assert a["dream"]["layers"] == ["block4"]
    assert a["dream"]["step_size"] == 1.5
    assert b["dream"]["iterations"] == 10
    assert a["blend"] == b["blend"] == validated["blend"]


def test_start_and_start_time_together_are_rejected():
    assert error_of(minimal(frames={"start": 2, "start_time": 1.0})) == (
        "config key frames: set start or start_time, not both"
    )


def test_end_and_end_time_together_are_rejected():
    assert "set end or end_time, not both" in error_of(minimal(frames={"end": 4, "end_time": 1.0}))


def test_cross_field_check_sees_an_override_merged_with_the_globals():
    raw = {
        "inputs": {"clip": {"path": "clip.mp4", "frames": {"start_time": 1.0}}},
        "frames": {"start": 2},
    }
    assert error_of(raw) == "config key inputs.clip.frames: set start or start_time, not both"


def test_end_before_start_is_rejected():
    assert error_of(minimal(frames={"start": 5, "end": 4})).startswith("config key frames.end:")
    assert error_of(minimal(frames={"start_time": 2.0, "end_time": 1.0})).startswith(
        "config key frames.end_time:"
    )


def test_blend_low_above_high_is_rejected():
    message = error_of(minimal(blend={"low": 0.9, "high": 0.2}))
    assert message.startswith("config key blend.low:")
    assert "0.9" in message and "0.2" in message


def test_unknown_layer_is_rejected_with_close_matches():
    message = error_of(minimal(dream={"layers": ["block100"]}))
    assert message.startswith("config key dream.layers: unknown layer 'block100'")
    assert "close matches: block10" in message


def test_default_layers_follow_the_overridden_model():
    validated = config.validate(
        {"inputs": {"clip": {"path": "clip.mp4", "dream": {"model": "googlenet"}}}}
    )
    assert config.settings_for(validated, "clip")["dream"]["layers"] == ["inception4c"]


def test_layer_is_checked_against_the_overridden_model():
    raw = {
        "inputs": {"clip": {"path": "clip.mp4", "dream": {"model": "googlenet"}}},
        "dream": {"layers": ["block10"]},
    }
    message = error_of(raw)
    assert message.startswith(
        "config key inputs.clip.dream.layers: unknown layer 'block10' for model googlenet"
    )


def test_layers_of_googlenet_are_accepted():
    validated = config.validate(
        minimal(dream={"model": "googlenet", "layers": ["inception4c", "inception3b"]})
    )
    assert validated["dream"]["layers"] == ["inception4c", "inception3b"]


def test_missing_weights_file_is_rejected(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    missing = str(tmp_path / "nope.pth")
    assert _refusal(minimal(dream={"weights": missing})) == (
        f"config key dream.weights: file not found: {missing}"
    )


def test_existing_weights_file_passes_validation(tmp_path):
    weights = tmp_path / "weights.pth"
    weights.write_bytes(b"checked when loaded, not here")
    assert config.validate(minimal(dream={"weights": str(weights)}))["dream"]["weights"] == str(
        weights
    )


def test_container_defaults_to_none_and_takes_a_docker_uri():
    assert config.validate(minimal())["container"] is None
    image = "docker://localhost/dreamflow:test"
    assert config.validate(minimal(container=image))["container"] == image


def test_container_takes_an_existing_sif_file(tmp_path):
    image = tmp_path / "dreamflow.sif"
    image.write_bytes(b"checked by apptainer when a job runs, not here")
    assert config.validate(minimal(container=str(image)))["container"] == str(image)


def test_missing_sif_file_is_rejected(tmp_path):
    missing = str(tmp_path / "nope.sif")
    assert (
        error_of(minimal(container=missing)) == f"config key container: file not found: {missing}"
    )


@pytest.mark.parametrize(
    "image",
    [
        "dreamflow:latest",
        "images/dreamflow.img",
        "library://user/dreamflow",
        "docker://",
        "docker://dream flow",
    ],
)
def test_container_of_another_form_is_rejected_naming_the_key(image):
    message = error_of(minimal(container=image))
    assert message.startswith("config key container: ")
    assert "a local Apptainer image file ending in .sif, or a docker:// URI" in message


def test_container_of_the_wrong_type_is_rejected_naming_the_key():
    assert error_of(minimal(container=3)).startswith("config key container: 3 is not of type")


def test_validate_section_checks_values_and_layers():
    config.validate_section("dream", defaults("dream"))
    with pytest.raises(DreamflowError, match=r"^config key dream\.iterations:"):
        config.validate_section("dream", defaults("dream", iterations=0))
    with pytest.raises(DreamflowError, match=r"^dream\.layers: unknown layer 'head2'"):
        config.validate_section("dream", defaults("dream", layers=["head2"]))


def test_check_inputs_reports_each_kind(tmp_path):
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"kind is decided by the name; probing happens later")
    folder = tmp_path / "shots"
    folder.mkdir()
    solid_image(folder / "a.png", "red")
    image = solid_image(tmp_path / "still.jpg", "blue")
    raw = {"inputs": {"v": {"path": str(video)}, "f": {"path": str(folder)}, "i": {"path": image}}}
    assert config.check_inputs(config.validate(raw)) == {"v": "video", "f": "folder", "i": "image"}


def test_check_inputs_names_a_missing_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    missing = str(tmp_path / "missing.mp4")
    message = _refusal({"inputs": {"clip": {"path": missing}}})
    assert message == f"config key inputs.clip.path: input not found: {missing}"


def test_check_inputs_rejects_a_folder_without_images(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "shots").mkdir()
    (tmp_path / "shots" / "notes.txt").write_text("not an image")
    (tmp_path / "shots" / ".hidden.png").write_bytes(b"")
    message = _refusal({"inputs": {"shots": {"path": "shots"}}})
    assert message.startswith("config key inputs.shots.path: input folder has no images")


def test_folder_images_are_in_natural_order_without_hidden_or_other_files(tmp_path):
    for name in ("img10.png", "img2.jpg", "img1.PNG", ".img0.png", "notes.txt", "img3.mp4"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "img4.png").mkdir()
    found = [os.path.basename(path) for path in config.folder_images(str(tmp_path))]
    assert found == ["img1.PNG", "img2.jpg", "img10.png"]


@pytest.mark.parametrize("threads", [4, "auto"])
def test_dream_threads_take_a_count_or_auto(threads):
    assert (
        config.validate(minimal(resources={"dream_threads": threads}))["resources"]["dream_threads"]
        == threads
    )


@pytest.mark.parametrize("threads", ["many", 0])
def test_bad_dream_threads_name_the_key(threads):
    message = error_of(minimal(resources={"dream_threads": threads}))
    assert message.startswith("config key resources.dream_threads:"), message


def test_a_value_fitting_no_alternative_says_what_is_expected():
    assert error_of(minimal(dream={"layers": 5})) == (
        "config key dream.layers: 5 is not allowed; "
        "expected a layer term or a list of terms or null"
    )
    assert error_of(minimal(resources={"dream_threads": "many"})) == (
        "config key resources.dream_threads: 'many' is not allowed; "
        "expected an integer >= 1 or 'auto'"
    )


def test_job_settings_are_checked_whole_and_against_the_schema():
    from dreamflow.job import BlendSettings, JobSettings

    dream = config.resolve_dream(defaults("dream"))
    config.validate_job_settings(JobSettings(dream))
    without_model = {key: value for key, value in dream.items() if key != "model"}
    with pytest.raises(DreamflowError, match="config key dream: missing model"):
        config.validate_job_settings(JobSettings(without_model))
    with pytest.raises(DreamflowError, match="config key zoom: missing angle, factor"):
        config.validate_job_settings(JobSettings(dream, zoom={"frames": 3}))
    config.validate_job_settings(BlendSettings(defaults("blend")))
    with pytest.raises(DreamflowError, match="config key blend.mode: 'fade' is not allowed"):
        config.validate_job_settings(BlendSettings(defaults("blend", mode="fade")))
    with pytest.raises(DreamflowError, match="config key blend.flow: 'lucas' is not allowed"):
        config.validate_job_settings(BlendSettings(defaults("blend", flow="lucas")))


def test_max_chain_must_leave_room_for_the_overlap_on_both_sides():
    assert "blend.max_chain: 8 must be more than twice blend.overlap (4)" in error_of(
        minimal(blend={"max_chain": 8})
    )
    config.validate(minimal(blend={"max_chain": 9}))


def test_scene_cuts_are_auto_none_or_frame_numbers():
    config.validate(minimal(scenes={"cuts": [12, 40]}))
    assert "config key scenes.cuts" in error_of(minimal(scenes={"cuts": "sometimes"}))
    assert "config key scenes.cuts" in error_of(minimal(scenes={"cuts": [0]}))
    assert "config key scenes.threshold" in error_of(minimal(scenes={"threshold": 0}))


def test_an_input_inside_the_results_or_work_folder_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for folder in ("results/x", "scratch/frames"):
        os.makedirs(folder)
    solid_image("results/x/x.png", "red")
    solid_image("scratch/frames/000001.png", "red")
    raw = {"inputs": {"x": {"path": "results/x/x.png"}}}
    assert _refusal(raw) == (
        "config key inputs.x.path: results/x/x.png is inside results_dir (results), where the "
        "workflow writes: copy it elsewhere and name the copy"
    )
    raw = {"inputs": {"x": {"path": "scratch/frames"}}, "work_dir": "./scratch"}
    assert "inside work_dir (./scratch)" in _refusal(raw)


def test_a_link_into_the_results_folder_is_refused_and_names_its_target(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    os.makedirs("results/x")
    target = solid_image("results/x/x.png", "red")
    os.makedirs("mine")
    os.symlink(os.path.abspath(target), os.path.join("mine", "still.png"))
    message = _refusal({"inputs": {"x": {"path": "mine/still.png"}}})
    assert message.startswith("config key inputs.x.path: mine/still.png (a link to ")
    assert "inside results_dir" in message


def test_a_guide_image_inside_the_results_folder_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    solid_image("still.png", "blue")
    os.makedirs("results/old")
    solid_image("results/old/old.png", "red")
    raw = {
        "inputs": {"x": {"path": "still.png", "dream": {"guide": "results/old/old.png"}}},
    }
    assert _refusal(raw).startswith("config key inputs.x.dream.guide: results/old/old.png is")


def test_a_path_with_a_line_break_is_refused_in_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    solid_image("two\nlines.png", "blue")
    message = _refusal({"inputs": {"x": {"path": "two\nlines.png"}}})
    assert message == (
        "config key inputs.x.path: 'two\\nlines.png' contains a line break or another control "
        "character: rename the file"
    )


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("clip.mp4", "clip.mp4"),
        ("-clip.mp4", "./-clip.mp4"),
        ("in:put/clip.mp4", "./in:put/clip.mp4"),
        ("media/a:b.mp4", "media/a:b.mp4"),  # a ':' after the first '/' names no protocol
        ("/abs/-clip.mp4", "/abs/-clip.mp4"),
        ("./-clip.mp4", "./-clip.mp4"),
    ],
)
def test_paths_that_commands_would_misread_get_a_leading_dot_slash(path, expected):
    assert config.unambiguous_path(path) == expected
