"""Pure bracket arithmetic for k-way single elimination (no Ray, no I/O).

Rule per round, chosen so the teacher pays the minimum number of calls:
- shuffle the survivors with the round's seed;
- if at most k remain, they play one final match;
- otherwise they play as many full k-way matches as fit, and the remainder (< k) get byes.

Each match of size m eliminates m - 1 candidates and only the final can be smaller than k
(by at most k - 2), so a tournament over N candidates costs exactly ceil((N - 1) / (k - 1))
teacher calls per view: 1,024 at N = 4,096 and k = 5 instead of PAD's 4,095 at k = 2.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from distill.seeding import rng_for


@dataclass(frozen=True)
class RoundPlan:
    """The matches of one round (candidate ids in shown order) and the ids with a bye."""

    matches: tuple[tuple[str, ...], ...]
    byes: tuple[str, ...]


def plan_positions(n: int, k: int, seed: int) -> tuple[np.ndarray, int]:
    """The rule below on positions: the shuffled order of ``range(n)`` and how many of its first
    entries play (in matches of k, or one final match of all when ``n <= k``); the rest have byes.
    The engine plans whole blocks of tournaments with this, without per-match Python objects."""
    if k < 2:
        raise ValueError(f"k must be >= 2, got {k}")
    if n <= 1:
        return np.arange(n), 0
    order = np.random.default_rng(seed).permutation(n)
    return order, (n if n <= k else (n // k) * k)


def plan_round(survivors: list[str], k: int, seed: int) -> RoundPlan:
    """Shuffle ``survivors`` with ``seed`` and split them into matches and byes."""
    order, played = plan_positions(len(survivors), k, seed)
    shuffled = [survivors[i] for i in order]
    if played == 0:
        return RoundPlan(matches=(), byes=tuple(shuffled))
    size = min(k, played)
    matches = tuple(tuple(shuffled[i:i + size]) for i in range(0, played, size))
    return RoundPlan(matches=matches, byes=tuple(shuffled[played:]))


def round_seed(tournament_seed: int, round_index: int) -> int:
    return int(rng_for(tournament_seed, "round", round_index).integers(1 << 62))


def round_sizes(n: int, k: int) -> list[int]:
    """Number of candidates entering each round (the arithmetic only, no ids)."""
    sizes = []
    while n > 1:
        sizes.append(n)
        n = 1 if n <= k else n // k + n % k
    return sizes


def matches_per_round(n: int, k: int) -> list[int]:
    return [1 if m <= k else m // k for m in round_sizes(n, k)]


def n_rounds(n: int, k: int) -> int:
    return len(round_sizes(n, k))


def teacher_calls(n: int, k: int, n_views: int = 1) -> int:
    """Calls for one tournament: ceil((n - 1) / (k - 1)) matches, each judged ``n_views`` times."""
    if n <= 1:
        return 0
    return math.ceil((n - 1) / (k - 1)) * n_views


def view_orders(k: int, n_views: int, seed: int) -> list[list[int]]:
    """Orders in which one match is shown, as permutations of its candidate positions.

    View 0 is the planned order. With ``n_views <= k`` the views are distinct cyclic shifts,
    so every candidate appears in each position at most once (exactly once when
    ``n_views == k``): the cheapest balanced debiasing. Beyond k, seeded random permutations.
    """
    if n_views < 1:
        raise ValueError("n_views must be >= 1")
    base = list(range(k))
    if n_views <= k:
        step = max(1, k // n_views)
        return [base[(v * step) % k:] + base[:(v * step) % k] for v in range(n_views)]
    rng = np.random.default_rng(seed)
    orders = [base[v:] + base[:v] for v in range(k)]
    orders += [list(map(int, rng.permutation(k))) for _ in range(n_views - k)]
    return orders
