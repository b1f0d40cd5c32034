import numpy as np
import pytest

from dreamflow import config
from dreamflow.dreamstep import Dreamer, pick_device, run_job, zoomed_input
from dreamflow.errors import DreamflowError
from dreamflow.images import read_rgb, to_tensor, write_rgb
from dreamflow.job import FrameJob, JobSettings
from helpers import (
    TINY_DREAM,
    assert_dreamed,
    assert_same_dream,
    defaults,
    objective_value,
    pattern_array,
)

FAST_DREAM = defaults("dream", **TINY_DREAM, device="cpu")  # block4, which the schedules below use
THREADS = 2


@pytest.fixture(scope="module")
def dreamer():
    return Dreamer(FAST_DREAM, threads=THREADS)


def frame_job(dreamer, number, output, frame=None, previous=None, zoom=None, prepared=False):
    """The job the workflow would run for frame `number` on `dreamer`."""
    settings = JobSettings(dream=dreamer.settings, zoom=zoom)
    frame, previous = (None if path is None else str(path) for path in (frame, previous))
    return FrameJob(
        number, str(output), settings, THREADS, frame=frame, previous=previous, prepared=prepared
    )


def test_cuda_request_without_cuda_names_the_key():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    with pytest.raises(DreamflowError, match=r"dream\.device"):
        pick_device("cuda")
    assert pick_device("auto").type == "cpu"


def test_run_job_writes_a_dreamed_frame_of_the_same_size(dreamer, tmp_path):
    frame = pattern_array()
    write_rgb(frame, tmp_path / "000001.png")
    job = frame_job(dreamer, 1, tmp_path / "out" / "000001.png", tmp_path / "000001.png")
    run_job(job, dreamer)
    dreamed = read_rgb(tmp_path / "out" / "000001.png")
    assert dreamed.shape == frame.shape
    assert_dreamed(frame, dreamed, FAST_DREAM)


def test_a_prepared_frame_is_dreamed_as_it_is_even_with_a_noise_start(tmp_path):
    """The blend step already put the noise into a chained frame's start image."""
    noisy = Dreamer({**FAST_DREAM, "start": "noise"}, threads=THREADS)
    write_rgb(pattern_array(seed=1), tmp_path / "start.png")
    run_job(frame_job(noisy, 2, tmp_path / "p.png", tmp_path / "start.png", prepared=True), noisy)
    run_job(frame_job(noisy, 2, tmp_path / "n.png", tmp_path / "start.png"), noisy)
    expected = noisy.dream_array(pattern_array(seed=1).copy(), 2)
    np.testing.assert_array_equal(read_rgb(tmp_path / "p.png"), expected)
    assert not np.array_equal(read_rgb(tmp_path / "n.png"), expected)


# ---- objectives, layer schedules and guides ----


def test_layers_may_be_channel_terms_and_mappings():
    dreamer = Dreamer(
        {**FAST_DREAM, "layers": ["block3:5", {"layer": "block4", "weight": 0.5}]}, threads=THREADS
    )
    assert dreamer.objective_for_frame(1).layers == ["block3", "block4"]


def test_no_layers_means_the_model_default():
    dreamer = Dreamer({**FAST_DREAM, "layers": None}, threads=THREADS)
    assert dreamer.objective_for_frame(1).layers == ["block10"]


def test_every_scheduled_layer_is_checked_before_any_frame():
    settings = {
        **FAST_DREAM,
        "layer_schedule": {"mode": "cycle", "layers": ["block3", ["block4", "block99:2"]]},
    }
    with pytest.raises(
        DreamflowError, match="unknown layer 'block99' for model efficientnet_lite0"
    ):
        Dreamer(settings)


def test_a_bad_schedule_names_the_config_key():
    with pytest.raises(
        DreamflowError, match=r"dream\.layer_schedule: unknown layer schedule mode 'bounce'"
    ):
        Dreamer({**FAST_DREAM, "layer_schedule": {"mode": "bounce", "layers": ["block3"]}})


def test_an_unknown_start_is_an_error():
    # the schema catches it: a Dreamer is only ever given settings that passed it
    with pytest.raises(DreamflowError, match=r"dream\.start: 'blank' is not allowed"):
        config.validate_section("dream", {**FAST_DREAM, "start": "blank"})


@pytest.fixture(scope="module")
def scheduled():
    # frames 1 and 3 dream FAST_DREAM's own layer, so they match the unscheduled `dreamer`
    schedule = {"mode": "cycle", "layers": ["block4", "block5", "block4"]}
    return Dreamer({**FAST_DREAM, "layer_schedule": schedule}, threads=THREADS)


def test_a_layer_schedule_dreams_each_frame_with_its_layer(dreamer, scheduled):
    block5 = Dreamer({**FAST_DREAM, "layers": ["block5"]}, threads=THREADS)
    frame = pattern_array().copy()
    first, second = scheduled.dream_array(frame, 1), scheduled.dream_array(frame, 2)
    np.testing.assert_array_equal(first, dreamer.dream_array(frame))  # block4 on every frame
    np.testing.assert_array_equal(second, block5.dream_array(frame))
    assert not np.array_equal(first, second)


def test_objectives_are_built_once_per_distinct_term_list(scheduled):
    assert scheduled.objective_for_frame(1) is scheduled.objective_for_frame(3)
    assert scheduled.objective_for_frame(1) is not scheduled.objective_for_frame(2)


def test_run_job_follows_the_schedule(dreamer, scheduled, tmp_path):
    write_rgb(pattern_array(), tmp_path / "frame.png")
    for number in (1, 2):
        job = frame_job(scheduled, number, tmp_path / f"{number}.png", tmp_path / "frame.png")
        run_job(job, scheduled)
    run_job(frame_job(dreamer, 2, tmp_path / "fixed.png", tmp_path / "frame.png"), dreamer)
    np.testing.assert_array_equal(read_rgb(tmp_path / "1.png"), read_rgb(tmp_path / "fixed.png"))
    assert not np.array_equal(read_rgb(tmp_path / "2.png"), read_rgb(tmp_path / "fixed.png"))


def test_a_guide_turns_layer_terms_into_guide_terms(tmp_path):
    write_rgb(pattern_array(seed=5), tmp_path / "guide.png")
    guided = Dreamer(
        {**FAST_DREAM, "layers": ["block10"], "guide": str(tmp_path / "guide.png")}, threads=THREADS
    )
    objective = guided.objective_for_frame(1)
    guide_score = objective_value(guided.model, objective, to_tensor(pattern_array(seed=5).copy()))
    other = to_tensor(pattern_array(seed=6).copy())
    assert guide_score > objective_value(guided.model, objective, other)
    plain = Dreamer({**FAST_DREAM, "layers": ["block10"]}, threads=THREADS)
    frame = pattern_array(seed=6).copy()
    assert not np.array_equal(guided.dream_array(frame), plain.dream_array(frame))


# ---- noise start and zoom animation ----


@pytest.fixture(scope="module")
def noise_dreamer():
    return Dreamer({**FAST_DREAM, "start": "noise"}, threads=THREADS)


def test_noise_start_dreams_seeded_noise_of_the_frame_size(noise_dreamer, tmp_path):
    """The frame only gives the size: two different frames dream to the same picture."""
    write_rgb(pattern_array(seed=1), tmp_path / "a.png")
    write_rgb(pattern_array(seed=2), tmp_path / "b.png")
    for name in ("a", "b"):
        job = frame_job(noise_dreamer, 1, tmp_path / f"{name}-out.png", tmp_path / f"{name}.png")
        run_job(job, noise_dreamer)
    dreamed = read_rgb(tmp_path / "a-out.png")
    assert dreamed.shape == pattern_array().shape
    np.testing.assert_array_equal(dreamed, read_rgb(tmp_path / "b-out.png"))


def test_noise_differs_from_frame_to_frame_and_rerun_to_rerun(noise_dreamer):
    frame = pattern_array()
    first, second = noise_dreamer.start_array(frame, 1), noise_dreamer.start_array(frame, 2)
    assert first.shape == frame.shape and first.dtype == np.uint8
    assert not np.array_equal(first, second)
    np.testing.assert_array_equal(first, noise_dreamer.start_array(frame, 1))


def test_image_start_dreams_the_frame_itself(dreamer):
    frame = pattern_array()
    assert dreamer.start_array(frame, 3) is frame


ZOOM = {"factor": 1.1, "angle": 2.0}


def test_zoom_animation_dreams_the_zoomed_previous_dream_without_a_frame(dreamer, tmp_path):
    write_rgb(pattern_array(seed=3), tmp_path / "previous.png")
    job = frame_job(dreamer, 2, tmp_path / "out.png", previous=tmp_path / "previous.png", zoom=ZOOM)
    run_job(job, dreamer)
    expected = dreamer.dream_array(zoomed_input(read_rgb(tmp_path / "previous.png"), ZOOM), 2)
    np.testing.assert_array_equal(read_rgb(tmp_path / "out.png"), expected)


def test_zoom_animation_starts_from_the_first_frame(dreamer, tmp_path):
    write_rgb(pattern_array(seed=1), tmp_path / "frame.png")
    for zoom, name in ((ZOOM, "zoomed"), (None, "plain")):
        run_job(
            frame_job(dreamer, 1, tmp_path / f"{name}.png", tmp_path / "frame.png", zoom=zoom),
            dreamer,
        )
    np.testing.assert_array_equal(
        read_rgb(tmp_path / "zoomed.png"), read_rgb(tmp_path / "plain.png")
    )


def test_zoom_without_the_previous_dream_is_an_error(dreamer, tmp_path):
    with pytest.raises(
        DreamflowError, match="zoom animation needs the previous dreamed frame for frame 4"
    ):
        run_job(frame_job(dreamer, 4, tmp_path / "out.png", zoom=ZOOM), dreamer)


def test_zoomed_input_keeps_the_size_and_factor_one_changes_nothing():
    previous = pattern_array(seed=3).copy()
    assert zoomed_input(previous, ZOOM).shape == previous.shape
    np.testing.assert_array_equal(zoomed_input(previous, {"factor": 1.0}), previous)


def test_a_missing_frame_without_zoom_is_an_error(dreamer, tmp_path):
    with pytest.raises(DreamflowError, match="frame 2 has no input frame"):
        run_job(frame_job(dreamer, 2, tmp_path / "out.png"), dreamer)


def test_cudnn_benchmark_reaches_torch_on_a_cuda_dreamer_and_is_left_alone_on_the_cpu(dreamer):
    """The setting is applied per call, from each dreamer's own settings (a model server holds
    dreamers of several); on the CPU it is not touched."""
    import torch

    frame = pattern_array(36, 64).copy()
    before = torch.backends.cudnn.benchmark
    try:
        torch.backends.cudnn.benchmark = False
        benchmarked = Dreamer({**FAST_DREAM, "cudnn_benchmark": True}, threads=THREADS)
        assert np.array_equal(benchmarked.dream_array(frame), dreamer.dream_array(frame))
        assert torch.backends.cudnn.benchmark is False
        for setting in (True, False):
            # the switch the CUDA path flips, seen without a GPU: a dreamer whose device says cuda
            # and whose model stays on the CPU (the engine follows the image's device, set to CPU)
            cuda_dreamer = Dreamer({**FAST_DREAM, "cudnn_benchmark": setting}, threads=THREADS)
            cuda_dreamer.device = torch.device("cuda")
            torch.backends.cudnn.benchmark = not setting
            with pytest.raises((AssertionError, RuntimeError)):
                cuda_dreamer.dream_array(frame)  # no CUDA here: moving the image fails
            assert torch.backends.cudnn.benchmark is setting
    finally:
        torch.backends.cudnn.benchmark = before


def test_a_reduced_precision_dreamer_dreams_close_to_the_float32_one():
    frame = pattern_array(36, 64).copy()
    one_step = {**FAST_DREAM, "iterations": 1}
    exact = Dreamer(one_step, threads=THREADS).dream_array(frame)
    reduced = Dreamer({**one_step, "precision": "bfloat16"}, threads=THREADS).dream_array(frame)
    assert reduced.shape == exact.shape and not np.array_equal(reduced, exact)
    assert_same_dream(frame, reduced, exact, one_step)
