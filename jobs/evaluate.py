"""Evaluate student checkpoints against the teacher's tournament winners on held-out personas x catalog.

    python jobs/evaluate.py checkpoints='{pretrained: /path/a, pad: /path/b, default: /path/c}'
    python jobs/evaluate.py root=s3://bucket/shop output=s3://bucket/eval checkpoints='{start: <uri>}'

Reports on validation; the test split (the lockbox) is read only with eval.final=true, and each
opening is counted beside `output` (distill/lockbox.py). Rows: every checkpoint given, plus, when
the teacher is the text oracle, its own ranking of the whole catalog by title. Columns: MPR, median percentile, hit@{1,5,20,100}; on the demo world also MPR against
the true best product and split by motifs seen in training vs held out. Writes report.json and
PNG plots (rank histogram per model) under `output`.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from distill.config import run_job  # noqa: E402
from distill.evaluate_job import EvaluateJobConfig, run_evaluate  # noqa: E402


def _run(cfg: EvaluateJobConfig) -> dict:
    from distill import storage

    report = run_evaluate(cfg)
    print(report["table"])
    if report["lockbox"]:
        print(f"LOCKBOX (test split): opened {report['lockbox']['opened']} time(s) for this setting")
    else:
        print("validation split (the test split, the lockbox, is read with eval.final=true)")
    if report["eval_set"]["warning"]:
        print(f"warning: {report['eval_set']['warning']}")
    print(f"report: {storage.join(cfg.output, 'report.json')}")
    return report


def main(argv: list[str] | None = None) -> dict:
    return run_job(EvaluateJobConfig, _run, argv, name="evaluate")


if __name__ == "__main__":
    main()
