"""PAD's preference-aligned sampler draws its quota from every score bin."""

from __future__ import annotations

import numpy as np
import pytest

from distill.sampling import SamplerConfig, bin_of, sample_candidates


def test_bins_min_max_and_top_inclusive():
    s = np.array([10.0, 20.0, 16.9, 17.0, 19.0, 19.5, 20.0])  # scaled: 0, 1, .69, .7, .9, .95, 1
    assert bin_of(s).tolist() == [0, 3, 0, 1, 2, 3, 3]
    assert bin_of(np.ones(4)).tolist() == [0, 0, 0, 0]  # constant scores: one bin, no NaN


def test_draws_from_every_bin_many_seeds():
    rng0 = np.random.default_rng(0)
    scores = rng0.beta(2, 5, size=5000)  # skewed like cosine scores: the top bins are thin
    bins = bin_of(scores)
    assert all((bins == b).sum() >= 2 for b in range(4))
    for seed in range(200):
        idx = sample_candidates(scores, np.random.default_rng(seed))
        assert len(idx) == 5 and len(set(idx.tolist())) == 5
        assert sorted(bins[idx].tolist()) == [0, 1, 2, 3, 3]


def test_sparse_bins_fill_from_neighbours():
    scores = np.array([0.0] * 50 + [1.0])  # only bins 0 and 3 populated; bin 3 holds one item
    idx = sample_candidates(scores, np.random.default_rng(1))
    assert len(idx) == 5 and len(set(idx.tolist())) == 5
    assert 50 in idx.tolist()
    assert len(sample_candidates(np.arange(3.0), np.random.default_rng(0))) == 3  # N < k


def test_config_validation():
    assert SamplerConfig().k == 5
    assert SamplerConfig(edges=[0, 0.5, 1], draws=[1, 3]).k == 4
    with pytest.raises(ValueError):
        SamplerConfig(edges=[0, 0.5], draws=[1, 1])
