"""The actor that judges a batch of matches: one per GPU (or CPU slot) in the pool.

Kept free of torch and of the driver-side engine so it also imports inside the separate
vLLM virtualenv that judge actors run in on CPU machines (``py_executable``). It returns
plain Arrow, never torch objects.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
from pydantic import TypeAdapter

from distill.judges.base import CANDIDATE_FIELDS, Candidate, Judgement, MatchView
from distill.judges.config import JudgeConfig
from distill.schemas import MATCH_SCHEMA
from distill.seeding import rng_for, seed_for


def aggregate_views(match_key: str, k: int, orders: list[list[int]], judgements: list[Judgement],
                    winner_rule: str) -> tuple[np.ndarray | None, int, str | None]:
    """Average the views' scores in the match's own candidate order and pick the winner.

    Views that failed are left out; if all failed, the match records the reasons, has no
    scores, and a seeded random candidate advances so the bracket stays well-formed.
    """
    total = np.zeros(k, dtype=np.float64)
    ok = 0
    errors = []
    for order, j in zip(orders, judgements):
        if j.scores is None or j.error is not None:
            errors.append(j.error or "no scores")
            continue
        s = np.asarray(j.scores, dtype=np.float64)
        if s.shape != (k,) or not np.all(np.isfinite(s)) or s.min() < 0 or abs(s.sum() - 1) > 1e-3:
            errors.append(f"judge returned an invalid distribution {s.tolist()}")
            continue
        total[np.asarray(order)] += s
        ok += 1
    if ok == 0:
        winner = int(rng_for(match_key, "fallback").integers(k))
        return None, winner, "; ".join(errors)
    scores = total / ok
    if winner_rule == "sample":
        winner = int(rng_for(match_key, "winner").choice(k, p=scores / scores.sum()))
    else:
        winner = int(np.argmax(scores))
    return scores.astype(np.float32), winner, None


# What a block task sends a judge actor per match (``blocks.plan_block`` builds it).
REQUEST_SCHEMA = pa.schema([
    pa.field("match_key", pa.string(), nullable=False),
    pa.field("tournament_id", pa.string(), nullable=False),
    pa.field("persona_id", pa.string(), nullable=False),
    pa.field("persona_text", pa.string(), nullable=False),
    pa.field("round", pa.int32(), nullable=False),
    pa.field("match_index", pa.int32(), nullable=False),
    pa.field("candidate_ids", pa.list_(pa.string()), nullable=False),
    pa.field("view_orders", pa.list_(pa.list_(pa.int16())), nullable=False),
])


class JudgeWorker:
    """Builds the judge once, then judges batches: a long-lived pool actor (``hosts.py``).

    It holds no catalog: each batch arrives with the payload of its own candidates only
    (``candidates``: ``item_id`` plus the judge's ``payload_columns``), read by the block task
    from the run's payload (``payload.py``)."""

    def __init__(self, judge_config: dict[str, Any], winner_rule: str, attempt_id: str):
        self.judge = TypeAdapter(JudgeConfig).validate_python(judge_config).build()
        unknown = set(self.judge.payload_columns) - CANDIDATE_FIELDS
        if unknown:
            raise ValueError(f"judge {type(self.judge).__name__} asks for payload column(s) {sorted(unknown)}; "
                             f"a Candidate carries only {sorted(CANDIDATE_FIELDS)}")
        self.winner_rule = winner_rule
        self.attempt_id = attempt_id

    def payload_columns(self) -> list[str]:
        """The catalog columns this judge reads: what the engine stages and ships with batches."""
        return list(self.judge.payload_columns)

    @staticmethod
    def _candidates(item_ids: list[str], candidates: pa.Table | None) -> dict[str, Candidate]:
        """The batch's distinct candidates, built once each from the batch's payload table."""
        if candidates is None or candidates.num_rows == 0:
            return {item: Candidate(item_id=item) for item in dict.fromkeys(item_ids)}
        cols = [c for c in candidates.column_names if c != "item_id"]
        values = {c: candidates[c].to_pylist() for c in cols}
        return {item: Candidate(item_id=item, **{c: values[c][n] for c in cols})
                for n, item in enumerate(candidates["item_id"].to_pylist())}

    def ready(self) -> str:
        """Answers once the judge is built: the pool routes only to hosts that answered."""
        return self.judge.judge_id

    def judge_batch(self, batch: pa.Table, candidates: pa.Table | None = None) -> pa.Table:
        """Judge every view of every match in ``batch``; one MATCH_SCHEMA row per match."""
        rows = batch.to_pylist()
        pool = self._candidates([c for row in rows for c in row["candidate_ids"]], candidates)
        views: list[MatchView] = []
        for row in rows:
            cands = [pool[c] for c in row["candidate_ids"]]
            for v, order in enumerate(row["view_orders"]):
                views.append(MatchView(persona_text=row["persona_text"],
                                       candidates=tuple(cands[i] for i in order),
                                       seed=seed_for(row["match_key"], "view", v)))
        judgements = self.judge.judge(views)
        if len(judgements) != len(views):
            raise RuntimeError(f"judge returned {len(judgements)} judgements for {len(views)} views")
        out: dict[str, list] = {name: [] for name in MATCH_SCHEMA.names}
        start = 0
        for row in rows:
            n = len(row["view_orders"])
            js = judgements[start:start + n]
            start += n
            k = len(row["candidate_ids"])
            scores, winner, error = aggregate_views(row["match_key"], k, row["view_orders"], js,
                                                    self.winner_rule)
            for name in ("match_key", "tournament_id", "persona_id", "round", "match_index",
                         "candidate_ids", "view_orders"):
                out[name].append(row[name])
            out["scores"].append(None if scores is None else scores.tolist())
            out["winner_id"].append(row["candidate_ids"][winner])
            out["view_scores"].append(None if scores is None else
                                      [None if j.scores is None else np.asarray(j.scores).tolist() for j in js])
            masses = [j.extras.get("label_mass") for j in js]
            out["view_label_mass"].append(masses if any(m is not None for m in masses) else None)
            out["teacher_calls"].append(n)
            out["judge_id"].append(self.judge.judge_id)
            out["prompt_version"].append(self.judge.prompt_version)
            out["error"].append(error)
            out["attempt_id"].append(self.attempt_id)
        return pa.table(out, schema=MATCH_SCHEMA)
