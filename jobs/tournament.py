"""Play k-way knockout tournaments of a teacher judge over a catalog, one Ray Data pass per round.

    python jobs/tournament.py                                  # the built-in demo world
    python jobs/tournament.py --config configs/tournament.yaml tournament.k=4 pool.max_actors=8
    ray job submit --working-dir . -- python jobs/tournament.py --config configs/tournament.yaml

Rerunning with the same ``output`` resumes after the last committed round.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from distill.config import load_config  # noqa: E402
from distill.tournament.job import TournamentJobConfig, format_report, run_job  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    cfg = load_config(TournamentJobConfig, argv)
    print(format_report(run_job(cfg)))


if __name__ == "__main__":
    main()
