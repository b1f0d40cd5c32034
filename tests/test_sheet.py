import numpy as np
import pytest

from dreamflow.sheet import GAP, LABEL_HEIGHT, contact_sheet


def solid(height, width, value):
    return np.full((height, width, 3), value, dtype=np.uint8)


def test_contact_sheet_places_each_image_on_the_grid():
    images = [solid(20, 30, 50), solid(20, 30, 150), solid(20, 30, 250)]
    sheet = contact_sheet(images, ["a", "b", "c"], columns=2)
    assert sheet.shape == (GAP + 2 * (20 + LABEL_HEIGHT + GAP), GAP + 2 * (30 + GAP), 3)
    assert (sheet[GAP + 5, GAP + 5] == 50).all()
    assert (sheet[GAP + 5, GAP + 30 + GAP + 5] == 150).all()
    assert (sheet[GAP + 20 + LABEL_HEIGHT + GAP + 5, GAP + 5] == 250).all()


def test_contact_sheet_draws_the_labels():
    blank = contact_sheet([solid(20, 60, 0)], [""], columns=1)
    labelled = contact_sheet([solid(20, 60, 0)], ["block10"], columns=1)
    label_band = (slice(GAP + 20, GAP + 20 + LABEL_HEIGHT), slice(GAP, GAP + 60))
    assert (labelled[label_band] != blank[label_band]).any()


def test_contact_sheet_needs_one_label_per_image():
    with pytest.raises(ValueError, match="2 images but 1 labels"):
        contact_sheet([solid(4, 4, 0), solid(4, 4, 0)], ["x"])
