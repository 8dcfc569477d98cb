"""The evaluation jobs' configs and runs: score checkpoints on held-out winners; pool replicate runs.

``jobs/evaluate.py`` and ``jobs/pool_runs.py`` are thin entry points over these, as
``jobs/distill.py`` is over ``distill.distill_job``; keeping the configs in the library lets the
config reference (``distill.docs``) and tests read them without importing entry points.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from distill.distill_job import EvalConfig
from distill.judges.config import JudgeConfig, TextOracleConfig
from distill.tournament import JudgePoolConfig
from distill.world import WorldConfig


class EvaluateJobConfig(BaseModel):
    """jobs/evaluate.py: MPR / hit@k of the teacher's tournament winner under each checkpoint."""

    model_config = ConfigDict(extra="forbid")
    checkpoints: dict[str, str] = Field(description="row name -> student checkpoint URI")
    root: str | None = Field(None, description="dataset root URI; empty = the built-in demo world")
    world: WorldConfig = Field(default_factory=WorldConfig, description="demo world used when root is empty")
    judge: JudgeConfig = Field(default_factory=TextOracleConfig, description="the teacher labelling the winners")
    pool: JudgePoolConfig = Field(default_factory=JudgePoolConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    ceiling: bool = Field(True, description="add the text oracle's ranking by title (only when the teacher is the text oracle)")
    output: str = Field(description="output URI (tournaments are cached here; report.json and PNGs written)")
    progress: bool = True


class PoolRunsConfig(BaseModel):
    """jobs/pool_runs.py: the seed-averaged side-by-side verdict of several jobs/distill.py runs."""

    model_config = ConfigDict(extra="forbid")
    runs: list[str] = Field(min_length=1, description="jobs/distill.py output URIs (each has eval/report.json)")
    challenger: str = Field("default", description="the row that should win")
    baseline: str = Field("pad", description="the row it is compared with")
    output: str | None = Field(None, description="write the pooled rows and verdict to this JSON URI; empty = print only")


def run_evaluate(cfg: EvaluateJobConfig) -> dict:
    """Label the winners with the teacher (cached under ``output``), score every checkpoint.

    On validation unless ``eval.final``: the test split is the lockbox, read only for a final
    verdict, and each opening is counted beside ``output`` (``distill.lockbox``)."""
    from distill import datasets, storage
    from distill.distill_job import require_checkpoint
    from distill.eval_sets import build_eval_set, evaluate_scores, evaluate_student, teacher_ceiling_scores
    from distill.metrics import HIT_KS, eval_set_size
    from distill.report import CEILING_ROW, add_paired_deltas, format_table, plot_report
    from distill.lockbox import open_lockbox, test_setting

    ev = cfg.eval
    split = "test" if ev.final else "val"
    root, demo = datasets.resolve_root(cfg.root, cfg.world, "evaluate", catalog=(split,), personas=(split,))
    for name, uri in cfg.checkpoints.items():
        require_checkpoint(uri, f"checkpoints.{name}")
    lockbox = None
    if ev.final:
        setting = test_setting(cfg.root, cfg.world, ev, cfg.judge)
        lockbox = open_lockbox(cfg.output, setting, run={"checkpoints": cfg.checkpoints})
        personas, candidates = ev.test_personas, ev.test_max_candidates
    else:
        personas, candidates = ev.val_personas, ev.val_max_candidates
    es = build_eval_set(root, split, split, personas, candidates, cfg.judge, cfg.pool, ev.tournament,
                        storage.join(cfg.output, f"{split}-tournaments"), demo, progress=cfg.progress)
    rows = [evaluate_student(name, uri, es) for name, uri in cfg.checkpoints.items()]
    if cfg.ceiling and cfg.judge.kind == "text_oracle":
        rows.append(evaluate_scores(CEILING_ROW, teacher_ceiling_scores(es), es))
    add_paired_deltas(rows)
    plots = plot_report(rows, {}, cfg.output)
    table = format_table(rows)
    report = {"split": split, "lockbox": lockbox.model_dump() if lockbox else None, "rows": rows, "table": table,
              "plots": plots, "eval_teacher_calls": es.teacher_calls,
              "eval_set": eval_set_size(len(es.persona_ids), len(es.item_ids), HIT_KS)}
    storage.write_json_atomic(report, storage.join(cfg.output, "report.json"))
    return report


def run_pool_runs(cfg: PoolRunsConfig) -> dict:
    """Average each model's winner percentiles per persona over the runs; the side-by-side verdict."""
    from distill import storage
    from distill.distill_job import START_ROW
    from distill.report import CEILING_ROW, STUDENT_CEILING_ROW, format_table, pool_runs, side_by_side

    from distill.errors import MissingInputError

    missing = [run for run in cfg.runs if not storage.exists(storage.join(run, "eval", "report.json"))]
    if missing:
        raise MissingInputError(f"runs: {missing} hold no eval/report.json (not finished jobs/distill.py runs)")
    reports = [storage.read_json(storage.join(run, "eval", "report.json")) for run in cfg.runs]
    rows = pool_runs(reports)
    names = {r["model"] for r in rows}
    ceiling = STUDENT_CEILING_ROW if STUDENT_CEILING_ROW in names else CEILING_ROW  # reports from before the student ceiling
    verdict = side_by_side(rows, cfg.challenger, cfg.baseline, start=START_ROW, ceiling=ceiling)
    if verdict is None:
        from distill.errors import DataError

        raise DataError(f"challenger/baseline: the reports lack a {cfg.challenger!r} or {cfg.baseline!r} row: "
                        f"{[r['model'] for r in rows]}")
    pooled = {"runs": cfg.runs, "rows": rows, "table": format_table(rows),
              "side_by_side": verdict.model_dump(mode="json")}
    if cfg.output:
        storage.write_json_atomic(pooled, cfg.output)
    return pooled
