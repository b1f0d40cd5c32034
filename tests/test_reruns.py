"""Reruns that the README's table promises and no other module checks: a changed blend setting
redoes the blends and every dream after the first of each chain, and changed scene cuts redo the
scene detection and only the frames whose place in a chain changed. Real Snakemake, ffmpeg,
OpenCV and torch, on copies of a finished blended run of the tiny video."""

import json

import pytest

from helpers import copy_workflow

pytestmark = pytest.mark.workflow

WORK = "work/tiny"
FRAMES = [1, 2, 3, 4, 5, 6]


def numbers(names):
    return sorted(int(name) for name in names)


def dreamed_bytes(flow):
    return {n: flow.path(WORK, "dreamed", f"{n:06d}.png").read_bytes() for n in FRAMES}


def test_a_changed_blend_factor_reruns_the_blends_and_every_dream_but_the_first(
    finished_blend, tmp_path
):
    flow = copy_workflow(finished_blend, tmp_path / "copy")
    before = dreamed_bytes(flow)
    config = flow.read_config()
    config["blend"]["factor"] = 0.9
    flow.write_config(config)
    result = flow.run()
    assert result.returncode == 0, result.output
    assert numbers(flow.ran_in_run(result, "Blending")) == [2, 3, 4, 5, 6]
    assert numbers(flow.ran_in_run(result, "Dreaming")) == [2, 3, 4, 5, 6]
    assert flow.ran_in_run(result, "Optical flow") == []  # the same flow method: flows stay
    assert flow.finished(result, "encode") == 1
    assert flow.finished(result, "extract_frames") == 0
    after = dreamed_bytes(flow)
    assert after[1] == before[1]  # the first frame of the chain keeps its dream
    assert all(after[n] != before[n] for n in FRAMES[1:])


def test_changed_scene_cuts_rerun_the_detection_and_the_frames_whose_chain_changed(
    finished_blend, tmp_path
):
    flow = copy_workflow(finished_blend, tmp_path / "copy")
    scenes = json.loads(flow.path(WORK, "scenes.json").read_text())
    assert scenes["cuts"] == []  # the tiny video is one scene: a cut at 4 moves frames 4-6
    before = dreamed_bytes(flow)
    config = flow.read_config()
    config["scenes"] = {"cuts": [4]}
    flow.write_config(config)
    result = flow.run()
    assert result.returncode == 0, result.output
    assert flow.finished(result, "scenes") == 1
    assert json.loads(flow.path(WORK, "scenes.json").read_text())["cuts"] == [4]
    assert numbers(flow.ran_in_run(result, "Dreaming")) == [4, 5, 6]
    assert numbers(flow.ran_in_run(result, "Blending")) == [5, 6]  # frame 4 now starts a chain
    assert flow.finished(result, "encode") == 1
    after = dreamed_bytes(flow)
    assert all(after[n] == before[n] for n in (1, 2, 3))
    assert after[4] != before[4]
