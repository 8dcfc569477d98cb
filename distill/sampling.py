"""Preference-aligned sampling (PAD): pick a match's candidates across the student's score range.

Random catalog items are nearly all poor matches for a persona and teach little, so the
current student scores the whole training catalog for the persona, the scores are min-max
scaled to [0, 1], and candidates are drawn from bins of that range. PAD's bins are
[0, .7), [.7, .9), [.9, .95), [.95, 1] with 1, 1, 1, 2 draws: one k = 5 match that mixes
clear negatives with the student's current favourites, which the teacher then ranks.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

PAD_EDGES: tuple[float, ...] = (0.0, 0.7, 0.9, 0.95, 1.0)
PAD_DRAWS: tuple[int, ...] = (1, 1, 1, 2)


class SamplerConfig(BaseModel):
    """Score bins (fractions of the min-max range) and how many candidates each contributes."""

    model_config = ConfigDict(extra="forbid")
    edges: list[float] = Field(list(PAD_EDGES), description="bin edges over the min-max scaled scores, 0 ... 1 (PAD: 0, .7, .9, .95, 1)")
    draws: list[int] = Field(list(PAD_DRAWS), description="candidates drawn per bin (PAD: 1, 1, 1, 2 -> k = 5)")

    @model_validator(mode="after")
    def _check(self) -> "SamplerConfig":
        if len(self.edges) != len(self.draws) + 1:
            raise ValueError("edges must have one more entry than draws")
        if any(b <= a for a, b in zip(self.edges, self.edges[1:])) or self.edges[0] != 0 or self.edges[-1] != 1:
            raise ValueError("edges must increase from 0 to 1")
        if any(d < 0 for d in self.draws) or sum(self.draws) < 2:
            raise ValueError("draws must be >= 0 and sum to at least 2")
        return self

    @property
    def k(self) -> int:
        return sum(self.draws)


def bin_of(scores: np.ndarray, edges: list[float] | tuple[float, ...] = PAD_EDGES) -> np.ndarray:
    """Bin index of each score after min-max scaling; the top edge is inclusive."""
    s = np.asarray(scores, dtype=np.float64)
    lo, hi = s.min(), s.max()
    u = (s - lo) / (hi - lo) if hi > lo else np.zeros_like(s)
    return np.clip(np.searchsorted(np.asarray(edges[1:-1]), u, side="right"), 0, len(edges) - 2)


def sample_candidates(scores: np.ndarray, rng: np.random.Generator, cfg: SamplerConfig | None = None) -> np.ndarray:
    """Indices of ``cfg.k`` distinct items drawn per bin (without replacement).

    A bin with too few items gives what it has; the shortfall is drawn from the nearest
    bins above it first (then below), so a match always has k candidates when N >= k.
    """
    cfg = cfg or SamplerConfig()
    bins = bin_of(scores, cfg.edges)
    pools = [list(rng.permutation(np.flatnonzero(bins == b))) for b in range(len(cfg.draws))]
    return np.asarray(fill_from_pools(pools, cfg.draws), dtype=np.int64)


def fill_from_pools(pools: list[list], draws: list[int] | tuple[int, ...]) -> list:
    """Take ``draws[b]`` items from the front of each bin's pool (already in random order); a bin
    with too few gives what it has and the shortfall comes from the nearest bins above it first
    (then below). The pools need hold no more than ``sum(draws)`` items each: the chunked sampler
    (``distill.scoring.sample_matches``) keeps just that many per bin."""
    pools = [list(p) for p in pools]
    k = min(sum(draws), sum(len(p) for p in pools))
    chosen: list = []
    shortfall = []
    for b, want in enumerate(draws):
        take = pools[b][:want]
        pools[b] = pools[b][want:]
        chosen.extend(take)
        shortfall.append(want - len(take))
    for b, missing in enumerate(shortfall):
        order = [j for j in range(b + 1, len(pools))] + [j for j in range(b - 1, -1, -1)]
        for j in order:
            while missing and pools[j]:
                chosen.append(pools[j].pop(0))
                missing -= 1
    return [c if not isinstance(c, np.integer) else int(c) for c in chosen[:k]]
