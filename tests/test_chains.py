import pytest

from dreamflow.chains import (
    Chains,
    Segment,
    node_name,
    parse_node,
    parse_ranges,
    ranges_text,
    segments,
)


def test_one_chain_without_cuts_or_max_chain():
    chains = Chains(5)
    assert chains.segments == [Segment(1, 5)]
    assert [chains.previous(n) for n in range(1, 6)] == [
        None,
        (1, False),
        (2, False),
        (3, False),
        (4, False),
    ]
    assert chains.seams == [] and chains.scene_starts == [1]


def test_a_cut_starts_a_new_chain_and_ignores_cuts_outside_the_frames():
    chains = Chains(6, cuts=[4, 1, 9])
    assert chains.segments == [Segment(1, 3), Segment(4, 6)]
    assert chains.previous(4) is None and chains.previous(5) == (4, False)
    assert chains.scene_starts == [1, 4]


def test_a_cut_at_frame_2_and_a_scene_of_one_frame():
    chains = Chains(4, cuts=[2, 3])
    assert [chains.previous(n) for n in range(1, 5)] == [None, None, None, (3, False)]


def test_long_scenes_split_into_overlapping_segments():
    # 20 frames, segments of at most 8 sharing 2: 1-8, 7-14, 13-20
    assert segments(20, max_chain=8, overlap=2) == [
        Segment(1, 8),
        Segment(7, 14, lead=2),
        Segment(13, 20, lead=2),
    ]
    chains = Chains(20, max_chain=8, overlap=2)
    assert chains.seams == [7, 8, 13, 14]
    # the old segment continues through its tail; the new one starts fresh at 7 and continues
    # from its own dreams of the overlap frames
    assert chains.previous(8) == (7, False)
    assert chains.previous(7, lead=True) is None
    assert chains.previous(8, lead=True) == (7, True)
    assert chains.previous(9) == (8, True)
    assert chains.previous(15) == (14, True)
    assert [chains.lead_weight(n) for n in (7, 8)] == [pytest.approx(1 / 3), pytest.approx(2 / 3)]
    assert len(chains.nodes()) == 20 + 4


def test_a_short_remainder_still_overlaps_fully():
    assert segments(9, max_chain=8, overlap=2) == [Segment(1, 8), Segment(7, 9, lead=2)]


def test_segments_restart_at_each_scene():
    assert segments(12, cuts=[7], max_chain=4, overlap=1) == [
        Segment(1, 4),
        Segment(4, 6, lead=1),
        Segment(7, 10),
        Segment(10, 12, lead=1),
    ]


def test_overlap_must_leave_room():
    with pytest.raises(ValueError, match="max_chain"):
        segments(10, max_chain=4, overlap=2)


def test_one_frame():
    chains = Chains(1, cuts=[], max_chain=5, overlap=2)
    assert chains.nodes() == [(1, False)] and chains.previous(1) is None


def test_node_names_round_trip():
    assert node_name(27) == "000027" and node_name(27, lead=True) == "000027-lead"
    assert parse_node("000027-lead") == (27, True) and parse_node("000027") == (27, False)


def test_ranges_round_trip():
    assert ranges_text([3, 4, 5, 9, 11, 12]) == "3-5,9,11-12"
    assert parse_ranges("3-5,9,11-12") == [3, 4, 5, 9, 11, 12]
    assert parse_ranges("") == [] and ranges_text([]) == ""
