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
