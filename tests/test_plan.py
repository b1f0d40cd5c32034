"""The plan: what each input's rules look up, computed from config.yaml without Snakemake."""

import json

import pytest

from dreamflow import __version__
from dreamflow.errors import DreamflowError
from dreamflow.job import JobSettings
from dreamflow.plan import Plan, dream_threads, job_shell_prefix
from helpers import solid_image


@pytest.fixture
def media(tmp_path):
    (tmp_path / "clip.mp4").write_bytes(b"a video by its name; the plan reads no frames")
    solid_image(tmp_path / "cat.png", (200, 100, 50))
    return tmp_path


def plan_of(media, cores=4, **sections):
    config = {
        "inputs": {
            "clip": {"path": str(media / "clip.mp4")},
            "cat": {"path": str(media / "cat.png")},
        },
        **sections,
    }
    return Plan(config, cores=cores)


def test_an_independent_video_has_no_chain_and_one_thread_per_frame(media):
    clip = plan_of(media, blend={"mode": "none"})["clip"]
    assert (clip.kind, clip.blends, clip.threads) == ("video", False, 1)
    chains = clip.chains(30, cuts=[10])  # cuts only matter to blend chains
    assert [chains.previous(n) for n in (1, 2, 30)] == [None, None, None]
    assert clip.dream_inputs((2, False), chains) == {"frame": "work/clip/frames/000002.png"}
    assert clip.flow_method is None


def test_a_blended_video_dreams_each_frame_from_its_blend_of_the_one_before(media):
    clip = plan_of(media, cores=6, blend={"mode": "constant"})["clip"]
    assert (clip.blends, clip.threads, clip.flow_method) == (True, 6, "dis")
    chains = clip.chains(30)
    assert clip.dream_inputs((1, False), chains) == {"frame": "work/clip/frames/000001.png"}
    assert clip.dream_inputs((29, False), chains) == {"start": "work/clip/blended/000029.png"}
    assert clip.blend_inputs((29, False), chains) == {
        "frame": "work/clip/frames/000029.png",
        "previous": "work/clip/dreamed/000028.png",
        "previous_frame": "work/clip/frames/000028.png",
        "flow": "work/clip/flow/000029.npz",
    }
    assert clip.flow_inputs(29) == {
        "previous_frame": "work/clip/frames/000028.png",
        "frame": "work/clip/frames/000029.png",
    }
    assert clip.dream_threads(chains) == 6


def test_flow_none_blends_without_flow_files(media):
    clip = plan_of(media, blend={"mode": "loop", "flow": "none"})["clip"]
    assert clip.flow_method is None
    assert clip.blend_inputs((2, False), clip.chains(3)) == {
        "frame": "work/clip/frames/000002.png",
        "previous": "work/clip/dreamed/000001.png",
    }


def test_scene_cuts_start_new_chains_that_share_the_cores(media):
    clip = plan_of(media, cores=6, blend={"mode": "constant"})["clip"]
    chains = clip.chains(30, cuts=[11, 21])
    assert clip.dream_inputs((11, False), chains) == {"frame": "work/clip/frames/000011.png"}
    assert clip.dream_threads(chains) == 2  # three chains side by side
    assert clip.dream_threads(clip.chains(30, cuts=list(range(2, 31)))) == 1
    fixed = plan_of(media, cores=6, blend={"mode": "constant"}, resources={"dream_threads": 4})
    assert fixed["clip"].dream_threads(fixed["clip"].chains(30, cuts=[11, 21])) == 4


def test_long_chains_split_into_segments_whose_overlap_crossfades(media):
    clip = plan_of(media, blend={"mode": "constant", "max_chain": 10, "overlap": 2})["clip"]
    chains = clip.chains(20)
    assert chains.seams == [9, 10, 17, 18]
    assert clip.dream_inputs((9, True), chains) == {"frame": "work/clip/frames/000009.png"}
    assert clip.dream_inputs((10, True), chains) == {"start": "work/clip/blended/000010-lead.png"}
    assert clip.blend_inputs((10, True), chains)["previous"] == "work/clip/dreamed/000009-lead.png"
    assert clip.blend_inputs((11, False), chains)["previous"] == "work/clip/dreamed/000010-lead.png"
    assert clip.final_frames(chains)[8:11] == [
        "work/clip/seams/000009.png",
        "work/clip/seams/000010.png",
        "work/clip/dreamed/000011.png",
    ]
    files = clip.step_files(chains)
    assert len(files) == 24 + 21 + 19  # dreams, start images (not 1, 9-lead, 17-lead), flows
    assert "work/clip/flow/000009.npz" in files and "work/clip/blended/000009.png" in files


def test_a_single_image_never_chains_even_with_blending_on(media):
    cat = plan_of(media, blend={"mode": "constant"})["cat"]
    assert (cat.kind, cat.blends, cat.threads) == ("image", False, 1)
    assert cat.result == "results/cat/cat.png"
    assert not cat.measures_coherence


def test_raft_flow_jobs_read_the_cached_weights(media, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(media / "torch"))
    plan = plan_of(media, blend={"mode": "constant", "flow": "raft_small"})
    expected = str(media / "torch" / "hub" / "checkpoints" / "raft_small_C_T_V2-01064c6d.pth")
    assert plan["clip"].flow_inputs(2)["weights"] == expected
    assert plan.weights_cache_files == [expected]  # fetch_models fetches it


def test_a_fixed_thread_count_is_used_for_every_input(media):
    plan = plan_of(media, resources={"dream_threads": 3}, blend={"mode": "loop"})
    assert [plan["clip"].threads, plan["cat"].threads, plan.uniform_threads] == [3, 3, 3]
    mixed = plan_of(media, blend={"mode": "loop"})
    assert mixed.uniform_threads is None  # the chains share every core, the image one thread


def test_auto_threads():
    assert dream_threads("auto", chained=True, cores=8) == 8
    assert dream_threads("auto", chained=False, cores=8) == 1
    assert dream_threads(2, chained=True, cores=8) == 2


def test_a_zoom_chains_its_frames_and_needs_the_still_only_for_the_first(media):
    config = {
        "inputs": {"cat": {"path": str(media / "cat.png"), "zoom": {"frames": 12}}},
        "blend": {"mode": "constant"},
    }
    cat = Plan(config, cores=2)["cat"]
    assert not cat.blends and cat.threads == 2 and cat.flow_method is None
    assert cat.frame_count(extracted=1) == 12
    chains = cat.chains(12)
    assert cat.dream_inputs((1, False), chains) == {"frame": "work/cat/frames/000001.png"}
    assert cat.dream_inputs((12, False), chains) == {"previous": "work/cat/dreamed/000011.png"}
    assert cat.result == "results/cat/cat.mp4"
    assert JobSettings.from_text(cat.job_settings).zoom == {
        "frames": 12,
        "factor": 1.05,
        "angle": 0,
    }


def test_job_settings_hold_what_dreams_need_and_not_encode_or_blend_settings(media):
    plan = plan_of(media, encode={"crf": 30}, frames={"format": "jpg", "jpg_quality": 80})
    settings = json.loads(plan["clip"].job_settings)
    assert sorted(settings) == ["dream", "dreamflow", "jpg_quality", "zoom"]
    assert settings["dreamflow"] == __version__  # the writer's version, which jobs check
    assert settings["jpg_quality"] == 80
    assert settings["dream"]["layers"] == ["block10"]  # the model's default, made explicit
    other = plan_of(media, encode={"crf": 40}, frames={"format": "jpg", "jpg_quality": 80})
    assert other["clip"].job_settings == plan["clip"].job_settings
    assert json.loads(plan["clip"].encode_settings)["encode"]["crf"] == 30
    assert plan["clip"].dreamed_frame(3) == "work/clip/dreamed/000003.jpg"


def test_per_input_overrides_reach_only_that_input(media):
    config = {
        "inputs": {
            "clip": {"path": str(media / "clip.mp4"), "dream": {"octaves": 5}},
            "cat": {"path": str(media / "cat.png")},
        }
    }
    plan = Plan(config, cores=2)
    octaves = [json.loads(plan[name].job_settings)["dream"]["octaves"] for name in ("clip", "cat")]
    assert octaves == [5, 3]


def test_a_sweep_names_its_items_in_order_and_dreams_each_with_its_own_layers(media):
    sweep = {"layers": ["block2", "block4:3", ["block3", {"layer": "block5", "weight": 0.5}]]}
    config = {"inputs": {"cat": {"path": str(media / "cat.png"), "sweep": sweep}}}
    cat = Plan(config, cores=2)["cat"]
    assert list(cat.sweep) == ["01-block2", "02-block4-3", "03-block3+block5x0.5"]
    assert cat.sweep_labels == ["block2", "block4:3", "block3+block5x0.5"]
    layers = [JobSettings.from_text(text).dream["layers"] for text in cat.sweep.values()]
    assert layers == [["block2"], ["block4:3"], ["block3", {"layer": "block5", "weight": 0.5}]]
    assert cat.result == "results/cat/cat_sweep.png"
    assert cat.sweep_image("01-block2") == "results/cat/sweep/01-block2.png"


def test_weights_come_from_the_users_file_or_the_torch_cache(media, monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    weights = media / "mine.pth"
    weights.write_bytes(b"")
    config = {
        "inputs": {
            "clip": {"path": str(media / "clip.mp4"), "dream": {"model": "googlenet"}},
            "own": {"path": str(media / "cat.png"), "dream": {"weights": str(weights)}},
            "cat": {"path": str(media / "cat.png")},
        }
    }
    plan = Plan(config, cores=2)
    cache = str(tmp_path / "torch" / "hub" / "checkpoints" / "googlenet-1378be20.pth")
    assert [plan[n].weights for n in ("clip", "own", "cat")] == [cache, str(weights), None]
    assert plan.weights_cache_files == [cache]
    assert plan["clip"].model_inputs == {"weights": cache}  # what each dream job reads
    assert plan["cat"].model_inputs == {}


def test_a_bad_config_is_an_error_naming_the_key(media):
    with pytest.raises(DreamflowError, match="config key dream.octaves"):
        plan_of(media, dream={"octaves": 0})
    with pytest.raises(DreamflowError, match="config key inputs.nothing.path: input not found"):
        Plan({"inputs": {"nothing": {"path": str(media / "missing.mp4")}}}, cores=1)


def test_jobs_find_dreamflow_beside_the_python_running_snakemake_unless_in_a_container(tmp_path):
    (tmp_path / "weird {dir}").mkdir()
    python = tmp_path / "weird {dir}" / "python"
    assert job_shell_prefix(str(python), in_container=False) == "set -euo pipefail; "
    (tmp_path / "weird {dir}" / "dreamflow").touch()
    prefix = job_shell_prefix(str(python), in_container=False)
    assert prefix == f"set -euo pipefail; PATH='{tmp_path}/weird {{{{dir}}}}':\"$PATH\"; "
    assert job_shell_prefix(str(python), in_container=True) == (
        "set -euo pipefail; export DREAMFLOW_PER_RULE_CONTAINER=1; "
    )


def test_a_guide_image_is_an_input_of_every_dream_job(media):
    config = {
        "inputs": {"cat": {"path": str(media / "cat.png")}},
        "dream": {"guide": str(media / "cat.png")},
    }
    assert Plan(config, cores=1)["cat"].model_inputs == {"guide": str(media / "cat.png")}
