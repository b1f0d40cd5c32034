import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from dreamflow.blend import blend_factor, mix, uses_previous_frame
from helpers import defaults


def settings(**overrides):
    return defaults("blend", **overrides)


@pytest.mark.parametrize("mode", ["none", "constant", "loop", "random"])
def test_first_frame_has_factor_zero_in_every_mode(mode):
    assert blend_factor(settings(mode=mode, factor=0.7, low=0.3, high=0.9), 1) == 0.0


def test_mode_none_never_blends():
    assert [blend_factor(settings(mode="none", factor=0.7), n) for n in range(1, 6)] == [0.0] * 5
    assert not uses_previous_frame(settings(mode="none"))


def test_mode_constant_uses_factor_from_frame_two_on():
    s = settings(mode="constant", factor=0.7)
    assert [blend_factor(s, n) for n in range(1, 5)] == [0.0, 0.7, 0.7, 0.7]
    assert uses_previous_frame(s)


def test_mode_loop_is_a_triangle_wave_between_low_and_high():
    s = settings(mode="loop", low=0.2, high=0.8, period=4)
    values = [blend_factor(s, n) for n in range(2, 11)]
    assert values == pytest.approx([0.2, 0.5, 0.8, 0.5, 0.2, 0.5, 0.8, 0.5, 0.2])


def test_mode_loop_repeats_with_its_period_and_peaks_half_way():
    s = settings(mode="loop", low=0.1, high=0.9, period=10)
    values = [blend_factor(s, n) for n in range(2, 32)]
    assert values[0] == pytest.approx(0.1)
    assert values[5] == pytest.approx(0.9)
    assert values[:10] == pytest.approx(values[10:20])
    assert values[:10] == pytest.approx(values[20:30])
    assert all(0.1 - 1e-12 <= v <= 0.9 + 1e-12 for v in values)
    assert values[:6] == sorted(values[:6])


def test_mode_random_is_within_low_and_high_and_varies():
    s = settings(mode="random", low=0.3, high=0.6, seed=5)
    values = [blend_factor(s, n) for n in range(2, 200)]
    assert all(0.3 <= v <= 0.6 for v in values)
    assert len(set(values)) > 100


def test_mode_random_is_reproducible_per_seed():
    s = settings(mode="random", low=0.0, high=1.0, seed=5)
    first = [blend_factor(s, n) for n in range(2, 20)]
    assert [blend_factor(s, n) for n in reversed(range(2, 20))] == first[::-1]
    other = [
        blend_factor(settings(mode="random", low=0.0, high=1.0, seed=6), n) for n in range(2, 20)
    ]
    assert other != first


def test_mode_random_gives_the_same_factor_in_another_process():
    """Each frame is dreamed by its own process, so the factor must not depend on hash
    randomisation."""
    s = settings(mode="random", low=0.0, high=1.0, seed=3)
    code = (
        "import json, sys; from dreamflow.blend import blend_factor; "
        "print(repr(blend_factor(json.loads(sys.argv[1]), 7)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, json.dumps(s)],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "12345", "PATH": ""},
    )
    assert float(result.stdout) == blend_factor(s, 7)


def test_unknown_mode_raises():
    with pytest.raises(ValueError, match="unknown blend mode"):
        blend_factor(settings(mode="sometimes"), 2)


def test_mix_factor_one_gives_the_previous_dream_and_zero_the_raw_frame():
    raw = np.full((2, 3, 3), 10.0)
    previous = np.full((2, 3, 3), 200.0)
    np.testing.assert_array_equal(mix(raw, previous, 1.0), previous)
    np.testing.assert_array_equal(mix(raw, previous, 0.0), raw)


def test_mix_factor_is_the_share_of_the_previous_dream():
    raw = torch.zeros(1, 3, 2, 2)
    previous = torch.ones(1, 3, 2, 2)
    assert torch.allclose(mix(raw, previous, 0.25), torch.full((1, 3, 2, 2), 0.25))
