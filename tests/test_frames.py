from fractions import Fraction

import pytest

from dreamflow.frames import frame_name, natural_key, select_range


def test_frame_name_is_zero_padded_to_six_digits():
    assert frame_name(1) == "000001"
    assert frame_name(42) == "000042"
    assert frame_name(123456) == "123456"


def test_frame_names_sort_as_text_in_numeric_order():
    numbers = [1, 2, 9, 10, 11, 100, 999, 1000]
    assert sorted(frame_name(n) for n in numbers) == [frame_name(n) for n in numbers]


def test_frame_name_rejects_numbers_below_one():
    with pytest.raises(ValueError, match="start at 1"):
        frame_name(0)


def test_natural_key_puts_img2_before_img10():
    names = ["img10.png", "img2.png", "img1.png", "IMG3.png", "img100.png"]
    assert sorted(names, key=natural_key) == [
        "img1.png",
        "img2.png",
        "IMG3.png",
        "img10.png",
        "img100.png",
    ]


def test_natural_key_compares_several_numbers_in_a_name():
    names = ["shot2_frame10", "shot10_frame1", "shot2_frame9"]
    assert sorted(names, key=natural_key) == ["shot2_frame9", "shot2_frame10", "shot10_frame1"]


def test_select_range_defaults_to_every_frame():
    assert select_range(6, 6) == (1, 6)


def test_select_range_with_start_and_end_frames():
    assert select_range(10, 25, start=3, end=7) == (3, 7)


def test_select_range_clips_end_to_the_last_frame():
    assert select_range(10, 25, start=3, end=100) == (3, 10)


def test_select_range_start_time_picks_the_frame_covering_it():
    # at 10 fps frame k covers [(k-1)/10, k/10): 0.25 s lies in frame 3, 0.3 s starts frame 4
    assert select_range(20, 10, start_time=0.25) == (3, 20)
    assert select_range(20, 10, start_time=0.3) == (4, 20)


def test_select_range_end_time_is_exclusive():
    # frame 5 starts at 0.4 s, so an end at 0.4 s stops after frame 4; 0.41 s reaches into frame 5
    assert select_range(20, 10, end_time=0.4) == (1, 4)
    assert select_range(20, 10, end_time=0.41) == (1, 5)


def test_select_range_accepts_fractional_frame_rates():
    ntsc = Fraction(30000, 1001)
    assert select_range(300, ntsc, start_time=1.0, end_time=2.0) == (30, 60)


def test_select_range_frames_take_precedence_over_times():
    assert select_range(20, 10, start=2, end=3, start_time=1.0, end_time=1.5) == (2, 3)


def test_select_range_rejects_an_input_without_frames():
    with pytest.raises(ValueError, match="no frames"):
        select_range(0, 25)


def test_select_range_start_past_the_end_names_frames_start():
    with pytest.raises(ValueError, match=r"frames\.start is past the last frame \(6\)"):
        select_range(6, 6, start=7)


def test_select_range_start_time_past_the_end_names_frames_start_time():
    with pytest.raises(ValueError, match=r"frames\.start_time is past the last frame \(6\)"):
        select_range(6, 6, start_time=1.0)


def test_select_range_rejects_an_empty_range():
    with pytest.raises(ValueError, match="empty"):
        select_range(10, 25, start=5, end=4)
    with pytest.raises(ValueError, match="empty"):
        select_range(20, 10, start_time=0.5, end_time=0.5)
