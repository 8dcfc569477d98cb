"""Reporting over evaluation rows: paired intervals, seed pooling, the side-by-side verdict,
shares of the start -> student-ceiling gap, the comparison table and plots.

Rows come from ``distill.eval_sets`` (one dict per model: metrics plus each persona's
percentile); nothing here touches a model, a catalog or Ray.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, computed_field

from distill.errors import DataError
from distill.metrics import HIT_KS, paired_bootstrap_delta, seed_persona_bootstrap_delta

CEILING_ROW = "teacher ceiling (titles)"  # the text oracle's own whole-catalog ranking (text-oracle teachers only)
STUDENT_CEILING_ROW = "student ceiling"     # the same student trained on the teacher with a budget far beyond the arms'


def seed_matrix(row: dict) -> np.ndarray:
    """A row's percentiles as (seeds, personas): its per-seed runs when it has them, else one run."""
    return np.asarray(row.get("seed_percentiles") or [row["percentiles"]], dtype=np.float64)


def delta_interval(base: dict, other: dict) -> tuple[float, float, float]:
    """``other - base`` MPR with a 95% interval: over seeds and personas when either row holds
    several training seeds, else the paired persona bootstrap."""
    if len(seed_matrix(base)) > 1 or len(seed_matrix(other)) > 1:
        return seed_persona_bootstrap_delta(seed_matrix(base), seed_matrix(other))
    return paired_bootstrap_delta(base["percentiles"], other["percentiles"])


def add_paired_deltas(rows: list[dict]) -> list[dict]:
    """Annotate every row after the first with its MPR change against the first row (the start
    student), in percentage points with a 95% interval: a bootstrap over the personas, and over
    the training seeds when a row pools several."""
    if not rows or not rows[0].get("percentiles"):
        return rows  # no personas evaluated: nothing to compare
    for r in rows[1:]:
        mean, lo, hi = delta_interval(rows[0], r)
        r["mpr_delta_vs_first"] = {"pp": 100 * mean, "ci95_pp": [100 * lo, 100 * hi], "vs": rows[0]["model"],
                                   "seeds": len(seed_matrix(r))}
    return rows


def pool_seeds(name: str, seed_rows: list[dict], **extra) -> dict:
    """One arm's row from its per-seed evaluation rows (same personas): each persona's percentile
    averaged over the seeds, the per-seed percentiles kept for the seed-aware intervals."""
    if not seed_rows:
        raise ValueError(f"{name}: no seed runs to pool")
    pct = np.asarray([r["percentiles"] for r in seed_rows], dtype=np.float64)
    row = {"model": name, "mpr": float(pct.mean()), "median_percentile": float(np.median(pct.mean(axis=0))),
           "percentiles": pct.mean(axis=0).tolist(), "seed_percentiles": pct.tolist(),
           "seed_mpr": [float(m) for m in pct.mean(axis=1)], "seeds": len(seed_rows), **extra}
    for key in [k for k in seed_rows[0] if k.startswith("hit@")]:  # hit rates: the mean over seeds
        if all(r.get(key) is not None for r in seed_rows):
            row[key] = float(np.mean([r[key] for r in seed_rows]))
    for key in ("true_best", "seen_motif", "heldout_motif"):
        if all(r.get(key, {}).get("mpr") is not None for r in seed_rows):
            row[key] = {"mpr": float(np.mean([r[key]["mpr"] for r in seed_rows])), "n": seed_rows[0][key]["n"]}
    return row


def add_gap_shares(rows: list[dict], start: str, ceiling: str = STUDENT_CEILING_ROW) -> list[dict]:
    """Each row's share of the start -> student-ceiling MPR gap, beside its distance to a perfect
    score (100 %): a gain is read against what this student could reach, and against 100."""
    by_name = {r["model"]: r for r in rows}
    if start not in by_name:
        return rows
    s = by_name[start]["mpr"]
    top = by_name[ceiling]["mpr"] if ceiling in by_name else None
    for r in rows:
        r["to_perfect_pp"] = 100 * (1 - r["mpr"])
        # reference rows (the start, the ceiling itself, the text oracle's own ranking) close no gap
        if top is not None and top > s and r["model"] not in (start, ceiling, CEILING_ROW):
            r["student_ceiling_gap_closed"] = (r["mpr"] - s) / (top - s)
    return rows


class SideBySide(BaseModel):
    """The side-by-side question of a distillation run, answered from its evaluation rows.

    Does the challenger (our ``default``) beat the baseline (``pad``) while spending at most
    ``max_calls_ratio`` of its teacher calls, and how much of the MPR gap between the start
    student and the student ceiling does it close? "Beats" means the interval of the MPR
    difference lies above zero; with several training seeds per arm it is a bootstrap over
    seeds and personas (one seed's luck is not a result), else over personas.
    """

    challenger: str
    baseline: str
    delta_pp: float                 # challenger MPR - baseline MPR, mean over seeds and personas
    ci95_pp: tuple[float, float]    # bootstrap interval of that difference (seeds x personas)
    calls: tuple[int, int]          # teacher calls spent on training (per seed): challenger, baseline
    max_calls_ratio: float
    gap_closed: float | None        # (challenger - start) / (ceiling - start); None without a gap
    seeds: tuple[int, int] = (1, 1)  # training seeds pooled: challenger, baseline
    ceiling: str | None = None      # the row the gap is measured against

    @computed_field
    @property
    def beats(self) -> bool:
        return self.ci95_pp[0] > 0

    @computed_field
    @property
    def within_budget(self) -> bool:
        return self.calls[0] <= self.max_calls_ratio * self.calls[1]

    @computed_field
    @property
    def summary(self) -> str:
        lo, hi = self.ci95_pp
        verdict = "beats" if self.beats else ("loses to" if hi < 0 else "does not separate from")
        budget = "within" if self.within_budget else "over"
        gap = "" if self.gap_closed is None else f"; closes {100 * self.gap_closed:.0f}% of the start-to-{self.ceiling or 'ceiling'} gap"
        seeds = "" if self.seeds == (1, 1) else f" ({self.seeds[0]} vs {self.seeds[1]} seeds; interval over seeds and personas)"
        return (f"{self.challenger} vs {self.baseline}: {self.delta_pp:+.2f} pp [{lo:+.2f}, {hi:+.2f}]{seeds} -> "
                f"{self.challenger} {verdict} {self.baseline}, at {self.calls[0]:,} vs {self.calls[1]:,} teacher calls "
                f"({budget} the 1/{1 / self.max_calls_ratio:g} budget){gap}")


def side_by_side(rows: list[dict], challenger: str, baseline: str, start: str, ceiling: str,
                 max_calls_ratio: float = 0.25) -> SideBySide | None:
    """Compare two rows of one evaluation (same personas, same winners); None when one is missing."""
    by_name = {r["model"]: r for r in rows}
    if challenger not in by_name or baseline not in by_name or not by_name[baseline].get("percentiles"):
        return None
    ch, base = by_name[challenger], by_name[baseline]
    mean, lo, hi = delta_interval(base, ch)
    gap = None
    if start in by_name and ceiling in by_name and by_name[ceiling]["mpr"] > by_name[start]["mpr"]:
        gap = (ch["mpr"] - by_name[start]["mpr"]) / (by_name[ceiling]["mpr"] - by_name[start]["mpr"])
    return SideBySide(challenger=challenger, baseline=baseline, delta_pp=100 * mean, ci95_pp=(100 * lo, 100 * hi),
                      calls=(ch.get("teacher_calls", 0), base.get("teacher_calls", 0)),
                      max_calls_ratio=max_calls_ratio, gap_closed=gap,
                      seeds=(len(seed_matrix(ch)), len(seed_matrix(base))), ceiling=ceiling if gap is not None else None)


def pool_runs(reports: list[dict]) -> list[dict]:
    """Rows of several runs of one evaluation (the same test personas and winners; e.g. training
    seeds), each model's percentile of a persona's winner averaged over the runs.

    One run's verdict can be one seed's luck; the seed-averaged model is compared on the same
    personas, and each row keeps its per-run percentiles (``seed_percentiles``) so intervals are
    a bootstrap over runs and personas. Every report must list the same models, and the teacher
    ceiling's percentiles (the winners, seen through the teacher's own ranking), where a report
    has that row, must agree, else the runs were not evaluated on one test set.
    """
    if not reports:
        raise DataError("no reports to pool")
    names = [r["model"] for r in reports[0]["rows"]]
    for rep in reports[1:]:
        if [r["model"] for r in rep["rows"]] != names:
            raise DataError(f"reports list different models: {names} vs {[r['model'] for r in rep['rows']]}")
        for a, b in zip(reports[0]["rows"], rep["rows"]):
            if a.get("teacher_calls") != b.get("teacher_calls"):
                raise DataError(f"{a['model']} spent {a.get('teacher_calls')} vs {b.get('teacher_calls')} teacher "
                                 "calls: runs of different recipes are not replicates")
            if len(a["percentiles"]) != len(b["percentiles"]) or (
                    a["model"] == CEILING_ROW and not np.allclose(a["percentiles"], b["percentiles"])):
                raise DataError("reports were not evaluated on the same test personas and winners")
    rows = []
    for i, name in enumerate(names):
        per_run = [list(p) for rep in reports for p in seed_matrix(rep["rows"][i]).tolist()]  # every seed of every run
        pct = np.mean(per_run, axis=0)
        rows.append({"model": name, "mpr": float(pct.mean()), "percentiles": pct.tolist(), "runs": len(reports),
                     "seed_percentiles": per_run if len(per_run) > 1 else None,
                     "teacher_calls": reports[0]["rows"][i].get("teacher_calls", 0)})
    return add_paired_deltas(rows)


def format_table(rows: list[dict]) -> str:
    """The comparison table; a metric a row lacks (a pooled row has MPR only) prints as '-'."""
    cols = ["mpr", "median_percentile", *[f"hit@{k}" for k in HIT_KS]]
    head = f"{'model':<28}" + "".join(f"{c:>10}" for c in ["MPR %", "median %", *[f"hit@{k}" for k in HIT_KS]]) \
        + f"{'true MPR':>10}{'seen':>8}{'held':>8}{'calls':>9}  change vs first row [95% CI]"
    lines = [head, "-" * len(head)]
    for r in rows:
        cells = []
        for c in cols:
            v = r.get(c)
            cells.append(f"{'-':>10}" if v is None else f"{100 * v:>10.2f}" if c in ("mpr", "median_percentile")
                         else f"{v:>10.3f}")
        tb = r.get("true_best", {}).get("mpr")
        seen = r.get("seen_motif", {}).get("mpr")
        held = r.get("heldout_motif", {}).get("mpr")
        f = lambda v, w, p=1: f"{'-':>{w}}" if v is None else f"{100 * v:>{w}.{p}f}"  # noqa: E731
        lines.append(f"{r['model']:<28}" + "".join(cells) + f(tb, 10, 2) + f(seen, 8) + f(held, 8)
                     + f"{r.get('teacher_calls', 0):>9}" + _delta_text(r.get("mpr_delta_vs_first")))
    return "\n".join(lines)


def _delta_text(delta: dict | None) -> str:
    if not delta:
        return ""
    lo, hi = delta["ci95_pp"]
    return f"  {delta['pp']:+.2f} pp [{lo:+.2f}, {hi:+.2f}]"


def plot_report(rows: list[dict], curves: dict[str, list[float]], out_dir: str) -> list[str]:
    """PNG plots: a rank (percentile) histogram per model and validation MPR per cycle."""
    import os

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from distill import storage

    paths = []
    fig, axes = plt.subplots(1, len(rows), figsize=(3.2 * len(rows), 2.8), squeeze=False)
    for ax, r in zip(axes[0], rows):
        ax.hist(100 * np.asarray(r["percentiles"]), bins=20, range=(0, 100), color="tab:blue")
        ax.set_title(f"{r['model']}\nMPR {100 * r['mpr']:.1f}%", fontsize=9)
        ax.set_xlabel("percentile of the teacher's winner")
    axes[0][0].set_ylabel("personas")
    fig.tight_layout()
    paths.append(_save(fig, storage.join(out_dir, "rank_histograms.png")))
    if curves:
        fig, ax = plt.subplots(figsize=(5, 3.2))
        for name, ys in curves.items():
            ax.plot(range(len(ys)), [100 * y for y in ys], marker="o", label=name)
        ax.set_xlabel("cycle (0 = start checkpoint)")
        ax.set_ylabel("validation MPR %")
        ax.legend()
        fig.tight_layout()
        paths.append(_save(fig, storage.join(out_dir, "learning_curves.png")))
    plt.close("all")
    _ = os
    return paths


def _save(fig, uri: str) -> str:
    import io

    from distill import storage

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    storage.write_bytes_atomic(buf.getvalue(), uri)
    return uri
