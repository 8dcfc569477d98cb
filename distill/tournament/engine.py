"""The round engine: synchronous rounds, each one Ray Data pass over every open match.

Per round: plan every tournament's matches from its survivors (deterministic from seeds),
drop the matches already judged (staged by an earlier, interrupted attempt), fan the rest out
to an autoscaling pool of judge actors, stage each returned batch as it arrives, then commit
the round atomically and move the winners and byes on. Synchronous rounds keep the state
small (survivor lists), make a crash cost at most the unstaged part of one round, and let one
pass batch matches from *all* personas so a GPU pool stays full.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field
from tqdm.auto import tqdm

from distill import storage
from distill.schemas import ELIMINATION_SCHEMA, TOURNAMENT_SCHEMA
from distill.seeding import seed_for
from distill.tournament import bracket
from distill.tournament.store import RoundStore, SURVIVOR_SCHEMA
from distill.tournament.hosts import JudgeHostPool, JudgePoolConfig, route_batch


class TournamentConfig(BaseModel):
    """How the knockout is played."""

    model_config = ConfigDict(extra="forbid")
    k: int = Field(5, ge=2, le=16, description="Candidates per match (2 reproduces PAD's pairwise knockout).")
    n_views: int = Field(1, ge=1, le=16, description="Orders each match is judged under; >1 averages out position bias (cyclic shifts, then random).")
    winner_rule: Literal["argmax", "sample"] = Field("argmax", description="'argmax' of the averaged scores, or a seeded draw from them.")
    seed: int = Field(0, description="Root seed: shuffles, view orders and judge noise derive from it.")


@dataclass(frozen=True)
class TournamentSpec:
    """One tournament: a persona against a candidate set."""

    tournament_id: str
    persona_id: str
    persona_text: str
    candidate_ids: tuple[str, ...]


class RunSummary(BaseModel):
    """What a finished run prints and writes to ``summary.json``."""

    output: str
    tournaments: int
    k: int
    n_views: int
    rounds: int
    matches: int
    teacher_calls: int
    teacher_calls_per_tournament: float
    pairwise_calls_per_tournament: float = Field(description="N - 1: what PAD's k=2 knockout pays per persona.")
    failed_matches: int
    winner_changed_by_debiasing: float | None = Field(None, description="Share of multi-view matches whose first view alone would have picked another winner.")
    label_mass: dict | None = Field(None, description="Raw probability the judge put on the option labels, per view (distill.label_quality.LabelMassSummary); None when the judge reports none.")
    judged_this_attempt: int
    reused_from_earlier_attempts: int
    seconds: float


@dataclass
class RunResult:
    summary: RunSummary
    tournaments: pa.Table
    eliminations: pa.Table
    matches: pa.Table


def _fingerprint(specs: list[TournamentSpec], cfg: TournamentConfig, judge_config: dict) -> tuple[str, dict]:
    h = hashlib.blake2b(digest_size=16)
    for s in specs:
        h.update(json.dumps([s.tournament_id, s.persona_id, s.persona_text, list(s.candidate_ids)]).encode())
    settings = {**cfg.model_dump(), "judge": judge_config, "inputs": h.hexdigest(),
                "tournaments": len(specs)}
    return hashlib.blake2b(json.dumps(settings, sort_keys=True).encode(), digest_size=16).hexdigest(), settings


def _match_key(fingerprint: str, tid: str, r: int, i: int, candidates: tuple[str, ...]) -> str:
    return hashlib.blake2b(json.dumps([fingerprint, tid, r, i, list(candidates)]).encode(),
                           digest_size=16).hexdigest()


def plan_requests(specs: dict[str, TournamentSpec], survivors: dict[str, list[str]], r: int,
                  cfg: TournamentConfig, fingerprint: str) -> tuple[list[dict], dict[str, tuple[str, ...]]]:
    """Match requests of round ``r`` for every open tournament, and each tournament's byes."""
    requests: list[dict] = []
    byes: dict[str, tuple[str, ...]] = {}
    for tid, alive in survivors.items():
        if len(alive) <= 1:
            continue
        t_seed = seed_for(cfg.seed, tid)
        plan = bracket.plan_round(alive, cfg.k, bracket.round_seed(t_seed, r))
        byes[tid] = plan.byes
        for i, cands in enumerate(plan.matches):
            key = _match_key(fingerprint, tid, r, i, cands)
            requests.append(dict(
                match_key=key, tournament_id=tid, persona_id=specs[tid].persona_id,
                persona_text=specs[tid].persona_text, round=r, match_index=i, candidate_ids=list(cands),
                view_orders=bracket.view_orders(len(cands), cfg.n_views, seed_for(key, "views")),
            ))
    return requests, byes


def _judge_round(requests: list[dict], hosts: JudgeHostPool, pool: JudgePoolConfig, store: RoundStore, r: int,
                 attempt_id: str, bar: tqdm) -> None:
    """One Ray Data pass over the round's open matches, judged by the job's host pool."""
    import ray.data

    # One block per batch, so batches flow to the hosts in parallel as the pass streams.
    # from_items builds the blocks in the driver: from_arrow would run a metadata task per block
    # that needs a CPU, and the judge actors may hold every CPU of a small machine (deadlock).
    n_blocks = math.ceil(len(requests) / max(1, pool.batch_size))
    handles = hosts.for_round(n_blocks)
    ds = ray.data.from_items(requests, override_num_blocks=n_blocks).map_batches(
        route_batch, fn_kwargs={"hosts": handles}, batch_size=None, batch_format="pyarrow",
        num_cpus=0, concurrency=2 * len(handles))
    for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
        store.stage(r, batch, attempt_id)
        bar.update(batch.num_rows)


def _commit(store: RoundStore, state: Any, r: int, requests: list[dict], byes: dict[str, tuple[str, ...]],
            survivors: dict[str, list[str]]) -> dict[str, list[str]]:
    """Check round ``r`` is complete, commit it, and return who goes on (winners, then byes kept)."""
    matches = store.staged(r)
    wanted = {q["match_key"] for q in requests}
    got = set(matches["match_key"].to_pylist())
    if got != wanted:
        raise RuntimeError(f"round {r}: {len(wanted - got)} match(es) were not judged")
    order = {q["match_key"]: n for n, q in enumerate(requests)}
    matches = matches.take(np.argsort([order[k] for k in matches["match_key"].to_pylist()]))
    nxt: dict[str, list[str]] = {tid: list(b) for tid, b in byes.items()}
    for tid, w in zip(matches["tournament_id"].to_pylist(), matches["winner_id"].to_pylist()):
        nxt[tid].append(w)
    for tid, alive in survivors.items():
        nxt.setdefault(tid, alive)  # already decided
    rows = [(tid, item) for tid, items in nxt.items() for item in items]
    store.commit_round(state, r, matches, pa.table(
        {"tournament_id": [t for t, _ in rows], "item_id": [i for _, i in rows]}, schema=SURVIVOR_SCHEMA))
    return nxt


def run_tournaments(specs: list[TournamentSpec], payload: pa.Table, cfg: TournamentConfig,
                    judge_config: BaseModel, pool: JudgePoolConfig, output: str,
                    overwrite: bool = False, progress: bool = True) -> RunResult:
    """Play every tournament to the end, resuming whatever ``output`` already holds.

    ``payload`` is the candidates' catalog rows (``item_id`` plus the columns the judge
    reads); it is put in the object store once and shared by all judge actors.
    """
    t0 = time.time()
    if len({s.tournament_id for s in specs}) != len(specs):
        raise ValueError("tournament ids must be unique")
    known = set(payload["item_id"].to_pylist())
    for s in specs:
        missing = [c for c in s.candidate_ids if c not in known]
        if missing:
            raise ValueError(f"tournament {s.tournament_id}: {len(missing)} candidate(s) not in the catalog, e.g. {missing[0]!r}")
        if len(set(s.candidate_ids)) != len(s.candidate_ids):
            raise ValueError(f"tournament {s.tournament_id}: duplicate candidate ids")
        if not s.candidate_ids:
            raise ValueError(f"tournament {s.tournament_id}: no candidates")
    judge_dump = judge_config.model_dump(mode="json")
    fingerprint, settings = _fingerprint(specs, cfg, judge_dump)
    store = RoundStore(output)
    state = store.open(fingerprint, settings, overwrite=overwrite)
    by_id = {s.tournament_id: s for s in specs}

    survivors: dict[str, list[str]] = {s.tournament_id: list(s.candidate_ids) for s in specs}
    if state.committed_rounds:
        last = store.survivors(state.committed_rounds - 1).to_pylist()
        survivors = defaultdict(list)
        for row in last:
            survivors[row["tournament_id"]].append(row["item_id"])
        survivors = {tid: survivors.get(tid, []) for tid in by_id}

    attempt_id = uuid.uuid4().hex[:12]
    judged_now = reused = 0
    hosts: JudgeHostPool | None = None
    r = state.committed_rounds
    try:
        while not state.finished:
            requests, byes = plan_requests(by_id, survivors, r, cfg, fingerprint)
            if not requests:
                break
            done = store.staged_keys(r)
            todo = [q for q in requests if q["match_key"] not in done]
            reused += len(requests) - len(todo)
            with tqdm(total=len(requests), initial=len(requests) - len(todo), disable=not progress,
                      desc=f"round {r} ({len(requests)} matches)", unit="match") as bar:
                if todo:
                    if hosts is None:  # first real work: start Ray and the judges, once per job
                        import ray

                        from distill.ray_utils import init_ray

                        init_ray()
                        hosts = JudgeHostPool(pool, judge_dump, ray.put(payload), cfg.winner_rule, attempt_id)
                    _judge_round(todo, hosts, pool, store, r, attempt_id, bar)
                    judged_now += len(todo)
            survivors = _commit(store, state, r, requests, byes, survivors)
            r += 1
    finally:
        if hosts is not None:
            hosts.shutdown()

    all_matches = store.matches(state)
    tournaments, eliminations = _results(specs, all_matches, cfg)
    summary = _summary(output, specs, cfg, all_matches, state.committed_rounds, judged_now, reused,
                       time.time() - t0)
    if not state.finished:
        storage.write_table_atomic(tournaments, store.path("tournaments.parquet"), TOURNAMENT_SCHEMA)
        storage.write_table_atomic(eliminations, store.path("eliminations.parquet"), ELIMINATION_SCHEMA)
        storage.write_json_atomic(summary.model_dump(), store.path("summary.json"))
        state.finished = True
        store.save_state(state)
    return RunResult(summary=summary, tournaments=tournaments, eliminations=eliminations, matches=all_matches)


def _results(specs: list[TournamentSpec], matches: pa.Table, cfg: TournamentConfig) -> tuple[pa.Table, pa.Table]:
    by_t: dict[str, list[dict]] = defaultdict(list)
    for m in matches.select(["tournament_id", "round", "candidate_ids", "winner_id", "teacher_calls"]).to_pylist():
        by_t[m["tournament_id"]].append(m)
    t_rows, e_rows = [], []
    for s in specs:
        ms = by_t.get(s.tournament_id, [])
        eliminated = {}
        for m in ms:
            for c in m["candidate_ids"]:
                if c != m["winner_id"]:
                    eliminated[c] = m["round"]
        winners = [c for c in s.candidate_ids if c not in eliminated]
        if len(winners) != 1:
            raise RuntimeError(f"tournament {s.tournament_id} has {len(winners)} undefeated candidates")
        t_rows.append(dict(
            tournament_id=s.tournament_id, persona_id=s.persona_id, n_candidates=len(s.candidate_ids),
            k=cfg.k, n_rounds=1 + max((m["round"] for m in ms), default=-1), n_matches=len(ms),
            teacher_calls=sum(m["teacher_calls"] for m in ms), winner_id=winners[0],
            seed=seed_for(cfg.seed, s.tournament_id)))
        e_rows += [dict(tournament_id=s.tournament_id, item_id=c, eliminated_in_round=eliminated.get(c))
                   for c in s.candidate_ids]
    return (pa.Table.from_pylist(t_rows, schema=TOURNAMENT_SCHEMA),
            pa.Table.from_pylist(e_rows, schema=ELIMINATION_SCHEMA))


def _summary(output: str, specs: list[TournamentSpec], cfg: TournamentConfig, matches: pa.Table, rounds: int,
             judged_now: int, reused: int, seconds: float) -> RunSummary:
    calls = int(pc.sum(matches["teacher_calls"]).as_py() or 0)
    changed = None
    if cfg.n_views > 1:
        flips = total = 0
        for scores, views in zip(matches["scores"].to_pylist(), matches["view_scores"].to_pylist()):
            if scores is None or not views or views[0] is None:
                continue
            total += 1
            flips += int(np.argmax(views[0]) != np.argmax(scores))
        changed = flips / total if total else 0.0
    n = max(1, len(specs))
    from distill.label_quality import mass_summary

    mass = mass_summary(matches)
    return RunSummary(label_mass=mass.model_dump() if mass.views_with_mass else None,
        output=output, tournaments=len(specs), k=cfg.k, n_views=cfg.n_views, rounds=rounds,
        matches=matches.num_rows, teacher_calls=calls, teacher_calls_per_tournament=calls / n,
        pairwise_calls_per_tournament=sum(len(s.candidate_ids) - 1 for s in specs) / n,
        failed_matches=int(matches["error"].is_valid().to_numpy(zero_copy_only=False).sum()) if matches.num_rows else 0,
        winner_changed_by_debiasing=changed, judged_this_attempt=judged_now,
        reused_from_earlier_attempts=reused, seconds=round(seconds, 2))
