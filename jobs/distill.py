"""Distil the teacher into the student: caption-pretrained start, `pad` and `default` presets side by side.

    python jobs/distill.py                                    # the demo world on 2 CPU cores
    python jobs/distill.py presets='[default]' default.cycles=5 default.matches_per_cycle=128
    python jobs/distill.py default.train.num_workers=4 default.train.use_gpu=true
    ray job submit --working-dir . -- python jobs/distill.py --config configs/cluster/distill-gpu.yaml

Rerunning the same config resumes: pretraining, judged matches, finished cycles and Ray Train
checkpoints are all reused. Prints the evaluation table; writes <output>/eval/report.json and PNGs.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from distill.config import run_job  # noqa: E402
from distill.distill_job import DistillJobConfig, run  # noqa: E402


def _run(cfg: DistillJobConfig) -> dict:
    report = run(cfg)
    print()
    print(report["table"])
    if report["side_by_side"]:
        print(f"\n{report['side_by_side']['summary']}")
    if report["eval_set"]["warning"]:
        print(f"\nwarning: {report['eval_set']['warning']}")
    print(f"\nteacher calls spent on evaluation labels: {report['eval_teacher_calls']}")
    print(f"report: {report['output']}/eval/report.json  plots: {', '.join(report['plots'])}")
    return report


def main(argv: list[str] | None = None) -> dict:
    return run_job(DistillJobConfig, _run, argv, name="distill")


if __name__ == "__main__":
    main()
