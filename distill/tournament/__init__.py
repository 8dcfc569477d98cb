"""k-way knockout tournaments: pure bracket arithmetic, the Ray Data round engine, the round store."""

from distill.tournament.engine import (JudgePoolConfig, RunResult, RunSummary, TournamentConfig,
                                       TournamentSpec, run_tournaments)

__all__ = ["JudgePoolConfig", "RunResult", "RunSummary", "TournamentConfig", "TournamentSpec", "run_tournaments"]
