"""k-way knockout tournaments: pure bracket arithmetic, the Ray Data round engine, the round store."""

from distill.tournament.engine import (JudgePoolConfig, RunResult, RunSummary, TournamentConfig,
                                       TournamentSpec, run_tournaments)
from distill.tournament.specs import DataConfig, build_specs, job_specs

__all__ = ["DataConfig", "JudgePoolConfig", "RunResult", "RunSummary", "TournamentConfig", "TournamentSpec", "build_specs", "job_specs", "run_tournaments"]
