"""Blend chains end to end: flow and blend steps, scene cuts, long chains cut into overlapping
segments, and reruns that redo exactly what changed. Real Snakemake, ffmpeg, OpenCV and torch."""

import json

import numpy as np
import pytest
from PIL import Image

from dreamflow import coherence as coherence_module
from dreamflow.images import read_rgb
from helpers import (
    Workflow,
    assert_no_traceback,
    copy_workflow,
    dream_change,
    ffprobe_streams,
    make_video,
    tiny_config,
    write_scene_frames,
)

pytestmark = pytest.mark.workflow

WORK = "work/tiny"
BLEND = {"mode": "constant", "factor": 0.5, "flow": "dis"}


def numbers(names):
    return sorted(int(name) for name in names)


def dreamed(flow, node):
    return flow.path(WORK, "dreamed", f"{node}.png")


def run_fresh(directory, config):
    flow = Workflow(directory)
    flow.write_config(config)
    result = flow.run()
    assert result.returncode == 0, result.output
    return flow, result


@pytest.fixture(scope="module")
def two_scenes(tmp_path_factory):
    """Two scenes of four frames (a cut at frame 5), chained with the dream threads on auto."""
    directory = tmp_path_factory.mktemp("scenes")
    write_scene_frames(directory / "shots", [4, 4])
    config = tiny_config("shots", blend=BLEND)
    config["resources"]["dream_threads"] = "auto"
    return run_fresh(directory, config)


def test_a_cut_starts_a_chain_and_the_two_scenes_dream_side_by_side(two_scenes):
    flow, result = two_scenes
    scenes = json.loads(flow.path(WORK, "scenes.json").read_text())
    assert (scenes["frames"], scenes["cuts"], scenes["source"]) == (8, [5], "auto")
    files = flow.inputs_of_outputs()
    assert files[f"{WORK}/dreamed/000005.png"] == ("dream_frame", [f"{WORK}/frames/000005.png"])
    assert f"{WORK}/blended/000005.png" not in files and f"{WORK}/flow/000005.npz" not in files
    # two chains share the two cores: one thread each, and frames of both scenes interleave
    commands = [row for row in files.values() if row[0] == "dream_frame"]
    assert len(commands) == 8
    order = flow.ran_in_run(result, "Dreaming")
    assert order.index("000005") < order.index("000004"), order
    log = flow.path(WORK, "logs", "dream", "000006.png.log").read_text()
    assert "dreamed by the model server" in log


def test_the_coherence_figures_are_those_of_the_dreamed_frames_and_the_plot_shows_them(two_scenes):
    flow, _ = two_scenes
    coherence = json.loads(flow.path("results", "tiny", "coherence.json").read_text())
    assert (coherence["frames"], coherence["scene_starts"]) == (8, [5])
    assert coherence["pairs"] == 6  # the pair across the cut is left out
    for entry in coherence["per_frame"]:
        number = entry["frame"]
        name = f"{number:06d}.png"
        # the strength is the mean change the dream made to that very frame
        change = dream_change(flow.path(WORK, "frames", name), flow.path(WORK, "dreamed", name))
        assert entry["strength"] * 255 == pytest.approx(change, abs=1e-6), number
        measured = [entry["e_warp_dreamed"], entry["e_warp_raw"]]
        if number in (1, 5):  # no pair ends at the first frame or across the cut
            assert measured == [None, None], number
        else:
            assert all(value > 0 for value in measured), (number, measured)
    with Image.open(flow.path("results", "tiny", "coherence.png")) as picture:
        assert (picture.format, picture.size) == ("PNG", coherence_module.PLOT_SIZE)
        pixels = np.asarray(picture.convert("RGB"))
    # both curves are drawn, and the cut is a vertical line through the plot
    for colour in (coherence_module._DREAMED, coherence_module._RAW):
        assert (pixels == colour).all(axis=2).sum() >= 50, colour
    cut_columns = (pixels == coherence_module._CUT).all(axis=2).sum(axis=0)
    assert cut_columns.max() >= 0.5 * pixels.shape[0], cut_columns.max()


def test_dream_threads_auto_share_the_cores_among_the_chains(two_scenes, tmp_path):
    flow = copy_workflow(two_scenes[0].directory, tmp_path / "copy")
    result = flow.run("--forcerun", "dream_frame", "--dry-run", "--printshellcmds")
    assert result.returncode == 0, result.output
    threads = {
        line.split("--threads ")[1].split()[0]
        for line in result.output.splitlines()
        if "dream-frame" in line
    }
    assert threads == {"1"}  # 2 cores, 2 chains


def test_deleting_a_dream_or_a_flow_file_redoes_its_chain_from_there_and_nothing_else(
    two_scenes, tmp_path
):
    flow = copy_workflow(two_scenes[0].directory, tmp_path / "copy")
    kept = {n: dreamed(flow, f"{n:06d}").read_bytes() for n in (1, 5, 6)}
    dreamed(flow, "000002").unlink()
    flow.path(WORK, "flow", "000007.npz").unlink()
    result = flow.run()
    assert result.returncode == 0, result.output
    assert numbers(flow.ran_in_run(result, "Dreaming")) == [2, 3, 4, 7, 8]
    assert numbers(flow.ran_in_run(result, "Blending")) == [3, 4, 7, 8]
    assert numbers(flow.ran_in_run(result, "Optical flow")) == [7]
    assert {n: dreamed(flow, f"{n:06d}").read_bytes() for n in (1, 5, 6)} == kept
    assert flow.finished(result, "encode") == 1 and flow.finished(result, "coherence") == 1


def test_a_deleted_start_image_is_blended_again_and_a_damaged_flow_file_recomputed(
    two_scenes, tmp_path
):
    flow = copy_workflow(two_scenes[0].directory, tmp_path / "copy")
    before = {n: dreamed(flow, f"{n:06d}").read_bytes() for n in range(1, 9)}
    flow.path(WORK, "blended", "000003.png").unlink()
    flow.path(WORK, "flow", "000007.npz").write_bytes(b"a damaged flow file")
    result = flow.run()
    assert result.returncode == 0, result.output
    assert numbers(flow.ran_in_run(result, "Blending")) == [3, 4, 7, 8]
    assert numbers(flow.ran_in_run(result, "Dreaming")) == [3, 4, 7, 8]
    note = flow.path(WORK, "logs", "blend", "000007.png.log").read_text()
    assert "flow/000007.npz" in note and "computing it again" in note
    assert_no_traceback(note + result.output)
    # same inputs, same flow: the same bytes as the first run
    assert {n: dreamed(flow, f"{n:06d}").read_bytes() for n in range(1, 9)} == before


def test_a_changed_flow_method_reruns_the_flows_and_the_blends_and_dreams_that_use_them(
    two_scenes, tmp_path
):
    flow = copy_workflow(two_scenes[0].directory, tmp_path / "copy")
    config = flow.read_config()
    config["blend"]["flow"] = "farneback"
    flow.write_config(config)
    result = flow.run()
    assert result.returncode == 0, result.output
    chained = [2, 3, 4, 6, 7, 8]  # the first frame of each scene has no flow and no blend
    assert numbers(flow.ran_in_run(result, "Optical flow")) == chained
    assert numbers(flow.ran_in_run(result, "Blending")) == chained
    assert numbers(flow.ran_in_run(result, "Dreaming")) == chained


@pytest.fixture(scope="module")
def segments(tmp_path_factory):
    """One scene of 10 frames in segments of 5 sharing 1 frame: 1-5, 5-9, 9-10."""
    directory = tmp_path_factory.mktemp("segments")
    write_scene_frames(directory / "shot", [10])
    config = tiny_config("shot", blend={**BLEND, "max_chain": 5, "overlap": 1})
    return run_fresh(directory, config)


def test_long_chains_run_as_overlapping_segments_crossfaded_at_the_seams(segments):
    flow, result = segments
    assert numbers(n for n in flow.ran_in_run(result, "Crossfading")) == [5, 9]
    files = flow.inputs_of_outputs()
    # the new segment starts fresh at 5 and continues from its own dream of it
    assert files[f"{WORK}/dreamed/000005-lead.png"][1] == [f"{WORK}/frames/000005.png"]
    assert files[f"{WORK}/blended/000006.png"][1][0] == f"{WORK}/dreamed/000005-lead.png"
    assert files[f"{WORK}/blended/000005.png"][1][0] == f"{WORK}/dreamed/000004.png"
    seam = read_rgb(flow.path(WORK, "seams", "000005.png")).astype(float)
    old = read_rgb(dreamed(flow, "000005")).astype(float)
    new = read_rgb(dreamed(flow, "000005-lead")).astype(float)
    assert np.abs(seam - (old + new) / 2).max() <= 0.5 + 1e-9
    (video,) = ffprobe_streams(flow.path("results", "tiny", "tiny.mp4"))
    assert video["nb_read_frames"] == "10"


def test_deleting_a_dream_in_a_segment_redoes_that_segment_from_there_and_its_seam(
    segments, tmp_path
):
    flow = copy_workflow(segments[0].directory, tmp_path / "copy")
    dreamed(flow, "000007").unlink()
    result = flow.run()
    assert result.returncode == 0, result.output
    assert flow.ran_in_run(result, "Dreaming") == ["000007", "000008", "000009"]
    assert flow.ran_in_run(result, "Crossfading") == ["000009"]


@pytest.mark.parametrize(
    ("change", "dreams", "crossfades"),
    [
        # segments 1-5, 5-9, 9-10 become 1-6, 6-10: frame 6 now follows the old segment's 5
        ({"max_chain": 6}, ["000006", "000006-lead", "000007", "000008", "000009", "000010"], [6]),
        # 1-5, 5-9, 9-10 become 1-5, 4-8, 7-10: the second segment starts a frame earlier
        (
            {"overlap": 2},
            ["000004-lead", "000005-lead", "000006", "000007", "000007-lead", "000008"]
            + ["000008-lead", "000009", "000010"],
            [4, 5, 7, 8],
        ),
    ],
    ids=["max_chain", "overlap"],
)
def test_a_changed_segmentation_reruns_the_frames_whose_place_in_a_chain_changed(
    segments, tmp_path, change, dreams, crossfades
):
    flow = copy_workflow(segments[0].directory, tmp_path / "copy")
    kept = {n: dreamed(flow, f"{n:06d}").read_bytes() for n in range(1, 6)}
    config = flow.read_config()
    config["blend"].update(change)
    flow.write_config(config)
    result = flow.run()
    assert result.returncode == 0, result.output
    ran = {
        "dreams": sorted(flow.ran_in_run(result, "Dreaming")),
        "crossfades": numbers(flow.ran_in_run(result, "Crossfading")),
        # the cuts stay: the segments are worked out from them again, not detected again
        "scenes": flow.finished(result, "scenes"),
        "extractions": flow.finished(result, "extract_frames"),
        "encodes": flow.finished(result, "encode"),
    }
    expected = {"dreams": dreams, "crossfades": crossfades, "scenes": 0}
    assert ran == {**expected, "extractions": 0, "encodes": 1}
    # the frames before the first changed place keep their dreams
    assert {n: dreamed(flow, f"{n:06d}").read_bytes() for n in range(1, 6)} == kept


def test_unusual_inputs_one_frame_a_cut_at_frame_2_a_scene_of_one_frame_odd_sizes(tmp_path):
    make_video(tmp_path / "one.mp4", frames=1)
    write_scene_frames(tmp_path / "odd", [5], size=(33, 17), shift=1)
    config = tiny_config("one.mp4", blend=BLEND)
    config["inputs"] = {
        "one": {"path": "one.mp4"},
        "odd": {"path": "odd", "scenes": {"cuts": [2, 3]}},
    }
    flow, result = run_fresh(tmp_path, config)
    assert numbers(flow.ran_in_run(result, "Optical flow")) == [4, 5]  # scenes 1, 2, 3-5
    for name, frames in (("one", "1"), ("odd", "5")):
        video = ffprobe_streams(flow.path("results", name, f"{name}.mp4"))[0]
        assert video["nb_read_frames"] == frames
    assert json.loads(flow.path("work", "odd", "scenes.json").read_text())["cuts"] == [2, 3]
    assert json.loads(flow.path("results", "one", "coherence.json").read_text())["pairs"] == 0
