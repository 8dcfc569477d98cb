"""The tournament job: pick personas and a catalog split, play the knockouts, report.

``jobs/tournament.py`` is a thin wrapper around ``run_job``; with no config it runs the demo
world's test personas against its test catalog and, because the demo's utility is known,
reports how good each winner truly is.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

from distill import datasets, storage
from distill.judges.config import JudgeConfig, TextOracleConfig
from distill.metrics import percentile_rank
from distill.tournament.engine import (JudgePoolConfig, RunResult, TournamentConfig, TournamentSpec,
                                       run_tournaments)
from distill.runs import dataset_name, run_folder
from distill.tournament.payload import CatalogSource, read_items
from distill.tournament.specs import DataConfig, job_specs


class TournamentJobConfig(BaseModel):
    """jobs/tournament.py: k-way knockout tournaments judged by a teacher, fanned out with Ray Data."""

    model_config = ConfigDict(extra="forbid")
    EXECUTION_FIELDS: ClassVar[frozenset[str]] = frozenset({"pool", "output", "overwrite", "progress"})
    data: DataConfig = Field(default_factory=DataConfig)
    tournament: TournamentConfig = Field(default_factory=TournamentConfig)
    judge: JudgeConfig = Field(default_factory=TextOracleConfig, description="The teacher, selected by `kind`.")
    pool: JudgePoolConfig = Field(default_factory=JudgePoolConfig)
    output: str | None = Field(None, description="Run output URI; empty = $PERSONA_DISTILL_HOME/runs/tournament-<hash of this config>, so rerunning a config resumes it and another config gets its own run.")
    overwrite: bool = Field(False, description="Replace an output that holds a run with other settings instead of refusing.")
    progress: bool = Field(True, description="Show progress bars.")

    def output_uri(self) -> str:
        if self.output:
            return self.output
        return run_folder("tournament", dataset_name(self.data.root, self.data.world.name), self)


class WinnerReport(BaseModel):
    tournament_id: str
    persona_text: str
    winner_title: str
    teacher_calls: int
    true_percentile: float | None = Field(None, description="Demo world only: share of candidates with lower hidden utility than the winner.")


class JobReport(BaseModel):
    summary: dict
    winners: list[WinnerReport]
    mean_true_percentile: float | None = None


def _resolve_root(cfg: DataConfig, progress: bool) -> tuple[str, bool]:
    return datasets.resolve_root(cfg.root, cfg.world, "tournament", catalog=(cfg.catalog_split,),
                                 personas=(cfg.persona_split,), setting="data.root")


def report(result: RunResult, specs: list[TournamentSpec], catalog: pa.Table | CatalogSource, demo: bool) -> JobReport:
    """Winners with their titles, and on the demo world their true percentile under the hidden utility."""
    by_id = {s.tournament_id: s for s in specs}
    rows = result.tournaments.to_pylist()
    ids = list(specs[0].candidate_ids) if demo else [r["winner_id"] for r in rows]
    items = read_items(catalog, ids, ["title"])
    titles = dict(zip(items["item_id"].to_pylist(), items["title"].to_pylist()))
    truth = None
    if demo:
        from distill.world.truth import utility

        truth = utility([by_id[r["tournament_id"]].persona_text for r in rows], [titles[i] for i in ids])
        position = {item: j for j, item in enumerate(ids)}
    winners = []
    for n, r in enumerate(rows):
        pct = None if truth is None else percentile_rank(truth[n], position[r["winner_id"]])
        winners.append(WinnerReport(tournament_id=r["tournament_id"], persona_text=by_id[r["tournament_id"]].persona_text,
                                    winner_title=titles[r["winner_id"]], teacher_calls=r["teacher_calls"],
                                    true_percentile=pct))
    mean = None if truth is None else float(np.mean([w.true_percentile for w in winners]))
    return JobReport(summary=result.summary.model_dump(), winners=winners, mean_true_percentile=mean)


def run_job(cfg: TournamentJobConfig) -> JobReport:
    root, demo = _resolve_root(cfg.data, cfg.progress)
    specs, catalog = job_specs(root, cfg.data, cfg.tournament.seed)
    result = run_tournaments(specs, catalog, cfg.tournament, cfg.judge, cfg.pool, cfg.output_uri(),
                             overwrite=cfg.overwrite, progress=cfg.progress)
    rep = report(result, specs, catalog, demo)
    storage.write_json_atomic(rep.model_dump(), storage.join(cfg.output_uri(), "report.json"))
    return rep


def format_report(rep: JobReport) -> str:
    s = rep.summary
    lines = [
        f"tournaments: {s['tournaments']}   rounds: {s['rounds']}   matches: {s['matches']}   k: {s['k']}   views: {s['n_views']}",
        f"teacher calls per persona: {s['teacher_calls_per_tournament']:.1f}   (pairwise knockout, N-1: {s['pairwise_calls_per_tournament']:.0f})",
        f"judged now: {s['judged_this_attempt']}   reused from earlier attempts: {s['reused_from_earlier_attempts']}   failed: {s['failed_matches']}   {s['seconds']:.1f} s",
    ]
    if s.get("winner_changed_by_debiasing") is not None:
        lines.append(f"matches whose winner changed with debiasing: {100 * s['winner_changed_by_debiasing']:.1f}%")
    lines.append("")
    for w in rep.winners:
        pct = "" if w.true_percentile is None else f"  true percentile {100 * w.true_percentile:6.2f}%"
        lines.append(f"- {w.persona_text[:70]:<70} -> {w.winner_title}{pct}")
    if rep.mean_true_percentile is not None:
        lines.append(f"\nmean true percentile of the winners (hidden utility): {100 * rep.mean_true_percentile:.2f}%")
    lines.append(f"output: {s['output']}")
    return "\n".join(lines)
