"""A judge that costs nothing: seeded random distributions.

It measures the tournament engine's own ceiling (Ray Data scheduling, staging, commits) in
``bench/tournament.py``, and gives a chance-level baseline for label-quality figures.
"""

from __future__ import annotations

import numpy as np

from distill.judges.base import Judge, Judgement, MatchView


class RandomJudge(Judge):
    payload_columns = ()

    @property
    def judge_id(self) -> str:
        return "random"

    @property
    def prompt_version(self) -> str:
        return "none"

    def judge(self, views: list[MatchView]) -> list[Judgement]:
        out = []
        for v in views:
            p = np.random.default_rng(v.seed).dirichlet(np.ones(v.k)).astype(np.float32)
            out.append(Judgement(scores=p))
        return out
