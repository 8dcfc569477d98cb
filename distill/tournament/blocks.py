"""One block of tournaments for one round, as a Ray task: plan, judge, stage, write survivors.

Why blocks: the state of a run (who is still alive in which tournament) is personas x
candidates, 4 M entries for 1,000 personas x 4,096 candidates. It lives in Parquet, one file per
block and round, and each round runs one task per block, so the driver only counts. Planning
is vectorised (numpy permutations per tournament, Arrow list arrays per block); the only
per-match Python left is the match key, which seeds the judge and names the match on resume.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from distill.schemas import ELIMINATION_SCHEMA, MATCH_SCHEMA, TOURNAMENT_SCHEMA
from distill.seeding import seed_for
from distill.tournament import bracket
from distill.tournament.store import BLOCK_SCHEMA, RoundStore
from distill.tournament.worker import REQUEST_SCHEMA


@dataclass(frozen=True)
class RoundArgs:
    """What every block task of a run needs besides its block and round (small, picklable)."""

    root: str
    fingerprint: str
    k: int
    n_views: int
    seed: int
    batch_size: int
    attempt_id: str
    payload_columns: tuple[str, ...] = ()


def match_key(fingerprint: str, tid: str, r: int, i: int, candidates: list[str]) -> str:
    return hashlib.blake2b("\x1e".join([fingerprint, tid, str(r), str(i), "\x1f".join(candidates)]).encode(),
                           digest_size=16).hexdigest()


def _view_orders(sizes: np.ndarray, keys: list[str], n_views: int) -> pa.Array:
    """list<list<int16>> of each match's view orders, built from cached per-size orders."""
    cache: dict[int, np.ndarray] = {}
    flat, inner = [], []
    for n, size in enumerate(sizes.tolist()):
        if n_views <= size:
            if size not in cache:
                cache[size] = np.asarray(bracket.view_orders(size, n_views, 0), np.int16).ravel()
            flat.append(cache[size])
        else:
            flat.append(np.asarray(bracket.view_orders(size, n_views, seed_for(keys[n], "views")), np.int16).ravel())
        inner.append(size)
    values = pa.array(np.concatenate(flat) if flat else np.zeros(0, np.int16), pa.int16())
    inner_offsets = np.concatenate([[0], np.cumsum(np.repeat(np.asarray(inner, np.int64), n_views))]).astype(np.int32)
    views = pa.ListArray.from_arrays(pa.array(inner_offsets), values)
    outer = pa.array(np.arange(len(sizes) + 1, dtype=np.int32) * n_views)
    return pa.ListArray.from_arrays(outer, views)


@dataclass
class BlockPlan:
    requests: pa.Table          # REQUEST_SCHEMA, one row per match, grouped by tournament
    match_tournament: np.ndarray  # row of the block table each match belongs to
    carried: list[np.ndarray]     # per tournament: flat indices that go on without playing (byes, or all if decided)
    flat: pa.Array                # every alive candidate of the block, flattened


def plan_block(block: pa.Table, r: int, a: RoundArgs) -> BlockPlan:
    """Round ``r``'s matches of every open tournament in ``block`` (BLOCK_SCHEMA rows)."""
    alive = block["alive"].combine_chunks()
    lengths = pc.list_value_length(alive).to_numpy(zero_copy_only=False).astype(np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    flat = pc.list_flatten(alive)
    tids = block["tournament_id"].to_pylist()
    played, sizes, match_t, match_i, carried = [], [], [], [], []
    for t, (tid, n) in enumerate(zip(tids, lengths.tolist())):
        order, n_play = bracket.plan_positions(n, a.k, bracket.round_seed(seed_for(a.seed, tid), r))
        order = order + starts[t]
        carried.append(order[n_play:])
        if n_play:
            size = min(a.k, n_play)
            played.append(order[:n_play])
            n_m = n_play // size
            sizes.append(np.full(n_m, size, np.int64))
            match_t.append(np.full(n_m, t, np.int64))
            match_i.append(np.arange(n_m, dtype=np.int64))
    cat = lambda xs: np.concatenate(xs) if xs else np.zeros(0, np.int64)  # noqa: E731
    sizes_a, match_t_a, match_i_a = cat(sizes), cat(match_t), cat(match_i)
    offsets = np.concatenate([[0], np.cumsum(sizes_a)]).astype(np.int32)
    cands = pa.ListArray.from_arrays(pa.array(offsets), flat.take(pa.array(cat(played))))
    tid_col = block["tournament_id"].combine_chunks().take(pa.array(match_t_a))
    cand_lists = cands.to_pylist()
    keys = [match_key(a.fingerprint, t, r, i, c)
            for t, i, c in zip(tid_col.to_pylist(), match_i_a.tolist(), cand_lists)]
    t_idx = pa.array(match_t_a)
    requests = pa.table({
        "match_key": pa.array(keys, pa.string()),
        "tournament_id": tid_col,
        "persona_id": block["persona_id"].combine_chunks().take(t_idx),
        "persona_text": block["persona_text"].combine_chunks().take(t_idx),
        "round": pa.array(np.full(len(keys), r, np.int32)),
        "match_index": pa.array(match_i_a.astype(np.int32)),
        "candidate_ids": cands,
        "view_orders": _view_orders(sizes_a, keys, a.n_views),
    }, schema=REQUEST_SCHEMA)
    return BlockPlan(requests=requests, match_tournament=match_t_a, carried=carried, flat=flat)


def _next_alive(block: pa.Table, plan: BlockPlan, winners: pa.Array) -> pa.Table:
    """Each tournament's next survivors: the candidates carried over (byes) then its winners, in match order."""
    n_flat = len(plan.flat)
    pool = pa.concat_arrays([plan.flat, winners.cast(pa.string())])
    bounds = np.searchsorted(plan.match_tournament, np.arange(block.num_rows + 1))
    idx, offsets = [], [0]
    for t in range(block.num_rows):
        part = np.concatenate([plan.carried[t], n_flat + np.arange(bounds[t], bounds[t + 1])])
        idx.append(part)
        offsets.append(offsets[-1] + len(part))
    take = np.concatenate(idx) if idx else np.zeros(0, np.int64)
    alive = pa.ListArray.from_arrays(pa.array(np.asarray(offsets, np.int32)), pool.take(pa.array(take)))
    return pa.table({"tournament_id": block["tournament_id"], "persona_id": block["persona_id"],
                     "persona_text": block["persona_text"], "alive": alive}, schema=BLOCK_SCHEMA)


def play_block(a: RoundArgs, r: int, b: int, hosts: list[Any]) -> dict:
    """Play round ``r`` of block ``b`` to its round files; returns counts only.

    Matches staged by an earlier attempt are not judged again; the rest go to the judge hosts in
    batches (with their candidates' payload), a few in flight per host, and each answer is staged
    as it arrives. Idempotent: a retried task re-reads staging and writes the same files.
    """
    import ray

    store = RoundStore(a.root)
    block = store.alive(r, b)
    plan = plan_block(block, r, a)
    req = plan.requests
    todo = req.filter(pc.invert(pc.is_in(req["match_key"], value_set=store.staged_keys(r, b))))
    if todo.num_rows:
        reader = None
        if a.payload_columns:
            from distill.tournament.payload import reader as payload_reader

            reader = payload_reader(a.root)
        limit = 2 * len(hosts)
        pending: list[Any] = []
        for n, lo in enumerate(range(0, todo.num_rows, a.batch_size)):
            batch = todo.slice(lo, a.batch_size)
            cands = None
            if reader is not None:
                cands = reader.take(pc.list_flatten(batch["candidate_ids"]).to_pylist(), list(a.payload_columns))
            pending.append(hosts[(b + n) % len(hosts)].judge_batch.remote(batch, cands))
            if len(pending) >= limit:
                done, pending = ray.wait(pending, num_returns=1)
                store.stage(r, b, ray.get(done[0]), a.attempt_id)
        for ref in pending:
            store.stage(r, b, ray.get(ref), a.attempt_id)
    staged = store.staged(r, b)
    pos = pc.index_in(req["match_key"], value_set=staged["match_key"])
    if pos.null_count:
        raise RuntimeError(f"round {r}, block {b}: {pos.null_count} match(es) were not judged")
    matches = staged.take(pos)
    survivors = _next_alive(block, plan, matches["winner_id"].combine_chunks())
    store.write_round(r, b, matches, survivors)
    lengths = pc.list_value_length(survivors["alive"]).to_numpy(zero_copy_only=False)
    return dict(block=b, planned=req.num_rows, judged=todo.num_rows,
                open=int((lengths > 1).sum()), entering=int(lengths[lengths > 1].sum()))


def finish_block(a: RoundArgs, b: int, committed_rounds: int) -> tuple[pa.Table, dict]:
    """Block ``b``'s tournament rows and eliminations (written under ``eliminations/``), plus counts."""
    from distill import storage
    from distill.tournament.store import RunState

    store = RoundStore(a.root)
    state = RunState(fingerprint=a.fingerprint, committed_rounds=committed_rounds)
    inputs = store.alive(0, b)
    final = store.final_survivors(state, b)
    m = store.block_matches(state, b)
    n_final = pc.list_value_length(final["alive"]).to_numpy(zero_copy_only=False)
    bad = np.flatnonzero(n_final != 1)
    if len(bad):
        raise RuntimeError(f"tournament {final['tournament_id'][int(bad[0])]} has {n_final[bad[0]]} undefeated candidates")
    # eliminations: every candidate of every tournament, with the round it lost (null: the winner)
    lens = pc.list_value_length(inputs["alive"]).to_numpy(zero_copy_only=False)
    cand = pa.table({"tournament_id": inputs["tournament_id"].combine_chunks().take(
                        pa.array(np.repeat(np.arange(inputs.num_rows), lens))),
                     "item_id": pc.list_flatten(inputs["alive"]),
                     "_order": pa.array(np.arange(int(lens.sum())))})
    mlen = pc.list_value_length(m["candidate_ids"]).to_numpy(zero_copy_only=False)
    rep = pa.array(np.repeat(np.arange(m.num_rows), mlen))
    played = pa.table({"tournament_id": m["tournament_id"].combine_chunks().take(rep),
                       "item_id": pc.list_flatten(m["candidate_ids"]),
                       "eliminated_in_round": m["round"].combine_chunks().take(rep),
                       "_winner": m["winner_id"].combine_chunks().take(rep)})
    lost = played.filter(pc.not_equal(played["item_id"], played["_winner"])).drop_columns(["_winner"])
    elim = cand.join(lost, ["tournament_id", "item_id"], join_type="left outer").sort_by("_order")
    storage.write_table_atomic(elim.drop_columns(["_order"]),
                               storage.join(store.eliminations_dir(), f"block-{b:05d}.parquet"), ELIMINATION_SCHEMA)
    # tournament rows
    agg = m.group_by("tournament_id").aggregate([("round", "max"), ("round", "count"), ("teacher_calls", "sum")])
    pos = pc.index_in(inputs["tournament_id"], value_set=agg["tournament_id"])
    fill = lambda col, v: pc.fill_null(agg[col].take(pos), v).to_numpy(zero_copy_only=False)  # noqa: E731
    tids = inputs["tournament_id"].to_pylist()
    tournaments = pa.table({
        "tournament_id": inputs["tournament_id"], "persona_id": inputs["persona_id"],
        "n_candidates": pa.array(lens.astype(np.int32)), "k": pa.array(np.full(len(tids), a.k, np.int32)),
        "n_rounds": pa.array((fill("round_max", -1) + 1).astype(np.int32)),
        "n_matches": pa.array(fill("round_count", 0).astype(np.int32)),
        "teacher_calls": pa.array(fill("teacher_calls_sum", 0).astype(np.int32)),
        "winner_id": pc.list_flatten(final["alive"]),
        "seed": pa.array([seed_for(a.seed, t) for t in tids], pa.int64()),
    }, schema=TOURNAMENT_SCHEMA)
    stats = dict(matches=m.num_rows, teacher_calls=int(pc.sum(m["teacher_calls"]).as_py() or 0),
                 failed=int(m["error"].is_valid().to_numpy(zero_copy_only=False).sum()) if m.num_rows else 0,
                 this_attempt=int(pc.sum(pc.equal(m["attempt_id"], a.attempt_id)).as_py() or 0),
                 flips=0, multi_view=0,
                 views_with_mass=int(m["view_label_mass"].is_valid().to_numpy(zero_copy_only=False).sum())
                 if m.num_rows else 0)
    if a.n_views > 1:
        for scores, views in zip(m["scores"].to_pylist(), m["view_scores"].to_pylist()):
            if scores is None or not views or views[0] is None:
                continue
            stats["multi_view"] += 1
            stats["flips"] += int(np.argmax(views[0]) != np.argmax(scores))
    return tournaments, stats


def empty_matches() -> pa.Table:
    return MATCH_SCHEMA.empty_table()
