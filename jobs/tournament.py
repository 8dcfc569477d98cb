"""Play k-way knockout tournaments of a teacher judge over a catalog, one Ray Data pass per round.

    python jobs/tournament.py                                  # the built-in demo world
    python jobs/tournament.py --config configs/tournament.yaml tournament.k=4 pool.max_actors=8
    ray job submit --working-dir . -- python jobs/tournament.py --config configs/tournament.yaml

Rerunning with the same ``output`` resumes after the last committed round.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from distill.config import run_job  # noqa: E402
from distill.tournament.job import JobReport, TournamentJobConfig, format_report, run_job as run_tournament_job  # noqa: E402


def _run(cfg: TournamentJobConfig) -> JobReport:
    report = run_tournament_job(cfg)
    print(format_report(report))
    return report


def main(argv: list[str] | None = None) -> JobReport:
    return run_job(TournamentJobConfig, _run, argv, name="tournament")


if __name__ == "__main__":
    main()
