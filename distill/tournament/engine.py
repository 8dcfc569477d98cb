"""The round engine: synchronous rounds, each a fan-out of Ray tasks over blocks of tournaments.

Per round, one task per block (``blocks.py``) reads the block's survivors from Parquet, plans
its matches (deterministic from seeds), drops the matches already judged (staged by an earlier,
interrupted attempt), sends the rest with their candidates' payload to the job's pool of judge
actors, stages each answer as it arrives, and writes the block's matches and next survivors.
When every block is done the driver commits the round (``state.json``). The driver holds only
counts: the state of a run (personas x candidates) stays in storage, and the catalog stays in
its Parquet parts (``payload.py``), never in the object store.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
import uuid
from dataclasses import dataclass, field
from functools import cached_property
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field
from tqdm.auto import tqdm

from distill import storage
from distill.ray_utils import fan_out
from distill.runs import digest, identity
from distill.schemas import ELIMINATION_SCHEMA, TOURNAMENT_SCHEMA
from distill.tournament.blocks import RoundArgs, finish_block, play_block
from distill.tournament.hosts import JudgeHostPool, JudgePoolConfig
from distill.tournament.payload import CatalogSource, stage_payload
from distill.tournament.store import BLOCK_SCHEMA, RoundStore, RunState

BLOCK_CANDIDATES = 1 << 18  # candidate entries per block of tournaments: ~64 personas x 4,096


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
    round_passes: list[tuple[int, float]] = Field(default_factory=list, description=(
        "(matches planned, seconds) of each round pass played by the attempt that finished the run: where "
        "its time went, round by round (bench/tournament.py reads it)"))


@dataclass
class RunResult:
    """A finished run. ``tournaments`` has one row per tournament; ``matches`` and
    ``eliminations`` (personas x candidates) are read from the run's files on first use."""

    summary: RunSummary
    tournaments: pa.Table
    store: RoundStore = field(repr=False)
    state: RunState = field(repr=False)

    @cached_property
    def matches(self) -> pa.Table:
        return self.store.matches(self.state)

    @cached_property
    def eliminations(self) -> pa.Table:
        return storage.read_table(self.store.eliminations_dir(), schema=ELIMINATION_SCHEMA)




def _digests(specs: list[TournamentSpec]) -> dict[int, tuple[tuple[str, ...], str]]:
    """A digest per distinct candidate tuple (specs of a job share one tuple: hashed once)."""
    out: dict[int, tuple[tuple[str, ...], str]] = {}
    for s in specs:
        if id(s.candidate_ids) not in out:
            name = hashlib.blake2b("\x1f".join(s.candidate_ids).encode(), digest_size=16).hexdigest()
            out[id(s.candidate_ids)] = (s.candidate_ids, name)
    return out


def _fingerprint(specs: list[TournamentSpec], cfg: TournamentConfig, judge_config: dict) -> tuple[str, dict]:
    digests = _digests(specs)
    h = hashlib.blake2b(digest_size=16)
    for s in specs:
        h.update(json.dumps([s.tournament_id, s.persona_id, s.persona_text, len(s.candidate_ids),
                             digests[id(s.candidate_ids)][1]]).encode())
    # The run identity of distill.runs (the config minus its execution fields), plus what the specs hold.
    settings = {**identity(cfg), "judge": judge_config, "inputs": h.hexdigest(), "tournaments": len(specs)}
    return digest(settings, 16), settings


def _check_specs(specs: list[TournamentSpec], payload: pa.Table | CatalogSource) -> pa.Array:
    """Refuse malformed specs up front; return the distinct candidate ids of the run."""
    if len({s.tournament_id for s in specs}) != len(specs):
        raise ValueError("tournament ids must be unique")
    distinct = _digests(specs)
    bad = {key for key, (ids, _) in distinct.items() if len(set(ids)) != len(ids)}
    for s in specs:
        if not s.candidate_ids:
            raise ValueError(f"tournament {s.tournament_id}: no candidates")
        if id(s.candidate_ids) in bad:
            raise ValueError(f"tournament {s.tournament_id}: duplicate candidate ids")
    universe = pa.array(sorted(set().union(*(ids for ids, _ in distinct.values()))), pa.string())
    if isinstance(payload, pa.Table):
        missing = universe.filter(pc.invert(pc.is_in(universe, value_set=payload["item_id"])))
        if len(missing):
            first = next(s for s in specs if missing[0].as_py() in s.candidate_ids)
            raise ValueError(f"tournament {first.tournament_id}: {len(missing)} candidate(s) not in the catalog, "
                             f"e.g. {missing[0].as_py()!r}")
    return universe


def _write_inputs(store: RoundStore, specs: list[TournamentSpec], block_candidates: int) -> int:
    """Write the tournaments as blocks of about ``block_candidates`` candidate entries; returns the count."""
    arrays: dict[int, pa.Array] = {}
    blocks: list[list[TournamentSpec]] = [[]]
    size = 0
    for s in specs:
        if blocks[-1] and size + len(s.candidate_ids) > block_candidates:
            blocks.append([])
            size = 0
        blocks[-1].append(s)
        size += len(s.candidate_ids)
    for b, block in enumerate(blocks):
        values = []
        for s in block:
            if id(s.candidate_ids) not in arrays:
                arrays[id(s.candidate_ids)] = pa.array(s.candidate_ids, pa.string())
            values.append(arrays[id(s.candidate_ids)])
        offsets = np.concatenate([[0], np.cumsum([len(v) for v in values])]).astype(np.int32)
        store.write_input(b, pa.table({
            "tournament_id": [s.tournament_id for s in block], "persona_id": [s.persona_id for s in block],
            "persona_text": [s.persona_text for s in block],
            "alive": pa.ListArray.from_arrays(pa.array(offsets), pa.concat_arrays(values)),
        }, schema=BLOCK_SCHEMA))
        if len(arrays) > 64:  # many small distinct tuples (one match per tournament): keep the cache small
            arrays.clear()
    return len(blocks)


def run_tournaments(specs: list[TournamentSpec], payload: pa.Table | CatalogSource, cfg: TournamentConfig,
                    judge_config: BaseModel, pool: JudgePoolConfig, output: str,
                    overwrite: bool = False, progress: bool = True,
                    block_candidates: int = BLOCK_CANDIDATES) -> RunResult:
    """Play every tournament to the end, resuming whatever ``output`` already holds.

    ``payload`` is where the candidates' catalog rows are: a ``CatalogSource`` (Parquet parts,
    read by Ray tasks, only the columns the judge declares) or, for small in-memory catalogs, a
    table (``item_id`` plus those columns). Specs that share one ``candidate_ids`` tuple (a job's
    personas against one candidate sample) cost the driver that tuple once.
    """
    t0 = time.time()
    universe = _check_specs(specs, payload)
    judge_dump = judge_config.model_dump(mode="json")
    fingerprint, settings = _fingerprint(specs, cfg, judge_dump)
    store = RoundStore(output)
    state = store.open(fingerprint, settings, overwrite=overwrite)
    if state.finished:
        summary = RunSummary.model_validate(storage.read_json(store.path("summary.json")))
        summary = summary.model_copy(update=dict(judged_this_attempt=0, reused_from_earlier_attempts=summary.matches,
                                                 seconds=round(time.time() - t0, 2)))
        tournaments = storage.read_table(store.path("tournaments.parquet"), schema=TOURNAMENT_SCHEMA)
        return RunResult(summary=summary, tournaments=tournaments, store=store, state=state)
    if not state.n_blocks:
        state.n_blocks = _write_inputs(store, specs, block_candidates)
        state.open_tournaments = sum(len(s.candidate_ids) > 1 for s in specs)
        state.entering = sum(len(s.candidate_ids) for s in specs if len(s.candidate_ids) > 1)
        store.save_state(state)

    from distill.ray_utils import init_ray

    init_ray()
    attempt_id = uuid.uuid4().hex[:12]
    args = RoundArgs(root=output, fingerprint=fingerprint, k=cfg.k, n_views=cfg.n_views, seed=cfg.seed,
                     batch_size=pool.batch_size, attempt_id=attempt_id)
    blocks = range(state.n_blocks)
    passes: list[tuple[int, float]] = []
    if state.open_tournaments:
        with JudgeHostPool(pool, judge_dump, cfg.winner_rule, attempt_id) as hosts:
            columns = hosts.payload_columns()
            if columns:
                stage_payload(output, payload, columns, universe)
            args = RoundArgs(**{**args.__dict__, "payload_columns": tuple(columns)})
            r = state.committed_rounds
            while state.open_tournaments:
                pass_started = time.perf_counter()
                est = math.ceil((state.entering or 0) / cfg.k)
                handles = hosts.for_round(math.ceil(est / pool.batch_size))
                with tqdm(total=est, disable=not progress, desc=f"round {r} (~{est} matches)", unit="match") as bar:
                    results = fan_out(play_block, [(args, r, b, handles) for b in blocks],
                                      max_in_flight=len(handles) + 1, on_result=lambda x: bar.update(x["planned"]))
                passes.append((sum(x["planned"] for x in results), round(time.perf_counter() - pass_started, 3)))
                store.commit_round(state, r, open_tournaments=sum(x["open"] for x in results),
                                   entering=sum(x["entering"] for x in results))
                r += 1
    finished = fan_out(finish_block, [(args, b, state.committed_rounds) for b in blocks], max_in_flight=2)
    tournaments = pa.concat_tables([t for t, _ in finished])
    stats = {key: sum(s[key] for _, s in finished) for key in finished[0][1]}
    label_mass = None
    if stats["views_with_mass"]:  # only judges that report it (a VLM): summarised in a task, not here
        import ray

        label_mass = ray.get(ray.remote(num_cpus=0)(_label_mass).remote(store, state))
    summary = _summary(output, specs, cfg, stats, state.committed_rounds, time.time() - t0, label_mass, passes)
    storage.write_table_atomic(tournaments, store.path("tournaments.parquet"), TOURNAMENT_SCHEMA)
    storage.write_json_atomic(summary.model_dump(), store.path("summary.json"))
    state.finished = True
    store.save_state(state)
    return RunResult(summary=summary, tournaments=tournaments, store=store, state=state)


def _label_mass(store: RoundStore, state: RunState) -> dict:
    """The run's label-mass summary (``distill.label_quality``), from the columns it needs."""
    from distill.label_quality import mass_summary

    cols = ["view_orders", "view_scores", "view_label_mass"]
    tables = [storage.read_table(store.round_path(r, b), columns=cols)
              for r in range(state.committed_rounds) for b in range(state.n_blocks)]
    return mass_summary(pa.concat_tables(tables)).model_dump()


def _summary(output: str, specs: list[TournamentSpec], cfg: TournamentConfig, stats: dict, rounds: int,
             seconds: float, label_mass: dict | None = None,
             round_passes: list[tuple[int, float]] | None = None) -> RunSummary:
    """Counts from the committed matches. Judged now / reused are read from each match's
    ``attempt_id``, so a rerun after a killed driver credits the earlier attempts with every
    match they judged, committed or only staged."""
    n = max(1, len(specs))
    changed = None
    if cfg.n_views > 1:
        changed = stats["flips"] / stats["multi_view"] if stats["multi_view"] else 0.0
    return RunSummary(
        label_mass=label_mass,
        output=output, tournaments=len(specs), k=cfg.k, n_views=cfg.n_views, rounds=rounds,
        matches=stats["matches"], teacher_calls=stats["teacher_calls"],
        teacher_calls_per_tournament=stats["teacher_calls"] / n,
        pairwise_calls_per_tournament=sum(len(s.candidate_ids) - 1 for s in specs) / n,
        failed_matches=stats["failed"], winner_changed_by_debiasing=changed,
        judged_this_attempt=stats["this_attempt"], reused_from_earlier_attempts=stats["matches"] - stats["this_attempt"],
        seconds=round(seconds, 2), round_passes=round_passes or [])
