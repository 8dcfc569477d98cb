"""The validation sweep: each preset's learning rate and one more knob, the same grid for both.

    python jobs/sweep.py                                    # the demo world, the default grid
    python jobs/sweep.py sweep.lr_factors='[0.5, 1, 2]' sweep.knob=train.batch_size sweep.knob_values='[16, 32]'
    python jobs/sweep.py --config configs/cluster/distill-gpu.yaml   # the config the distill job then runs

Takes the distillation job's config (same world, start, teacher, validation set and output
folder) and trains every grid point of every preset on validation only; the test split is never
read. Writes <output>/sweep/sweep.json and sweep.parquet; `jobs/distill.py` with the same config
applies the chosen values (tuned=true). Rerunning resumes.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from distill.config import run_job  # noqa: E402
from distill.distill_job import DistillJobConfig  # noqa: E402


def _run(cfg: DistillJobConfig) -> dict:
    from distill.sweep import format_sweep, run_sweep, sweep_path

    record = run_sweep(cfg)
    print()
    print(format_sweep(record))
    print(f"\nchosen on validation: {record['chosen']}")
    print(f"runs per preset: {record['runs_per_preset']}  record: {sweep_path(cfg.output_uri())}")
    return record


def main(argv: list[str] | None = None) -> dict:
    return run_job(DistillJobConfig, _run, argv, name="sweep")


if __name__ == "__main__":
    main()
