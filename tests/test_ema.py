"""The weight EMA: its decay ramp, the average it keeps, and what a checkpoint holds."""

from __future__ import annotations

import math

import pytest
import torch

from booksegm.config import ConfigError
from booksegm.training.ema import EMAWeights


def test_the_decay_ramps_up_from_a_copy_to_its_target():
    ema = EMAWeights(decay=0.99, ramp_steps=100)
    assert ema.effective_decay(0) == 0.0
    assert ema.effective_decay(100) == pytest.approx(0.99 * (1 - math.exp(-1)))
    assert ema.effective_decay(10_000) == pytest.approx(0.99)
    assert EMAWeights(decay=0.9, ramp_steps=0).effective_decay(1) == 0.9


def test_average_moves_float_tensors_by_one_minus_decay_and_copies_integer_buffers():
    ema = EMAWeights(decay=0.9, ramp_steps=0)
    averaged, current = [torch.zeros(3)], [torch.ones(3)]
    ema.average(averaged, current, torch.tensor(5))
    torch.testing.assert_close(averaged[0], torch.full((3,), 0.1))
    counters = [torch.tensor(3)]
    ema.average(counters, [torch.tensor(7)], torch.tensor(5))
    assert int(counters[0]) == 7


@pytest.mark.parametrize("decay, ramp", [(1.0, 10), (0.0, 10), (0.9, -1)])
def test_impossible_settings_are_config_errors(decay, ramp):
    with pytest.raises(ConfigError, match="callbacks.ema"):
        EMAWeights(decay=decay, ramp_steps=ramp)
