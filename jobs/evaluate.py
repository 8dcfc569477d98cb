"""Evaluate student checkpoints against the teacher's tournament winners on held-out personas x catalog.

    python jobs/evaluate.py checkpoints='{pretrained: /path/a, pad: /path/b, default: /path/c}'
    python jobs/evaluate.py --config configs/evaluate.yaml

Rows: every checkpoint given, plus the teacher's own ranking of the whole catalog by title (the
ceiling). Columns: MPR, median percentile, hit@{1,5,20,100}; on the demo world also MPR against
the true best product and split by motifs seen in training vs held out. Writes report.json and
PNG plots (rank histogram per model) under `output`.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pydantic import BaseModel, ConfigDict, Field  # noqa: E402

from distill.config import load_config  # noqa: E402
from distill.distill_job import EvalConfig  # noqa: E402
from distill.judges.config import JudgeConfig, TextOracleConfig  # noqa: E402
from distill.tournament import JudgePoolConfig  # noqa: E402
from distill.world import WorldConfig  # noqa: E402


class EvaluateJobConfig(BaseModel):
    """jobs/evaluate.py: MPR / hit@k of the teacher's tournament winner under each checkpoint."""

    model_config = ConfigDict(extra="forbid")
    checkpoints: dict[str, str] = Field(description="row name -> student checkpoint URI")
    root: str | None = Field(None, description="dataset root URI; empty = the built-in demo world")
    world: WorldConfig = Field(default_factory=WorldConfig, description="demo world used when root is empty")
    judge: JudgeConfig = Field(default_factory=TextOracleConfig, description="the teacher labelling the winners")
    pool: JudgePoolConfig = Field(default_factory=JudgePoolConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    ceiling: bool = Field(True, description="add the text oracle's ranking by title (meaningful for text-oracle teachers)")
    output: str = Field(description="output URI (tournaments are cached here; report.json and PNGs written)")
    progress: bool = True


def main(argv: list[str] | None = None) -> None:
    cfg = load_config(EvaluateJobConfig, argv)
    from distill import storage
    from distill.evaluate import (CEILING_ROW, add_paired_deltas, build_eval_set, evaluate_scores,
                                  evaluate_student, format_table, plot_report, teacher_ceiling_scores)
    from distill.world import ensure_world

    root, demo = (cfg.root, False) if cfg.root else (ensure_world(cfg.world), True)
    test = build_eval_set(root, "test", "test", cfg.eval.test_personas, cfg.eval.test_max_candidates, cfg.judge,
                          cfg.pool, cfg.eval.tournament, storage.join(cfg.output, "test-tournaments"), demo,
                          progress=cfg.progress)
    rows = [evaluate_student(name, uri, test) for name, uri in cfg.checkpoints.items()]
    if cfg.ceiling:
        rows.append(evaluate_scores(CEILING_ROW, teacher_ceiling_scores(test), test))
    add_paired_deltas(rows)
    plots = plot_report(rows, {}, cfg.output)
    table = format_table(rows)
    storage.write_json_atomic({"rows": rows, "table": table, "plots": plots,
                               "eval_teacher_calls": test.teacher_calls}, storage.join(cfg.output, "report.json"))
    print(table)
    print(f"report: {storage.join(cfg.output, 'report.json')}")


if __name__ == "__main__":
    main()
