"""The seed-aware verdict: a bootstrap over training seeds and personas, tested where the answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from distill.report import CEILING_ROW, STUDENT_CEILING_ROW, add_gap_shares, add_paired_deltas, pool_seeds, side_by_side
from distill.metrics import paired_bootstrap_delta, seed_persona_bootstrap_delta


def _arms(rng, personas=150, seeds=3, seed_sd=0.03, noise_sd=0.02, delta=0.0):
    """Two arms on the same personas: a persona difficulty both share, a per-seed shift each arm's
    training seed adds to every persona, and per-(seed, persona) noise."""
    difficulty = rng.normal(0.8, 0.1, personas)
    base = difficulty + rng.normal(0, seed_sd, (seeds, 1)) + rng.normal(0, noise_sd, (seeds, personas))
    other = difficulty + delta + rng.normal(0, seed_sd, (seeds, 1)) + rng.normal(0, noise_sd, (seeds, personas))
    return base, other


def test_seed_variance_widens_the_interval_and_restores_coverage():
    """When the seed moves every persona at once, a persona-only interval is far too narrow: over
    many simulated experiments with no true difference it excludes zero most of the time; the
    seed x persona bootstrap is wider and covers zero close to its nominal rate."""
    rng = np.random.default_rng(0)
    covered = {"seeds": 0, "personas": 0}
    widths = {"seeds": [], "personas": []}
    trials = 60
    for t in range(trials):
        base, other = _arms(rng)
        m, lo, hi = seed_persona_bootstrap_delta(base, other, n_boot=1000, seed=t)
        m2, lo2, hi2 = paired_bootstrap_delta(base.mean(0), other.mean(0), n_boot=1000, seed=t)
        assert m == pytest.approx(m2)  # the same point estimate: only the interval differs
        covered["seeds"] += lo <= 0 <= hi
        covered["personas"] += lo2 <= 0 <= hi2
        widths["seeds"].append(hi - lo)
        widths["personas"].append(hi2 - lo2)
    assert np.mean(widths["seeds"]) > 5 * np.mean(widths["personas"])
    assert covered["personas"] / trials < 0.4
    assert covered["seeds"] / trials > 0.75


def test_without_seed_variance_it_is_the_persona_bootstrap():
    rng = np.random.default_rng(1)
    base, other = _arms(rng, seed_sd=0.0, noise_sd=0.0, delta=0.02)
    base = base + rng.normal(0, 0.05, base.shape[1])  # persona-level noise only (same for every seed)
    m, lo, hi = seed_persona_bootstrap_delta(base, other, n_boot=2000)
    m2, lo2, hi2 = paired_bootstrap_delta(base.mean(0), other.mean(0), n_boot=2000)
    assert m == pytest.approx(m2) and (hi - lo) == pytest.approx(hi2 - lo2, rel=0.15)
    # one seed each: exactly the paired persona bootstrap's spread
    m1, lo1, hi1 = seed_persona_bootstrap_delta(base[:1], other[:1], n_boot=2000)
    assert lo1 < m1 < hi1
    with pytest.raises(ValueError, match="same personas"):
        seed_persona_bootstrap_delta(base, other[:, :-1])


def test_a_real_difference_is_found_through_seed_noise():
    rng = np.random.default_rng(2)
    base, other = _arms(rng, seeds=4, seed_sd=0.005, delta=0.05)
    m, lo, hi = seed_persona_bootstrap_delta(base, other)
    assert lo > 0 and lo < m < hi and m == pytest.approx(0.05, abs=0.015)


def _row(name, seed_pcts, calls=0):
    return pool_seeds(name, [{"model": name, "percentiles": list(p), "hit@5": float(np.mean(p) > 0.8)}
                             for p in seed_pcts], teacher_calls=calls)


def test_pooled_verdict_and_student_ceiling_gap_shares():
    """The headline compares seed-pooled arms with the seed-aware interval, and each arm's gain is
    read against the student ceiling (and against 100)."""
    rng = np.random.default_rng(3)
    pad, default = _arms(rng, personas=40, seeds=3, seed_sd=0.04, delta=0.01)
    start = _row("start", [np.full(40, 0.6)])
    ceiling = _row(STUDENT_CEILING_ROW, [np.full(40, 0.9)], calls=10_000)
    oracle = _row(CEILING_ROW, [np.full(40, 0.999)])  # the text oracle's own ranking: a reference, not an arm
    rows = [start, oracle, ceiling, _row("pad", pad, 1000), _row("default", default, 250)]
    add_paired_deltas(rows)
    add_gap_shares(rows, "start")
    assert "student_ceiling_gap_closed" not in rows.pop(1) and rows[1]["model"] == STUDENT_CEILING_ROW
    v = side_by_side(rows, "default", "pad", start="start", ceiling=STUDENT_CEILING_ROW)
    assert v.seeds == (3, 3) and "3 vs 3 seeds" in v.summary
    expected = seed_persona_bootstrap_delta(pad, default)
    assert v.delta_pp == pytest.approx(100 * expected[0]) and v.ci95_pp == pytest.approx((100 * expected[1], 100 * expected[2]))
    persona_only = paired_bootstrap_delta(pad.mean(0), default.mean(0))
    assert v.ci95_pp[1] - v.ci95_pp[0] > 100 * (persona_only[2] - persona_only[1])
    d = rows[3]
    assert d["seeds"] == 3 and d["mpr"] == pytest.approx(default.mean())
    assert d["hit@5"] == pytest.approx(np.mean([float(p.mean() > 0.8) for p in default]))
    assert d["student_ceiling_gap_closed"] == pytest.approx((default.mean() - 0.6) / 0.3)
    assert d["to_perfect_pp"] == pytest.approx(100 * (1 - default.mean()))
    assert "student_ceiling_gap_closed" not in rows[0] and "student_ceiling_gap_closed" not in rows[1]
    assert v.gap_closed == pytest.approx(d["student_ceiling_gap_closed"])
    assert "start-to-student ceiling gap" in v.summary
    assert d["mpr_delta_vs_first"]["seeds"] == 3
