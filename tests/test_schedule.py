import pytest

from dreamflow import schedule

DEFAULT = ["block10"]


def frames(layer_schedule, count):
    return [schedule.layers_for_frame(layer_schedule, k, DEFAULT) for k in range(1, count + 1)]


def test_no_schedule_gives_the_default_terms_on_every_frame():
    assert frames(None, 3) == [DEFAULT] * 3


def test_cycle_uses_item_k_minus_1_modulo_n_like_deepdreamvideo_customloop():
    cycle = {"mode": "cycle", "layers": ["inception4c", "inception5b", "inception4c:97"]}
    assert frames(cycle, 7) == [
        ["inception4c"],
        ["inception5b"],
        ["inception4c:97"],
        ["inception4c"],
        ["inception5b"],
        ["inception4c:97"],
        ["inception4c"],
    ]


def test_segments_hold_each_item_for_every_frames_then_cycle():
    segments = {"mode": "segments", "every": 2, "layers": ["a", "b", "c"]}
    assert frames(segments, 8) == [["a"], ["a"], ["b"], ["b"], ["c"], ["c"], ["a"], ["a"]]


def test_segments_without_every_hold_each_item_for_one_frame():
    assert frames({"mode": "segments", "layers": ["a", "b"]}, 3) == [["a"], ["b"], ["a"]]


def test_segments_of_one_frame_are_a_cycle():
    items = ["a", "b", "c"]
    segments = {"mode": "segments", "every": 1, "layers": items}
    assert frames(segments, 5) == frames({"mode": "cycle", "layers": items}, 5)


def test_an_item_may_be_several_terms_at_once():
    mixed = {"mode": "cycle", "layers": [["a", {"layer": "b", "weight": 0.5}], "c"]}
    assert frames(mixed, 2) == [["a", {"layer": "b", "weight": 0.5}], ["c"]]


def test_all_term_lists_lists_every_item_once_per_position():
    mixed = {"mode": "segments", "every": 3, "layers": [["a", "b"], "c"]}
    assert schedule.all_term_lists(mixed, DEFAULT) == [["a", "b"], ["c"]]
    assert schedule.all_term_lists(None, DEFAULT) == [DEFAULT]


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"mode": "bounce", "layers": ["a"]}, "unknown layer schedule mode 'bounce'"),
        ({"layers": ["a"]}, "unknown layer schedule mode None"),
        ({"mode": "cycle", "layers": []}, "non-empty list"),
        ({"mode": "cycle"}, "non-empty list"),
        ({"mode": "cycle", "layers": "a"}, "non-empty list"),
        ({"mode": "cycle", "layers": ["a", []]}, "empty list of terms"),
        (
            {"mode": "segments", "layers": ["a"], "every": 0},
            "'every' must be an integer of at least 1",
        ),
        ({"mode": "segments", "layers": ["a"], "every": 2.5}, "'every' must be an integer"),
        (["a", "b"], "a layer schedule is a mapping"),
    ],
)
def test_bad_schedules_are_value_errors(bad, message):
    with pytest.raises(ValueError, match=message):
        schedule.layers_for_frame(bad, 1, DEFAULT)
    with pytest.raises(ValueError, match=message):
        schedule.all_term_lists(bad, DEFAULT)


def test_frame_numbers_start_at_one():
    with pytest.raises(ValueError, match="frame numbers start at 1"):
        schedule.layers_for_frame(None, 0, DEFAULT)
