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


# A percentile under a uniformly random scorer is Uniform(0, 1): standard deviation 1/sqrt(12).
_CHANCE_SD = 1.0 / np.sqrt(12.0)
MAX_STEP_PP = 1.0         # a catalog must resolve percentiles in steps of at most 1 pp (N >= 100)
MAX_CHANCE_CI95_PP = 10.0  # ... and the personas must pin one model's MPR to within +-10 pp (P >= 33)


def eval_set_size(n_personas: int, n_items: int, hit_ks: tuple[int, ...] = ()) -> dict:
    """Whether an evaluation set can separate models at all, with the reasons when it cannot.

    Two limits, each from what the figures are made of:

    * **Items (resolution).** A winner's percentile moves in steps of 100/N pp; with N < 100 one
      place in the ranking is worth more than a point, the size of the effects we compare (the
      brief's gains are 2-4 pp), and hit@k is 1.0 by construction for every k >= N.
    * **Personas (noise).** MPR is a mean over personas of percentiles that, for a scorer at
      chance, are Uniform(0, 1) (sd 28.9 pp); its 95 % half-width 1.96 * 28.9 / sqrt(P) pp is
      above 10 pp for P < 33 personas, so even large differences between models are noise.

    The paired intervals in the report are tighter than the chance half-width when models agree
    per persona; this check is deliberately the simple, model-free floor a set must clear.
    """
    step = 100.0 / n_items if n_items else float("inf")
    half = 100.0 * 1.96 * _CHANCE_SD / np.sqrt(n_personas) if n_personas else float("inf")
    reasons = []
    if step > MAX_STEP_PP:
        vacuous = [k for k in hit_ks if k >= n_items]
        reasons.append(f"{n_items} catalog items: percentiles move in steps of {step:.1f} pp (need >= "
                       f"{int(100 / MAX_STEP_PP)} items for 1 pp)"
                       + (f"; hit@{','.join(map(str, vacuous))} are 1.0 by construction" if vacuous else ""))
    if half > MAX_CHANCE_CI95_PP:
        need = int(np.ceil((1.96 * _CHANCE_SD * 100 / MAX_CHANCE_CI95_PP) ** 2))
        reasons.append(f"{n_personas} personas: an MPR is known to +-{half:.1f} pp at chance level "
                       f"(need >= {need} personas for +-{MAX_CHANCE_CI95_PP:g} pp)")
    return {"personas": n_personas, "items": n_items, "step_pp": float(step), "chance_ci95_pp": float(half),
            "too_small": bool(reasons),
            "warning": ("evaluation set too small to separate models: " + "; ".join(reasons)) if reasons else None}


def seed_persona_bootstrap_delta(base: np.ndarray, other: np.ndarray, n_boot: int = 4000, level: float = 0.95,
                                 seed: int = 0) -> tuple[float, float, float]:
    """Mean of ``other - base`` when each arm was trained under several seeds: (mean, low, high).

    ``base`` is (S_base, P) and ``other`` (S_other, P): one row per training seed, one column per
    evaluation persona (the same personas, in the same order, for both). Each bootstrap draw
    resamples the personas (one draw shared by both arms: they are paired) and, independently
    for each arm, its seeds (an arm's seeds are not paired with another arm's); the statistic is
    the difference of the two arms' mean percentiles over the resampled seeds and personas. So
    the interval covers both what the persona sample and what the training seed could have
    changed; with one seed per arm it is the paired persona bootstrap. With few seeds the seed
    part of the spread is underestimated by about (S-1)/S, as in any plain bootstrap.
    """
    base, other = np.atleast_2d(np.asarray(base, np.float64)), np.atleast_2d(np.asarray(other, np.float64))
    if base.ndim != 2 or other.ndim != 2 or base.shape[1] != other.shape[1] or base.shape[1] == 0:
        raise ValueError(f"need (seeds, personas) arrays over the same personas, got {base.shape} and {other.shape}")
    rng = np.random.default_rng(seed)
    n_p = base.shape[1]

    def weights(n: int) -> np.ndarray:  # (n_boot, n) resampling weights summing to 1 per draw
        return rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot) / n

    w_p = weights(n_p)
    w_b, w_o = weights(base.shape[0]), weights(other.shape[0])
    stats = np.einsum("bs,sp,bp->b", w_o, other, w_p) - np.einsum("bs,sp,bp->b", w_b, base, w_p)
    tail = (1 - level) / 2
    mean = float(other.mean() - base.mean())
    return mean, float(np.quantile(stats, tail)), float(np.quantile(stats, 1 - tail))


HIT_KS = (1, 5, 20, 100)


def metrics_from_counts(below: np.ndarray, at_or_above: np.ndarray, n_items: int,
                        ks: tuple[int, ...] = HIT_KS) -> dict:
    """MPR, median percentile and hit@k from each target's counts: items scored strictly below it
    (percentile = below / N, PAD's) and items scored at or above it (its rank, ties against it)."""
    if len(below) == 0:
        return {"n": 0, "mpr": None, "median_percentile": None, **{f"hit@{k}": None for k in ks}}
    pct = np.asarray(below, np.float64) / n_items
    ranks = np.asarray(at_or_above)
    out = {"n": int(len(pct)), "mpr": float(pct.mean()), "median_percentile": float(np.median(pct))}
    out.update({f"hit@{k}": float((ranks <= k).mean()) for k in ks})
    return out


def dense_counts(scores: np.ndarray, targets: list[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(below, at_or_above) of ``targets`` in rows of a small dense ``scores`` (P, N) matrix."""
    below = np.array([(np.asarray(s) < s[t]).sum() for s, t in zip(scores, targets)], np.int64)
    ge = np.array([(np.asarray(s) >= s[t]).sum() for s, t in zip(scores, targets)], np.int64)
    return below, ge


def winner_metrics(scores: np.ndarray, targets: list[int] | np.ndarray, ks: tuple[int, ...] = HIT_KS) -> dict:
    """MPR, median percentile and hit@k of ``targets`` (one per row of ``scores`` (P, N))."""
    if len(targets) == 0:
        return metrics_from_counts(np.zeros(0), np.zeros(0), 1, ks)
    below, ge = dense_counts(scores, targets)
    return metrics_from_counts(below, ge, scores.shape[1], ks)


def percentiles(scores: np.ndarray, targets) -> np.ndarray:
    return np.array([percentile_rank(s, t) for s, t in zip(scores, targets)])
