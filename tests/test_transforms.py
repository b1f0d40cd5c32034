import pytest
import torch

from dreamflow import transforms


def dot_image(height, width, y, x):
    """Black with one white pixel at (y, x): its position shows where a transform moved content."""
    image = torch.zeros(1, 3, height, width)
    image[:, :, y, x] = 1.0
    return image


def brightest(image):
    return divmod(int(image[0, 0].argmax()), image.shape[-1])


def test_random_shift_is_seeded_and_bounded():
    first = [transforms.random_shift(torch.Generator().manual_seed(3), 5) for _ in range(2)]
    assert first[0] == first[1]
    generator = torch.Generator().manual_seed(0)
    shifts = [transforms.random_shift(generator, 5) for _ in range(50)]
    assert all(-5 <= d <= 5 for shift in shifts for d in shift)
    assert len(set(shifts)) > 10


def test_no_jitter_draws_nothing_from_the_generator():
    generator = torch.Generator().manual_seed(0)
    state = generator.get_state()
    assert transforms.random_shift(generator, 0) == (0, 0)
    assert torch.equal(generator.get_state(), state)


def test_shift_moves_content_and_unshift_undoes_it():
    image = dot_image(10, 12, 2, 3)
    shifted = transforms.shift(image, (4, -5))
    assert brightest(shifted) == (6, 10)  # x wraps around: 3 - 5 = -2 -> 10
    assert torch.equal(transforms.unshift(shifted, (4, -5)), image)


def test_zoom_keeps_the_size():
    image = torch.rand(1, 3, 17, 29, generator=torch.Generator().manual_seed(0))
    for factor, angle in [(1.05, 0.0), (1.5, 10.0), (0.8, -3.0)]:
        assert transforms.zoom(image, factor, angle).shape == image.shape


def test_zoom_by_one_without_angle_is_the_identity():
    image = torch.rand(1, 3, 17, 29, generator=torch.Generator().manual_seed(0))
    assert torch.equal(transforms.zoom(image, 1.0), image)


def test_zooming_in_moves_an_off_centre_feature_outwards():
    # the centre of a 40x60 image is at (19.5, 29.5): the dot sits 10.5 px right of it
    zoomed = transforms.zoom(dot_image(40, 60, 20, 40), 2.0)
    assert brightest(zoomed) == (20, 50)


def test_zoom_keeps_the_centre_in_place():
    image = torch.rand(1, 3, 21, 31, generator=torch.Generator().manual_seed(0))
    zoomed = transforms.zoom(image, 1.5)
    assert zoomed[..., 10, 15] == pytest.approx(image[..., 10, 15], abs=1e-5)


def test_positive_angle_turns_counter_clockwise():
    turned = transforms.zoom(dot_image(40, 60, 20, 40), 1.0, angle=90.0)
    assert brightest(turned) == (9, 30)  # right of centre -> above it


def test_fit_within_shrinks_the_longer_side_and_keeps_the_aspect():
    image = torch.rand(1, 3, 300, 1100)
    assert transforms.fit_within(image, 512).shape[-2:] == (140, 512)
    assert transforms.fit_within(image.transpose(2, 3), 512).shape[-2:] == (512, 140)


def test_fit_within_never_enlarges():
    image = torch.rand(1, 3, 30, 50)
    assert transforms.fit_within(image, 512) is image
