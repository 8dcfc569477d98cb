"""Evaluation: where does the teacher's tournament winner land in each model's ranking of a catalog?

For held-out personas the teacher plays a k-way knockout over the whole held-out catalog
(``distill.tournament``); each model scores every catalog item for the persona, and the
winner's percentile (share of items scored strictly below it, ties against it) gives MPR,
the median percentile and hit@k. On the demo world the same is reported against the true
best product under the hidden utility, and every figure is split by whether the target's
motif was seen in training or held out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, computed_field

from distill.errors import DataError
from distill.metrics import paired_bootstrap_delta, percentile_rank, seed_persona_bootstrap_delta

HIT_KS = (1, 5, 20, 100)
CEILING_ROW = "teacher ceiling (titles)"  # the text oracle's own whole-catalog ranking (text-oracle teachers only)
STUDENT_CEILING_ROW = "student ceiling"     # the same student trained on the teacher with an unlimited budget


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


@dataclass
class EvalSet:
    """Held-out personas, the held-out catalog (by id: its images stay in the dataset root's parts)
    and the teacher's tournament winner per persona."""

    persona_ids: list[str]
    persona_texts: list[str]
    item_ids: list[str]
    titles: list[str]
    winners: list[int]              # index into item_ids of each persona's tournament winner
    heldout: np.ndarray | None = None   # (N,) bool: item's motif is held out of training (demo world)
    true_best: list[int] | None = None  # demo world: argmax of the hidden utility
    teacher_calls: int = 0
    root: str | None = None         # the dataset root the items are read from
    split: str | None = None        # their catalog split
    subset: bool = True             # item_ids are a sample of the split (else the whole split)
    embeddings: str | None = None   # where students' embeddings of this catalog are cached (one dir per student)


def _row(name: str, es: EvalSet, winners: tuple[np.ndarray, np.ndarray],
         true_best: tuple[np.ndarray, np.ndarray] | None, n_items: int) -> dict:
    """One table row from (below, at_or_above) counts of the winners (and of the true best)."""
    below, ge = winners
    row = {"model": name, **metrics_from_counts(below, ge, n_items)}
    if true_best is not None:
        row["true_best"] = metrics_from_counts(*true_best, n_items)
    if es.heldout is not None:
        held = np.array([es.heldout[w] for w in es.winners], bool)
        for label, sel in (("seen_motif", ~held), ("heldout_motif", held)):
            row[label] = metrics_from_counts(below[sel], ge[sel], n_items)
    row["percentiles"] = (np.asarray(below, np.float64) / n_items).tolist()
    return row


def evaluate_scores(name: str, scores: np.ndarray, es: EvalSet) -> dict:
    """One table row from a small dense (P, N) score matrix (the teacher's ceiling, tests)."""
    tb = dense_counts(scores, es.true_best) if es.true_best is not None else None
    return _row(name, es, dense_counts(scores, es.winners), tb, scores.shape[1])


def student_embeddings(checkpoint: str, es: EvalSet, cfg=None) -> str:
    """The student's embeddings of the evaluation catalog, through the one embedding pipeline
    (cached per student under ``es.embeddings``)."""
    from distill import storage
    from distill.embed import embed_catalog
    from distill.student import read_checkpoint_meta

    if es.root is None or es.embeddings is None:
        raise ValueError("this EvalSet has no dataset root / embeddings directory (build it with build_eval_set)")
    ckpt_hash = read_checkpoint_meta(checkpoint)["checkpoint_id"]
    out = storage.join(es.embeddings, ckpt_hash[:16])
    embed_catalog(es.root, checkpoint, out, cfg, split=es.split, item_ids=es.item_ids if es.subset else None,
                  checkpoint_hash=ckpt_hash)
    return out


def evaluate_student(name: str, checkpoint: str, es: EvalSet, embed_cfg=None) -> dict:
    """One table row for a student checkpoint: its catalog embeddings from the pipeline, the
    winners' percentiles and ranks by chunked counting over them (``distill.scoring``)."""
    from distill.scoring import rank_counts
    from distill.student import Student

    emb = student_embeddings(checkpoint, es, embed_cfg)
    queries = Student.load(checkpoint).encode_texts(list(es.persona_texts))
    sets = [[es.item_ids[w] for w in es.winners]]
    if es.true_best is not None:
        sets.append([es.item_ids[w] for w in es.true_best])
    counts = rank_counts(emb, queries, sets)
    tb = (counts.below[1], counts.at_or_above[1]) if es.true_best is not None else None
    return _row(name, es, (counts.below[0], counts.at_or_above[0]), tb, counts.n_items)


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
        if top is not None and top > s and r["model"] not in (start, ceiling):
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


def build_eval_set(root: str, persona_split: str, catalog_split: str, max_personas: int | None,
                   max_candidates: int | None, judge, pool, tournament, output: str, demo: bool,
                   seed: int = 0, progress: bool = True) -> EvalSet:
    """Play (or reuse, from ``output``) the teacher's tournaments and assemble an :class:`EvalSet`."""
    from distill.tournament import run_tournaments
    from distill.tournament.job import DataConfig, build_specs

    data = DataConfig(root=root, persona_split=persona_split, catalog_split=catalog_split,
                      max_personas=max_personas, max_candidates=max_candidates)
    specs, catalog = build_specs(root, data, seed)
    result = run_tournaments(specs, catalog, tournament, judge, pool, output, progress=progress)
    item_ids = catalog["item_id"].to_pylist()
    pos = {i: n for n, i in enumerate(item_ids)}
    winners = dict(zip(result.tournaments["tournament_id"].to_pylist(), result.tournaments["winner_id"].to_pylist()))
    es = EvalSet(persona_ids=[s.persona_id for s in specs], persona_texts=[s.persona_text for s in specs],
                 item_ids=item_ids, titles=catalog["title"].to_pylist(),
                 winners=[pos[winners[s.tournament_id]] for s in specs],
                 teacher_calls=int(result.summary.teacher_calls), root=root, split=catalog_split,
                 subset=max_candidates is not None, embeddings=output.rstrip("/") + "-embeddings")
    if demo:
        from distill import datasets
        from distill.world.truth import world_utility

        util = world_utility(root, es.persona_texts, item_ids)
        es.true_best = [int(np.argmax(u)) for u in util]
        attrs = datasets.read_catalog(root, split=catalog_split, columns=["item_id", "attributes"])
        held = {i: dict(a or []).get("heldout_motif") == "true"
                for i, a in zip(attrs["item_id"].to_pylist(), attrs["attributes"].to_pylist())}
        es.heldout = np.array([held[i] for i in item_ids])
    return es


def teacher_ceiling_scores(es: EvalSet) -> np.ndarray:
    """The text oracle ranking the whole catalog by title (the teacher without bias or noise): the ceiling."""
    from distill.text_encoder import shared_encoder

    enc = shared_encoder()
    return enc.encode(es.persona_texts) @ enc.encode(es.titles).T
