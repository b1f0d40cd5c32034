from dreamflow import naming
from helpers import defaults


def test_term_labels_show_layer_channel_and_weight():
    assert naming.term_label("block10") == "block10"
    assert naming.term_label("block10:97") == "block10:97"
    assert naming.term_label({"layer": "block8", "channel": 3, "weight": 0.5}) == "block8:3x0.5"
    assert naming.term_label({"layer": "block8", "weight": 1.0}) == "block8"


def test_terms_label_joins_several_terms():
    assert naming.terms_label(["block8", {"layer": "block10", "channel": 2}]) == "block8+block10:2"
    assert naming.terms_label("head") == "head"


def test_dream_filename_encodes_the_parameters():
    settings = defaults("dream", layers=["block10"], iterations=7, seed=3)
    name = naming.dream_filename("cat", settings)
    assert name == "cat_efficientnet_lite0_block10_o3x1.4_i7_s1.5_j32_seed3.png"


def test_dream_filename_marks_noise_guide_and_tiles_and_stays_safe():
    settings = defaults(
        "dream", layers=["block10:5"], start="noise", guide="guides/my flower.jpg", tile_size=512
    )
    name = naming.dream_filename("a b", settings, suffix=".jpg")
    assert name.endswith("_noise_guide-my-flower_tile512.jpg")
    assert " " not in name and "/" not in name
    assert "block10-5" in name  # ':' is not safe on every file system
