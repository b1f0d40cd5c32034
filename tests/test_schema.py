"""The config schema is the one source of allowed values: where code keeps its own copy of a fact
(for speed, or because it runs without the schema), these tests prove the two agree."""

import re

import pytest

from dreamflow import blend, config, engine, models, objectives, schedule
from dreamflow.cli import build_parser
from dreamflow.errors import DreamflowError

DREAM = config.section_schema("dream")["properties"]


def test_the_model_list_is_the_model_zoo():
    assert sorted(DREAM["model"]["enum"]) == sorted(models.MODELS)


def test_the_smallest_tile_is_the_engines():
    assert DREAM["tile_size"]["minimum"] == engine.MIN_TILE_SIZE


def test_layer_schedule_and_blend_modes_are_the_ones_the_code_runs():
    schedule_modes = DREAM["layer_schedule"]["oneOf"][1]["properties"]["mode"]["enum"]
    assert schedule_modes == list(schedule.MODES)
    settings = config.section_defaults("blend")
    for mode in config.section_schema("blend")["properties"]["mode"]["enum"]:
        assert 0.0 <= blend.blend_factor({**settings, "mode": mode}, 5) <= 1.0


TERMS = [
    "block4",
    "block4:3",
    "layer1.2",
    "mixed_6a:12",
    "block4:",
    ":3",
    "block4:x",
    "a b",
    "block-4",
    "block4:3:1",
    "",
    "block4 ",
    "block4:03",
]


@pytest.mark.parametrize("term", TERMS)
def test_the_term_grammar_of_the_schema_is_the_parsers(term):
    pattern = config.load_schema()["$defs"]["term"]["oneOf"][0]["pattern"]
    by_schema = re.search(pattern, term) is not None
    try:
        objectives.parse(term)
        by_parser = True
    except DreamflowError:
        by_parser = False
    assert by_schema == by_parser


def test_the_dream_command_has_one_option_per_dream_setting_with_the_schemas_choices():
    dream = build_parser()._subparsers._group_actions[0].choices["dream"]
    options = {action.dest: action for action in dream._actions}
    for key, spec in DREAM.items():
        if key == "layer_schedule":  # a schedule needs frames: not for a single image
            assert key not in options
            continue
        assert key in options, key
        if "enum" in spec:
            assert list(options[key].choices) == spec["enum"]
        assert options[key].default is None  # unset options take the schema's default


@pytest.mark.parametrize("layer", ["block4", "layer1.2", "block4:3", "", "a b", "block-4"])
def test_the_layer_names_of_mapping_terms_follow_the_same_grammar(layer):
    pattern = config.load_schema()["$defs"]["term"]["oneOf"][1]["properties"]["layer"]["pattern"]
    try:
        objectives.parse({"layer": layer})
        by_parser = True
    except DreamflowError:
        by_parser = False
    assert (re.search(pattern, layer) is not None) == by_parser
