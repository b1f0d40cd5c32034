"""End to end: real Snakemake, real ffmpeg, real torch, on tiny inputs."""

import itertools
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dreamflow.images import read_rgb
from dreamflow.sheet import GAP, LABEL_HEIGHT
from helpers import (
    TINY_DREAM,
    TINY_DREAM_OPTIONS,
    Workflow,
    assert_dreamed,
    assert_no_traceback,
    assert_says,
    copy_workflow,
    dream_change,
    ffprobe_streams,
    fill,
    least_dream_change,
    make_video,
    png_claiming_size,
    small_disk,
    tiny_config,
    truncated_video,
)

pytestmark = pytest.mark.workflow

FRAMES = [f"{n:06d}.png" for n in range(1, 7)]


def dreamed(flow, frame):
    return flow.path("work", "tiny", "dreamed", frame)


def test_video_keeps_fps_frame_count_and_audio(finished_plain):
    flow = Workflow(finished_plain)
    video, audio = ffprobe_streams(flow.path("results", "tiny", "tiny.mp4"))
    assert video["codec_type"] == "video"
    assert video["avg_frame_rate"] == "6/1"
    assert video["nb_frames"] == "6"
    assert audio["codec_type"] == "audio"
    assert abs(float(audio["duration"]) - 1.0) < 0.1
    assert sorted(os.listdir(flow.path("work", "tiny", "dreamed"))) == FRAMES


def test_dreamed_frames_differ_from_the_source(finished_plain):
    flow = Workflow(finished_plain)
    for frame in FRAMES:
        assert_dreamed(flow.path("work", "tiny", "frames", frame), dreamed(flow, frame), TINY_DREAM)


def test_nothing_to_do_on_an_unchanged_rerun(finished_plain, tmp_path):
    flow = copy_workflow(finished_plain, tmp_path / "copy")
    result = flow.run()
    assert result.returncode == 0, result.output
    assert "Nothing to be done" in result.output


def test_deleting_two_frames_reruns_exactly_those_and_encode(finished_plain, tmp_path):
    flow = copy_workflow(finished_plain, tmp_path / "copy")
    dreamed(flow, "000002.png").unlink()
    dreamed(flow, "000005.png").unlink()
    result = flow.run()
    assert result.returncode == 0, result.output
    assert flow.finished(result, "dream_frame") == 2
    assert flow.dreamed_in_run(result) == [2, 5]
    assert flow.finished(result, "encode") == 1
    assert flow.finished(result, "extract_frames") == 0


def test_blend_chain_is_an_explicit_dag_edge_through_flow_and_blend_steps(finished_blend, tmp_path):
    flow = copy_workflow(finished_blend, tmp_path / "copy")
    edges = flow.rule_edges()
    assert {
        ("extract_frames", "scenes"),
        ("flow", "blend"),
        ("blend", "dream_frame"),
        ("dream_frame", "blend"),
        ("dream_frame", "encode"),
        ("dream_frame", "coherence"),
    } <= edges
    # flow reads raw frames only (files of the extraction's folder): it never waits for a dream
    assert not {a for a, b in edges if b == "flow"} & {"dream_frame", "blend"}
    files = flow.inputs_of_outputs()
    work = "work/tiny"
    for n in range(2, 7):
        assert files[f"{work}/blended/{n:06d}.png"] == (
            "blend",
            [
                f"{work}/dreamed/{n - 1:06d}.png",
                f"{work}/flow/{n:06d}.npz",
                f"{work}/frames/{n - 1:06d}.png",
                f"{work}/frames/{n:06d}.png",
            ],
        )
        assert files[f"{work}/dreamed/{n:06d}.png"] == (
            "dream_frame",
            [f"{work}/blended/{n:06d}.png"],
        )
    assert files[f"{work}/dreamed/000001.png"] == ("dream_frame", [f"{work}/frames/000001.png"])
    assert f"{work}/blended/000001.png" not in files and f"{work}/flow/000001.npz" not in files


def test_no_blend_has_no_edges_between_frames(finished_plain, tmp_path):
    flow = copy_workflow(finished_plain, tmp_path / "copy")
    edges = flow.rule_edges()
    assert ("dream_frame", "dream_frame") not in edges
    assert not {rule for edge in edges for rule in edge} & {"flow", "blend", "scenes"}


def test_blend_deleting_frame_k_reruns_k_to_end_only(finished_blend, tmp_path):
    flow = copy_workflow(finished_blend, tmp_path / "copy")
    before = {frame: dreamed(flow, frame).read_bytes() for frame in FRAMES[:3]}
    dreamed(flow, "000004.png").unlink()
    result = flow.run()
    assert result.returncode == 0, result.output
    assert flow.dreamed_in_run(result) == [4, 5, 6]
    assert {frame: dreamed(flow, frame).read_bytes() for frame in FRAMES[:3]} == before


def test_blend_carries_the_previous_dream(finished_plain, finished_blend):
    plain, blended = Workflow(finished_plain), Workflow(finished_blend)
    # frame 1 has no predecessor, so blending cannot change it
    assert dream_change(dreamed(plain, FRAMES[0]), dreamed(blended, FRAMES[0])) == 0
    # every later frame starts from its raw frame with the previous dream's detail carried in
    # (factor 0.5, where the flow is reliable): about half a dream's change, and its dream moves
    # as far from the plain one; with nothing carried both would be 0
    least = 0.5 * least_dream_change(TINY_DREAM)
    for frame in FRAMES[1:]:
        start = blended.path("work", "tiny", "blended", frame)
        carried = dream_change(blended.path("work", "tiny", "frames", frame), start)
        assert carried >= 0.5 * least, (frame, carried)
        moved = dream_change(dreamed(plain, frame), dreamed(blended, frame))
        assert moved >= least, (frame, moved)


@pytest.mark.parametrize(
    ("section", "change", "extracts", "dreams"),
    [
        ("frames", {"width": 32}, 1, 6),
        ("dream", {"step_size": 3.0}, 0, 6),
    ],
    ids=[
        "a frames setting re-extracts and reruns every dream",
        "a dream parameter reruns the dreams",
    ],
)
def test_a_changed_setting_reruns_what_depends_on_it(
    finished_plain, tmp_path, section, change, extracts, dreams
):
    flow = copy_workflow(finished_plain, tmp_path / "copy")
    config = flow.read_config()
    config[section] = {**config.get(section, {}), **change}
    flow.write_config(config)
    result = flow.run()
    assert result.returncode == 0, result.output
    assert flow.finished(result, "extract_frames") == extracts
    assert flow.finished(result, "dream_frame") == dreams
    assert flow.finished(result, "encode") == 1


def x264_options(path):
    """The settings libx264 wrote into the video's stream (its "options:" text), as a dict."""
    text = Path(path).read_bytes().split(b"options: ", 1)[1].split(b"\0", 1)[0].decode()
    return dict(option.split("=", 1) for option in text.split() if "=" in option)


def test_encode_crf_and_preset_reach_the_encoder_and_only_the_encode_reruns(
    finished_plain, tmp_path
):
    flow = copy_workflow(finished_plain, tmp_path / "copy")
    video = flow.path("results", "tiny", "tiny.mp4")
    before, size = x264_options(video), video.stat().st_size
    # the defaults: crf 18, preset medium (CABAC on, subpixel refinement 7)
    assert (before["crf"], before["cabac"], before["subme"]) == ("18.0", "1", "7")
    config = flow.read_config()
    config["encode"] = {"crf": 40, "preset": "ultrafast"}
    flow.write_config(config)
    result = flow.run()
    assert result.returncode == 0, result.output
    ran = {
        rule: flow.finished(result, rule) for rule in ("extract_frames", "dream_frame", "encode")
    }
    assert ran == {"extract_frames": 0, "dream_frame": 0, "encode": 1}
    after = x264_options(video)
    assert (after["crf"], after["cabac"], after["subme"]) == ("40.0", "0", "0")
    assert video.stat().st_size < size  # coarser quantisation: fewer bytes
    (stream, _) = ffprobe_streams(video)
    assert stream["nb_read_frames"] == "6"


def test_same_seed_gives_byte_identical_frames(finished_plain, tmp_path):
    flow = Workflow(tmp_path)
    make_video(tmp_path / "tiny.mp4")
    flow.write_config(tiny_config("tiny.mp4"))
    assert flow.run().returncode == 0
    first = Workflow(finished_plain)
    for frame in FRAMES:
        assert dreamed(flow, frame).read_bytes() == dreamed(first, frame).read_bytes(), frame


def test_frame_range_width_and_audio_trim(project):
    make_video(project.path("long.mp4"), frames=12, fps=6, size="96x54")
    project.write_config(tiny_config("long.mp4", frames={"start": 4, "end": 9, "width": 64}))
    result = project.run()
    assert result.returncode == 0, result.output
    assert len(os.listdir(project.path("work", "tiny", "dreamed"))) == 6
    assert Image.open(project.path("work", "tiny", "dreamed", "000001.png")).size == (64, 36)
    video, audio = ffprobe_streams(project.path("results", "tiny", "tiny.mp4"))
    assert video["nb_frames"] == "6"
    assert abs(float(audio["duration"]) - 1.0) < 0.1


def test_image_folder_in_natural_order_and_single_image(project):
    folder = project.path("shots")
    folder.mkdir()
    colours = {"img1.png": (255, 0, 0), "img2.png": (0, 255, 0), "img10.png": (0, 0, 255)}
    for name, colour in colours.items():
        Image.new("RGB", (48, 32), colour).save(folder / name)
    Image.new("RGB", (40, 30), (200, 100, 50)).save(project.path("still.jpg"))
    config = tiny_config("shots")
    config["inputs"]["still"] = {"path": "still.jpg", "frames": {"format": "png"}}
    project.write_config(config)
    result = project.run()
    assert result.returncode == 0, result.output
    second = Image.open(project.path("work", "tiny", "frames", "000002.png")).getpixel((5, 5))
    assert second == (0, 255, 0)  # img2 comes before img10
    (video,) = ffprobe_streams(project.path("results", "tiny", "tiny.mp4"))
    assert video["nb_frames"] == "3" and video["avg_frame_rate"] == "25/1"
    assert Image.open(project.path("results", "still", "still.png")).size == (40, 30)


def test_per_input_override_changes_only_that_input(project):
    make_video(project.path("a.mp4"), frames=2)
    make_video(project.path("b.mp4"), frames=2)
    config = tiny_config("a.mp4")
    config["inputs"] = {"a": {"path": "a.mp4"}, "b": {"path": "b.mp4", "dream": {"seed": 7}}}
    project.write_config(config)
    assert project.run().returncode == 0
    config["inputs"]["b"]["dream"]["seed"] = 8
    project.write_config(config)
    result = project.run()
    assert result.returncode == 0, result.output
    assert re.findall(r"Dreaming frame \d+ of (\w+)", result.output) == ["b", "b"]


# --- errors: one clear line, non-zero exit, nothing left looking complete ---


def _assert_clean_failure(flow, result, message):
    assert result.returncode != 0
    assert_says(result.output, message)
    assert not flow.path("results", "tiny", "tiny.mp4").exists()
    leftovers = [p for p in flow.directory.rglob("*") if ".partial" in p.name]
    assert leftovers == []


def test_no_file_the_workflow_writes_is_accepted_as_an_input(finished_plain, monkeypatch):
    from dreamflow import config

    monkeypatch.chdir(finished_plain)
    written = [p for folder in ("work", "results") for p in Path(folder).rglob("*")]
    assert len(written) > 20  # frames, dreams, logs, probe, the video
    for path in written:
        raw = {"inputs": {"again": {"path": str(path)}}}
        with pytest.raises(config.DreamflowError, match=r"where the workflow writes"):
            config.check_inputs(config.validate(raw))


def test_dreaming_a_result_again_under_its_own_name_leaves_it_untouched(project):
    Image.new("RGB", (64, 36), "red").save(project.path("still.png"))
    project.write_config(tiny_config("still.png"))
    assert project.run().returncode == 0
    result_image = project.path("results", "tiny", "tiny.png")
    before = result_image.read_bytes()
    project.write_config(tiny_config("results/tiny/tiny.png"))
    result = project.run()
    assert result.returncode != 0
    assert "config key inputs.tiny.path: results/tiny/tiny.png is inside results_dir" in (
        result.output
    )
    assert result_image.read_bytes() == before


def test_a_work_folder_that_fills_up_while_dreaming_stops_in_one_line_and_resumes(
    project, tiny_video
):
    with small_disk(project.path("disk"), 1024) as disk:
        project.write_config(tiny_config(tiny_video, work_dir=str(disk / "work")))
        assert project.run("--until", "extract_frames").returncode == 0
        fill(disk, leave_bytes=6 * 1024)  # room for an error line in a log, not for a dream
        result = project.run()
        assert result.returncode != 0
        errors = re.findall(r"^dreamflow: error: .*$", result.output, re.M)
        assert errors, result.output
        assert all(line.endswith(": No space left on device") for line in errors), errors
        assert "cannot write " + str(disk / "work" / "tiny" / "dreamed") in errors[0]
        assert "Traceback" not in result.output
        assert "in-process" not in result.output  # a full disk is not retried in-process
        assert not project.path("results", "tiny", "tiny.mp4").exists()
        os.unlink(disk / "filler")
        result = project.run()
        assert result.returncode == 0, result.output
        assert len(ffprobe_streams(project.path("results", "tiny", "tiny.mp4"))) >= 1


def test_file_names_like_options_or_protocols_are_read_as_file_names(project):
    make_video(project.path("-clip:1.mp4"), frames=2)
    config = tiny_config("-clip:1.mp4", work_dir="-work", results_dir="res:ults")
    project.write_config(config)
    result = project.run()
    assert result.returncode == 0, result.output
    assert_no_traceback(result.output)
    assert len(ffprobe_streams(project.path("res:ults", "tiny", "tiny.mp4"))) >= 1
    assert project.path("-work", "tiny", "dreamed", "000002.png").exists()


def test_a_truncated_video_is_dreamed_as_far_as_it_decodes_and_the_run_says_so(project):
    truncated_video(project.directory, frames=12, keep=0.5)
    project.write_config(tiny_config("cut.mp4"))
    result = project.run()
    assert result.returncode == 0, result.output
    decoded = len(list(project.path("work", "tiny", "frames").glob("*.png")))
    assert 1 <= decoded < 12
    warning = (
        f"dreamflow: warning: cut.mp4 is shorter than its header says: 12 frames planned, "
        f"{decoded} decoded (a truncated or damaged file?); dreaming the {decoded} frames"
    )
    assert result.stderr.splitlines().count(warning) == 1, result.output
    assert_says(result.output, warning)
    video = ffprobe_streams(project.path("results", "tiny", "tiny.mp4"))[0]
    assert int(video["nb_read_frames"]) == decoded


def test_a_corrupt_input_does_not_stop_a_good_one_and_is_named_at_the_end(project, tiny_video):
    project.path("corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 and then nothing")
    config = tiny_config(tiny_video)
    config["inputs"]["corrupt"] = {"path": "corrupt.mp4"}
    project.write_config(config)
    result = project.run()
    assert result.returncode != 0
    assert project.path("results", "tiny", "tiny.mp4").exists(), result.output
    assert not project.path("results", "corrupt").exists()
    summary = [line for line in result.stderr.splitlines() if line.startswith("dreamflow: input")]
    assert len(summary) == 1, result.output
    assert_says(result.output, "dreamflow: input corrupt failed: not a video: corrupt.mp4 (")
    assert summary[0].startswith("dreamflow: input corrupt failed: not a video: corrupt.mp4 (")
    assert summary[0].endswith("(log: work/corrupt/logs/probe.log)")


def test_missing_input_stops_before_any_job(project):
    project.write_config(tiny_config("nowhere.mp4"))
    result = project.run()
    _assert_clean_failure(
        project, result, "config key inputs.tiny.path: input not found: nowhere.mp4"
    )
    assert "Finished jobid" not in result.output


# root reads a chmod 000 file through these two capabilities; without them (dropped for the run
# and all it starts, by util-linux's setpriv) root obeys the permission bits as any user does
NO_READ_OVERRIDE = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search"]


def test_unreadable_input_is_reported(project):
    make_video(project.path("locked.mp4"))
    os.chmod(project.path("locked.mp4"), 0)
    project.write_config(tiny_config("locked.mp4"))
    prefix = NO_READ_OVERRIDE if os.geteuid() == 0 else []
    unreadable = subprocess.run(
        [*prefix, "head", "-c1", str(project.path("locked.mp4"))], capture_output=True
    )
    assert unreadable.returncode != 0  # staged: the run cannot read it
    result = subprocess.run(
        [*prefix, *project.command()],
        capture_output=True,
        text=True,
        timeout=900,
        env=project.environment(),
    )
    result.output = result.stdout + result.stderr
    _assert_clean_failure(project, result, "input is not readable: locked.mp4")


def test_a_file_that_is_not_a_video(project):
    project.path("notes.mp4").write_text("these are my notes, not a video\n")
    project.write_config(tiny_config("notes.mp4"))
    result = project.run()
    _assert_clean_failure(project, result, "dreamflow: error: not a video: notes.mp4")
    assert not project.path("work", "tiny", "frames").exists()


def test_a_video_with_zero_frames(project):
    # a valid y4m header announcing a 64x36 stream, followed by no frames
    project.path("empty.y4m").write_bytes(b"YUV4MPEG2 W64 H36 F6:1 Ip A1:1 C420jpeg\n")
    project.write_config(tiny_config("empty.y4m"))
    _assert_clean_failure(
        project, project.run(), "dreamflow: error: video has no frames: empty.y4m"
    )


def test_missing_ffmpeg_is_named(project, tiny_video):
    project.write_config(tiny_config(tiny_video))
    result = project.run(
        env={"DREAMFLOW_FFPROBE": "no-such-ffprobe", "DREAMFLOW_FFMPEG": "no-such-ffmpeg"}
    )
    _assert_clean_failure(
        project, result, "ffprobe not found (looked for 'no-such-ffprobe'): install ffmpeg"
    )


def test_unknown_model_is_a_config_error(project, tiny_video):
    project.write_config(tiny_config(tiny_video, dream={"model": "alexnet"}))
    result = project.run()
    _assert_clean_failure(
        project, result, "config key dream.model: 'alexnet' is not allowed; allowed values:"
    )


def test_unknown_layer_lists_close_matches(project, tiny_video):
    project.write_config(tiny_config(tiny_video, dream={"layers": ["blok4"]}))
    result = project.run()
    _assert_clean_failure(
        project, result, "unknown layer 'blok4' for model efficientnet_lite0 (close matches: block4"
    )


def test_typo_in_a_key_suggests_the_right_one(project, tiny_video):
    config = tiny_config(tiny_video)
    config["dream"]["octave"] = 2
    project.write_config(config)
    _assert_clean_failure(project, project.run(), "unknown key 'octave' (did you mean 'octaves'?)")


def test_a_yaml_syntax_error_names_its_line_and_column(project, tiny_video):
    project.path("config.yaml").write_text(
        f"inputs:\n  tiny:\n    path: {tiny_video}\n  dream:\n   octaves: 3\n  - oops\n"
    )
    _assert_clean_failure(
        project,
        project.run(),
        "config.yaml line 6, column 3: not valid YAML: expected <block end>, but found '-'",
    )


def test_an_image_claiming_a_huge_size_stops_its_input_in_one_line(project):
    png_claiming_size(project.path("huge.png"), 30000, 30000)
    project.write_config(tiny_config("huge.png"))
    result = project.run()
    _assert_clean_failure(project, result, "dreamflow: error: cannot read image huge.png: Image")


def test_out_of_range_value_names_the_key(project, tiny_video):
    project.write_config(tiny_config(tiny_video, encode={"crf": 99}))
    _assert_clean_failure(
        project, project.run(), "config key encode.crf: 99 is greater than the maximum of 51"
    )


# --- single images: zoom animations and layer sweeps ---


def test_zoom_from_a_still_chains_n_frames(project):
    Image.new("RGB", (48, 32), (120, 80, 40)).save(project.path("still.png"))
    config = tiny_config("still.png")
    config["inputs"]["tiny"]["zoom"] = {"frames": 4, "factor": 1.1}
    project.write_config(config)
    result = project.run()
    assert result.returncode == 0, result.output
    assert sorted(os.listdir(project.path("work", "tiny", "dreamed"))) == FRAMES[:4]
    (video,) = ffprobe_streams(project.path("results", "tiny", "tiny.mp4"))
    assert video["nb_frames"] == "4"
    files = project.inputs_of_outputs()
    for n in (2, 3, 4):
        assert files[f"work/tiny/dreamed/{n:06d}.png"] == (
            "dream_frame",
            [f"work/tiny/dreamed/{n - 1:06d}.png"],
        )
    assert not {rule for rule, _ in files.values()} & {"flow", "blend", "scenes", "coherence"}


def test_layer_sweep_makes_one_image_per_item_and_a_contact_sheet(project):
    Image.new("RGB", (48, 32), (120, 80, 40)).save(project.path("still.png"))
    config = tiny_config("still.png")
    config["inputs"]["tiny"]["sweep"] = {
        "layers": ["block2", "block4:3", ["block3", "block5"]],
        "columns": 2,
    }
    project.write_config(config)
    result = project.run()
    assert result.returncode == 0, result.output
    names = sorted(os.listdir(project.path("results", "tiny", "sweep")))
    assert names == ["01-block2.png", "02-block4-3.png", "03-block3+block5.png"]
    # the sheet holds each dream on a two-column grid, a label under each
    sheet = read_rgb(project.path("results", "tiny", "tiny_sweep.png"))
    cell_width = (sheet.shape[1] - GAP) // 2 - GAP
    assert sheet.shape[0] == GAP + 2 * (32 + LABEL_HEIGHT + GAP) and cell_width >= 48
    for index, name in enumerate(names):
        row, column = divmod(index, 2)
        top, left = GAP + row * (32 + LABEL_HEIGHT + GAP), GAP + column * (cell_width + GAP)
        tile = sheet[top : top + 32, left : left + 48]
        assert np.array_equal(tile, read_rgb(project.path("results", "tiny", "sweep", name)))
    sweep = [project.path("results", "tiny", "sweep", name) for name in names]
    for image in sweep:
        assert_dreamed(project.path("still.png"), image, TINY_DREAM)
    for first, second in itertools.combinations(sweep, 2):  # each its own layers' dream
        assert dream_change(first, second) >= least_dream_change(TINY_DREAM)

    # `dreamflow sweep` is the same sweep: the same files, byte for byte
    command = [
        sys.executable,
        "-m",
        "dreamflow",
        "sweep",
        "still.png",
        "-o",
        "by-hand",
        "--layers",
        "block2",
        "block4:3",
        "block3+block5",
        "--columns",
        "2",
        "--threads",
        "1",
    ]
    subprocess.run(
        command + TINY_DREAM_OPTIONS, cwd=project.path(), check=True, capture_output=True
    )
    by_hand = project.path("by-hand")
    assert sorted(os.listdir(by_hand / "sweep")) == names
    for name in names:
        assert (by_hand / "sweep" / name).read_bytes() == (
            project.path("results", "tiny", "sweep", name).read_bytes()
        )
    assert (by_hand / "still_sweep.png").read_bytes() == (
        project.path("results", "tiny", "tiny_sweep.png").read_bytes()
    )


def test_zoom_on_a_video_is_a_config_error(project, tiny_video):
    config = tiny_config(tiny_video)
    config["inputs"]["tiny"]["zoom"] = {"frames": 3}
    project.write_config(config)
    _assert_clean_failure(
        project, project.run(), "config key inputs.tiny.zoom: needs a single image as path"
    )


# --- torchvision weights: fetched into the torch cache by a local rule, only read by dream jobs ---


def test_fetch_models_plans_one_local_fetch_per_missing_weights_file(project, tiny_video):
    project.write_config(
        tiny_config(tiny_video, dream={"model": "googlenet", "layers": ["inception3a"]})
    )
    cache = project.path("torch")
    result = project.run("--dry-run", "fetch_models", env={"TORCH_HOME": str(cache)})
    assert result.returncode == 0, result.output
    assert f"Fetching {cache}/hub/checkpoints/googlenet-1378be20.pth" in result.output


def test_fetch_model_without_internet_stops_in_one_line_naming_the_weights_file(project):
    """What a run shows when torchvision weights are missing and cannot be downloaded; a proxy on a
    closed port makes the hub unreachable wherever this runs."""
    Image.new("RGB", (64, 48), (120, 80, 40)).save(project.path("still.png"))
    project.write_config(
        tiny_config("still.png", dream={"model": "googlenet", "layers": ["inception3a"]})
    )
    closed = "http://127.0.0.1:9"
    offline = {"https_proxy": closed, "HTTPS_PROXY": closed, "no_proxy": "", "NO_PROXY": ""}
    result = project.run(env={"TORCH_HOME": str(project.path("torch")), **offline})
    assert result.returncode != 0
    url = "https://download.pytorch.org/models/googlenet-1378be20.pth"
    log = project.path("work", "logs", "fetch_model", "googlenet-1378be20.pth.log").read_text()
    (line,) = log.splitlines()
    assert line.startswith(f"dreamflow: error: could not download {url}: "), line
    # and what to type instead, as the README says
    assert line.endswith(
        "run: dreamflow fetch-models --model googlenet --from googlenet-1378be20.pth"
    ), line
    assert line in result.output
    assert "Traceback" not in result.output
    assert not project.path("torch", "hub", "checkpoints", "googlenet-1378be20.pth").exists()
    assert not project.path("results").exists()


def test_googlenet_dreams_from_weights_already_in_the_cache(project):
    """Random-init weights stand in for the real ones (no hub here); the path is what is tested."""
    import subprocess
    import sys

    import torch
    import torchvision

    torch.save(
        torchvision.models.googlenet(weights=None, aux_logits=True, init_weights=True).state_dict(),
        project.path("googlenet.pth"),
    )
    env = {"TORCH_HOME": str(project.path("torch"))}
    subprocess.run(
        [
            sys.executable,
            "-m",
            "dreamflow",
            "fetch-models",
            "--model",
            "googlenet",
            "--from",
            str(project.path("googlenet.pth")),
        ],
        check=True,
        env={**os.environ, **env},
    )
    Image.new("RGB", (64, 48), (120, 80, 40)).save(project.path("still.png"))
    project.write_config(
        tiny_config("still.png", dream={"model": "googlenet", "layers": ["inception3a"]})
    )
    result = project.run(env=env)
    assert result.returncode == 0, result.output
    assert project.finished(result, "fetch_model") == 0
    assert project.path("results", "tiny", "tiny.png").exists()


@pytest.mark.parametrize(
    "finished, threads", [("finished_plain", {1}), ("finished_blend", {2})], ids=["none", "chain"]
)
def test_auto_dream_threads_give_a_chain_every_core_and_independent_frames_one_each(
    request, tmp_path, finished, threads
):
    # a finished run: a blended input's dream jobs are known once its scenes checkpoint has run
    flow = copy_workflow(request.getfixturevalue(finished), tmp_path / "copy")
    config = flow.read_config()
    flow.write_config({**config, "resources": {**config["resources"], "dream_threads": "auto"}})
    result = flow.run("--dry-run", "--printshellcmds", "--forcerun", "dream_frame")  # --cores 2
    assert result.returncode == 0, result.output
    used = re.findall(r"dreamflow dream-frame .* --threads (\d+) ", result.output)
    assert len(used) == 6 and {int(n) for n in used} == threads
