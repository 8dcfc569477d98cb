"""Ranking metrics: the percentile rank of a target item under a scorer, MPR and hit@k.

Percentile follows the paper: the share of catalog items the scorer ranks strictly below the
target (ties count against it), so 1.0 means "ranked first" and 0.5 is chance.
"""

from __future__ import annotations

import numpy as np


def percentile_rank(scores: np.ndarray, target: int) -> float:
    """Share of items scored strictly below ``scores[target]`` (over all N items, as in PAD)."""
    scores = np.asarray(scores)
    return float((scores < scores[target]).sum() / scores.shape[0])


def rank_of(scores: np.ndarray, target: int) -> int:
    """1-based rank of ``target`` (ties broken against it)."""
    scores = np.asarray(scores)
    return int((scores >= scores[target]).sum())


def mean_percentile_rank(score_rows: list[np.ndarray], targets: list[int]) -> float:
    return float(np.mean([percentile_rank(s, t) for s, t in zip(score_rows, targets)]))


def hit_at(score_rows: list[np.ndarray], targets: list[int], k: int) -> float:
    return float(np.mean([rank_of(s, t) <= k for s, t in zip(score_rows, targets)]))


def paired_bootstrap_delta(base: np.ndarray, other: np.ndarray, n_boot: int = 4000, level: float = 0.95,
                           seed: int = 0) -> tuple[float, float, float]:
    """Mean of ``other - base`` over the same evaluation units (personas), with a paired bootstrap
    confidence interval: (mean, low, high).

    Two students scored on the same held-out personas differ far less than their MPRs' own
    spreads suggest, because hard personas are hard for both; resampling personas *in pairs*
    is what tells a real gain from persona noise when only a few dozen personas are played.
    """
    base, other = np.asarray(base, dtype=np.float64), np.asarray(other, dtype=np.float64)
    if base.shape != other.shape or base.ndim != 1 or len(base) == 0:
        raise ValueError(f"need two equally long 1-d arrays, got {base.shape} and {other.shape}")
    diff = other - base
    idx = np.random.default_rng(seed).integers(0, len(diff), size=(n_boot, len(diff)))
    means = diff[idx].mean(axis=1)
    tail = (1 - level) / 2
    return float(diff.mean()), float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail))
