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

from distill.config import load_config  # noqa: E402
from distill.distill_job import DistillJobConfig, run  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    cfg = load_config(DistillJobConfig, argv)
    report = run(cfg)
    print()
    print(report["table"])
    if report["side_by_side"]:
        print(f"\n{report['side_by_side']['summary']}")
    print(f"\nteacher calls spent on evaluation labels: {report['eval_teacher_calls']}")
    print(f"report: {report['output']}/eval/report.json  plots: {', '.join(report['plots'])}")


if __name__ == "__main__":
    main()
