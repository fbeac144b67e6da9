"""Temporal aggregation honours the frame mask."""

from __future__ import annotations

import pytest
import torch

from lpr_core.models.aggregator import AGGREGATORS, TemporalAggregator


@pytest.mark.parametrize("kind", AGGREGATORS)
def test_padded_frames_do_not_change_the_clip(kind):
    torch.manual_seed(0)
    agg = TemporalAggregator(kind, 16, 5, layers=1, heads=2).eval()
    x = torch.randn(3, 5, 16)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]], dtype=torch.bool)
    y = agg(x, mask)
    x2 = x.clone()
    x2[~mask] = torch.randn(int((~mask).sum()), 16) * 100
    torch.testing.assert_close(agg(x2, mask), y)
    assert y.shape == (3, 16)
    # a real frame does change it
    x3 = x.clone()
    x3[0] += torch.randn(5, 16)  # not a constant shift: LayerNorm would remove that
    assert not torch.allclose(agg(x3, mask)[0], y[0])


def test_mean_and_middle_match_definitions():
    x = torch.arange(2 * 4 * 3, dtype=torch.float32).reshape(2, 4, 3)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]], dtype=torch.bool)
    mean = TemporalAggregator("mean", 3, 4)(x, mask)
    torch.testing.assert_close(mean[0], x[0, :3].mean(0))
    torch.testing.assert_close(mean[1], x[1].mean(0))
    middle = TemporalAggregator("middle", 3, 4)(x, mask)
    torch.testing.assert_close(middle[0], x[0, 1])
    torch.testing.assert_close(middle[1], x[1, 1])


def test_bad_inputs_are_rejected():
    with pytest.raises(ValueError, match="unknown aggregator"):
        TemporalAggregator("max", 8, 4)
    agg = TemporalAggregator("mean", 8, 2)
    with pytest.raises(ValueError, match="at most 2"):
        agg(torch.randn(1, 3, 8), torch.ones(1, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="at least one real frame"):
        agg(torch.randn(1, 2, 8), torch.zeros(1, 2, dtype=torch.bool))
