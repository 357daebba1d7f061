"""Statistical checks of fault counts and positions over many seeds."""

from __future__ import annotations

import numpy as np
import torch
from scipy import stats

import faultlab as fl


def _mixed():
    """float32 Linear(8,16) (4096 bits) + float16 Linear(16,4) (1024 bits) + int8-free."""
    m = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
    m[2].half()
    return m


def test_rate_gives_binomial_counts_spread_in_proportion_to_bits():
    m, rate, seeds = _mixed(), 0.004, 600
    total = 128 * 32 + 64 * 16
    counts, per_layer = [], np.zeros(2)
    bit_hist = np.zeros(32)
    for s in range(seeds):
        fmap = fl.sample_faults(m, fl.BitFlip(rate=rate), seed=s)
        assert fmap.eligible_bits == total
        counts.append(len(fmap))
        per_layer += np.bincount(fmap.param, minlength=2)
        bit_hist += np.bincount(fmap.bit[fmap.param == 0], minlength=32)
        # distinct positions
        key = fmap.param.astype(np.int64) * 10**6 + fmap.index * 32 + fmap.bit
        assert np.unique(key).size == key.size
    counts = np.array(counts)
    mean, var = total * rate, total * rate * (1 - rate)  # 20.48, 20.40
    assert abs(counts.mean() - mean) < 4 * np.sqrt(var / seeds)
    assert 0.8 * var < counts.var(ddof=1) < 1.2 * var  # sd of the variance estimate ~ 5.8%
    # Layers receive faults in proportion to their bits (4096 : 1024), not per layer.
    expected = per_layer.sum() * np.array([4096, 1024]) / total
    assert stats.chisquare(per_layer, expected).pvalue > 1e-3
    # Every bit of a float32 word is equally likely.
    assert stats.chisquare(bit_hist).pvalue > 1e-3
    assert np.bincount(fmap.bit[fmap.param == 1], minlength=16).size == 16  # float16: bits < 16


def test_count_is_exact_and_positions_uniform_over_elements_and_bits():
    m = _mixed()
    elems = np.zeros(128)
    for s in range(300):
        fmap = fl.sample_faults(m, fl.BitFlip(count=50, bits=(3, 10, 15)), seed=s)
        assert len(fmap) == 50
        assert set(np.unique(fmap.bit).tolist()) <= {3, 10, 15}
        elems += np.bincount(fmap.index[fmap.param == 0], minlength=128)
    assert stats.chisquare(elems).pvalue > 1e-3
    # eligible bits with the restriction: 3 per word in both layers -> 128*3 + 64*3 = 576
    assert fmap.eligible_bits == 576


def test_stuck_and_flip_draw_the_same_positions_for_the_same_seed():
    m = _mixed()
    a = fl.sample_faults(m, fl.BitFlip(rate=0.01), seed=7)
    b = fl.sample_faults(m, fl.StuckAt(0, rate=0.01), seed=7)
    assert np.array_equal(a.index, b.index) and np.array_equal(a.bit, b.bit)
    assert set(b.to_frame()["kind"]) == {"stuck0"}
