"""Pool replicate runs of jobs/distill.py (e.g. training seeds) into one side-by-side verdict.

    python jobs/distill.py                                         # seed 0
    python jobs/distill.py pad.seed=1 pad.train.seed=1 default.seed=1 default.train.seed=1
    python jobs/pool_runs.py runs='[<run output 1>, <run output 2>]'

One run's "default beats pad" can be one seed's luck. This averages each model's percentile of
every test persona's winner over the runs (which must share the test set and the recipes'
teacher-call counts), prints the table with paired intervals against the start, and the verdict
for the seed-averaged models; `output` also gets the pooled rows as JSON.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pydantic import BaseModel, ConfigDict, Field  # noqa: E402

from distill.config import load_config  # noqa: E402


class PoolRunsConfig(BaseModel):
    """jobs/pool_runs.py: the seed-averaged side-by-side verdict of several jobs/distill.py runs."""

    model_config = ConfigDict(extra="forbid")
    runs: list[str] = Field(min_length=1, description="jobs/distill.py output URIs (each has eval/report.json)")
    challenger: str = Field("default", description="the row that should win")
    baseline: str = Field("pad", description="the row it is compared with")
    output: str | None = Field(None, description="write the pooled rows and verdict to this JSON URI; empty = print only")


def main(argv: list[str] | None = None) -> dict:
    cfg = load_config(PoolRunsConfig, argv)
    from distill import storage
    from distill.distill_job import START_ROW
    from distill.evaluate import CEILING_ROW, format_table, pool_runs, side_by_side

    reports = [storage.read_json(storage.join(run, "eval", "report.json")) for run in cfg.runs]
    rows = pool_runs(reports)
    verdict = side_by_side(rows, cfg.challenger, cfg.baseline, start=START_ROW, ceiling=CEILING_ROW)
    if verdict is None:
        raise ValueError(f"the reports lack a {cfg.challenger!r} or {cfg.baseline!r} row: {[r['model'] for r in rows]}")
    pooled = {"runs": cfg.runs, "rows": rows, "table": format_table(rows),
              "side_by_side": verdict.model_dump(mode="json")}
    print(f"{len(cfg.runs)} runs, each model's winner percentiles averaged per persona\n")
    print(pooled["table"])
    print(f"\n{verdict.summary}")
    if cfg.output:
        storage.write_json_atomic(pooled, cfg.output)
    return pooled


if __name__ == "__main__":
    main()
