"""The frame job: built once from a command line or a socket message, checked field by field."""

import pytest

from dreamflow.errors import DreamflowError
from dreamflow.job import FrameJob, JobSettings, settings_text

SETTINGS = JobSettings(dream={"model": "efficientnet_lite0"}, blend={"mode": "none"})


def test_a_job_survives_its_socket_form_unchanged():
    job = FrameJob(
        3, "out/000003.png", SETTINGS, 2, frame="f/000003.png", previous="out/000002.png"
    )
    assert FrameJob.from_message(job.to_message()) == job


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
        ({"settings": {"dream": {}}}, "'blend' must be a mapping"),
        ({"settings": {"dream": {}, "blend": {}, "jpg_quality": 0}}, "'jpg_quality' must be"),
        ({"settings": {"dream": {}, "blend": {}, "colour": 1}}, "unknown keys colour"),
    ],
)
def test_a_malformed_job_is_an_error_naming_the_field(change, message):
    job = FrameJob(1, "out.png", SETTINGS, 1).to_message()
    with pytest.raises(DreamflowError, match=message):
        FrameJob.from_message({**job, **change})


def test_a_job_without_its_required_fields_names_them():
    with pytest.raises(DreamflowError, match="missing fields output, threads"):
        FrameJob.from_message({"number": 1, "settings": SETTINGS.to_mapping()})


def test_settings_that_are_not_json_name_the_option():
    with pytest.raises(DreamflowError, match="--settings is not valid JSON"):
        JobSettings.from_text("{dream")
