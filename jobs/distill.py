"""Distil the teacher into the student: every arm under several training seeds, side by side.

    python jobs/sweep.py                       # 1. tune each preset's lr + one knob on validation
    python jobs/distill.py                     # 2. all arms x 3 seeds + the student ceiling, on validation
    python jobs/distill.py eval.final=true     # 3. the same runs, read once on the lockbox (test split)
    python jobs/distill.py presets='[default]' seeds=1 default.cycles=5 default.matches_per_cycle=128
    ray job submit --working-dir . -- python jobs/distill.py --config configs/cluster/distill-gpu.yaml

Rerunning the same config resumes: pretraining, judged matches, finished cycles and Ray Train
checkpoints are all reused (eval.final is not part of the run's identity, so step 3 trains
nothing new). Prints the table, the pooled verdict (interval over seeds and personas), each
arm's share of the start -> student-ceiling gap, and how many times the lockbox has been opened.
Writes <output>/eval/report-val.json (or report.json for the final read) and PNGs.
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
    print(f"\nreference: {report['reference']}")
    by_name = {row["model"]: row for row in report["rows"]}
    if "student ceiling" in by_name and by_name["student ceiling"]["mpr"] <= by_name["caption-pretrained"]["mpr"]:
        print("  the student ceiling is not above the start: no gap share to report (its budget is too small)")
    for row in report["rows"]:
        if row.get("student_ceiling_gap_closed") is not None:
            print(f"  {row['model']}: closes {100 * row['student_ceiling_gap_closed']:.0f}% of the start -> "
                  f"student-ceiling gap; {row['to_perfect_pp']:.2f} pp from a perfect score")
    if report["side_by_side"]:
        print(f"\n{report['side_by_side']['summary']}")
    for effect in report["effects"][1:]:
        print(f"  {effect['summary']}")
    if report["lockbox"]:
        lb = report["lockbox"]
        print(f"\nLOCKBOX (test split): opened {lb['opened']} time(s) for this setting, {lb['opened_by_this_run']} by "
              f"this run ({lb['path']})")
    else:
        print("\nvalidation only: the lockbox (test split) is read with eval.final=true, once, after the sweep")
    if report["eval_set"]["warning"]:
        print(f"warning: {report['eval_set']['warning']}")
    quality = report["label_quality"]
    if quality and quality["views_with_mass"]:
        print(f"label mass of the training labels: mean {quality['mean']:.3f}; {quality['flagged_views']} of "
              f"{quality['views']} views below {quality['min_label_mass']:g} kept out of training")
    print(f"teacher calls spent on evaluation labels: {report['eval_teacher_calls']}")
    name = "report.json" if report["lockbox"] else "report-val.json"
    print(f"report: {report['output']}/eval/{name}  plots: {', '.join(report['plots'])}")
    return report


def main(argv: list[str] | None = None) -> dict:
    return run_job(DistillJobConfig, _run, argv, name="distill")


if __name__ == "__main__":
    main()
