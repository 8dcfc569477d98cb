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

from distill.config import run_job  # noqa: E402
from distill.evaluate_job import PoolRunsConfig, run_pool_runs  # noqa: E402


def _run(cfg: PoolRunsConfig) -> dict:
    pooled = run_pool_runs(cfg)
    print(f"{len(cfg.runs)} runs, each model's winner percentiles averaged per persona\n")
    print(pooled["table"])
    print(f"\n{pooled['side_by_side']['summary']}")
    return pooled


def main(argv: list[str] | None = None) -> dict:
    return run_job(PoolRunsConfig, _run, argv, name="pool_runs")


if __name__ == "__main__":
    main()
