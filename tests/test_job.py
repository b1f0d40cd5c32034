"""The frame job: built once from a command line or a socket message, checked field by field."""

import pytest

from dreamflow import __version__
from dreamflow.errors import DreamflowError
from dreamflow.job import (
    VERSION_KEY,
    BlendJob,
    BlendSettings,
    FlowJob,
    FrameJob,
    JobSettings,
    settings_text,
)

SETTINGS = JobSettings(dream={"model": "efficientnet_lite0"})


def written_here(change):
    """`change` with its settings, if any, naming this version: the version is checked first."""
    if "settings" not in change:
        return change
    return {**change, "settings": {VERSION_KEY: __version__, **change["settings"]}}


BLEND = BlendSettings(blend={"mode": "constant", "flow": "dis"}, start="noise", seed=4)


def test_a_job_survives_its_socket_form_unchanged():
    job = FrameJob(
        3, "out/000003.png", SETTINGS, 2, frame="f/000003.png", previous="out/000002.png"
    )
    assert FrameJob.from_message(job.to_message()) == job
    prepared = FrameJob(3, "out/000003.png", SETTINGS, 2, frame="b/000003.png", prepared=True)
    assert FrameJob.from_message(prepared.to_message()) == prepared


def test_blend_and_flow_jobs_survive_their_socket_form():
    blend = BlendJob(5, "b/000005.png", BLEND, "f/5.png", "d/4.png", "f/4.png", "flow/5.npz")
    assert BlendJob.from_message(blend.to_message()) == blend
    flow = FlowJob("flow/5.npz", "f/5.png", "f/4.png", "raft_small", threads=2, device="cuda")
    assert FlowJob.from_message(flow.to_message()) == flow


def test_settings_text_is_independent_of_key_order():
    assert settings_text({"b": 1, "a": [1, 2]}) == settings_text({"a": [1, 2], "b": 1})
    assert settings_text({"a": 1}) != settings_text({"a": 2})
    assert JobSettings.from_text(SETTINGS.text()) == SETTINGS


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"number": 0}, "'number' must be an integer of at least 1"),
        ({"number": "1"}, "'number' must be an integer of at least 1"),
        ({"threads": True}, "'threads' must be an integer of at least 1"),
        ({"output": ""}, "'output' must be a path"),
        ({"frame": 5}, "'frame' must be a path or null"),
        ({"surprise": 1}, "unknown fields surprise"),
        ({"prepared": 1}, "'prepared' must be true or false"),
        ({"settings": {"zoom": {}}}, "'dream' must be a mapping"),
        ({"settings": {"dream": {}, "jpg_quality": 0}}, "'jpg_quality' must be"),
        ({"settings": {"dream": {}, "blend": {}}}, "unknown keys blend"),
    ],
)
def test_a_malformed_job_is_an_error_naming_the_field(change, message):
    job = FrameJob(1, "out.png", SETTINGS, 1).to_message()
    with pytest.raises(DreamflowError, match=message):
        FrameJob.from_message({**job, **written_here(change)})


def test_a_job_without_its_required_fields_names_them():
    with pytest.raises(DreamflowError, match="missing fields output, threads"):
        FrameJob.from_message({"number": 1, "settings": SETTINGS.to_mapping()})


def test_settings_that_are_not_json_name_the_option():
    with pytest.raises(DreamflowError, match="--settings is not valid JSON"):
        JobSettings.from_text("{dream")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"previous": None}, "blend job: 'previous' must be a path"),
        ({"flow": None}, "blend.flow dis needs 'previous_frame' and 'flow'"),
        ({"settings": {"blend": {}, "start": "clouds"}}, "'start' must be image or noise"),
        ({"settings": {"blend": {}, "seed": -1}}, "'seed' must be an integer of at least 0"),
        ({"settings": {"start": "image"}}, "'blend' must be a mapping"),
    ],
)
def test_a_malformed_blend_job_names_the_field(change, message):
    job = BlendJob(2, "b.png", BLEND, "f2.png", "d1.png", "f1.png", "flow.npz").to_message()
    with pytest.raises(DreamflowError, match=message):
        BlendJob.from_message({**job, **written_here(change)})


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"method": "lucas"}, "'method' must be one of dis, farneback, raft_small, raft_large"),
        ({"device": "tpu"}, "'device' must be auto, cpu or cuda"),
        ({"threads": 0}, "'threads' must be an integer of at least 1"),
        ({"frame": ""}, "flow job: 'frame' must be a path"),
    ],
)
def test_a_malformed_flow_job_names_the_field(change, message):
    job = FlowJob("flow.npz", "f2.png", "f1.png", "dis").to_message()
    with pytest.raises(DreamflowError, match=message):
        FlowJob.from_message({**job, **change})
