"""Persona x catalog questions answered in chunked Ray tasks over embedding files, never as a matrix.

A dense persona x catalog score matrix (1,024 personas x 10 M items = 41 GB of float32) is
never built. What the stages need is much smaller:

* **PAD sampling** needs, per persona, the min and max score (to scale into [0, 1]) and a few
  uniform draws from each score bin. :func:`sample_matches` makes two passes of one task per
  embeddings file: the first reduces min/max, the second keeps, per persona and bin, the ``k``
  items with the smallest random keys (a bottom-k sketch: the union's bottom-k is a uniform
  sample without replacement, whatever the file split). The keys come from a hash of the item id
  and the match's seed, so draws do not depend on how the catalog is partitioned or scheduled.
* **Evaluation** needs, per persona, how many items score below the target and how many at or
  above it (percentile and rank): :func:`rank_counts` sums counts over files.

Each task reads its file in slices of ``rows`` and holds at most a (personas x rows) block.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from distill.embed import embedding_files, iter_embedding_batches, vectors_by_id, vectors_of
from distill.sampling import SamplerConfig, fill_from_pools

CHUNK_ROWS = 8192
_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def item_hashes(item_ids: Sequence[str]) -> np.ndarray:
    """A stable 64-bit hash per item id (blake2b), as uint64."""
    return np.fromiter((int.from_bytes(hashlib.blake2b(i.encode(), digest_size=8).digest(), "little")
                        for i in item_ids), dtype=np.uint64, count=len(item_ids))


def mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a cheap, well-spread hash of uint64s (vectorised)."""
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def _scores(queries: np.ndarray, batch) -> tuple[np.ndarray, list[str]]:
    vecs = vectors_of(batch)
    return queries @ vecs.T, batch.column("item_id").to_pylist()


def _minmax_task(file_uri: str, queries: np.ndarray, rows: int) -> tuple[np.ndarray, np.ndarray, int]:
    lo = np.full(len(queries), np.inf, np.float32)
    hi = np.full(len(queries), -np.inf, np.float32)
    n = 0
    for batch in iter_embedding_batches(file_uri, rows):
        s, _ = _scores(queries, batch)
        if s.shape[1]:
            lo, hi = np.minimum(lo, s.min(axis=1)), np.maximum(hi, s.max(axis=1))
            n += s.shape[1]
    return lo, hi, n


def _bin_of(s: np.ndarray, lo: np.ndarray, hi: np.ndarray, edges: Sequence[float]) -> np.ndarray:
    """Row-wise ``distill.sampling.bin_of`` with given min/max (the same scaling and inclusive top)."""
    span = (hi - lo).astype(np.float64)
    u = np.where(span[:, None] > 0, (s - lo[:, None]) / np.where(span > 0, span, 1.0)[:, None], 0.0)
    return np.clip(np.searchsorted(np.asarray(edges[1:-1]), u, side="right"), 0, len(edges) - 2)


def _pools_task(file_uri: str, queries: np.ndarray, lo: np.ndarray, hi: np.ndarray, seeds: np.ndarray,
                edges: Sequence[float], keep: int, rows: int) -> list[list[list[tuple[int, str]]]]:
    """Per persona, per bin: the ``keep`` (key, item_id) pairs with the smallest keys in this file."""
    n_bins = len(edges) - 1
    best: list[list[list[tuple[int, str]]]] = [[[] for _ in range(n_bins)] for _ in range(len(queries))]
    for batch in iter_embedding_batches(file_uri, rows):
        s, ids = _scores(queries, batch)
        if not ids:
            continue
        bins = _bin_of(s, lo, hi, edges)
        keys = mix64(item_hashes(ids)[None, :] ^ seeds[:, None])
        for b in range(n_bins):
            k_b = np.where(bins == b, keys, _MASK64)
            take = min(keep, k_b.shape[1])
            part = np.argpartition(k_b, take - 1, axis=1)[:, :take] if take < k_b.shape[1] else \
                np.broadcast_to(np.arange(k_b.shape[1]), k_b.shape)
            for p in range(len(queries)):
                for j in part[p]:
                    if bins[p, j] == b:
                        best[p][b].append((int(keys[p, j]), ids[j]))
                best[p][b] = sorted(best[p][b])[:keep]
    return best


def _remote(fn, **opts):
    import ray

    return ray.remote(num_cpus=1, **opts)(fn)


@dataclass
class Samples:
    """The sampler's answer: candidate ids per query, plus each query's score range."""

    candidates: list[tuple[str, ...]]
    lo: np.ndarray
    hi: np.ndarray
    n_items: int


def sample_matches(embeddings_uri: str, queries: np.ndarray, seeds: Sequence[int], cfg: SamplerConfig | None = None,
                   rows: int = CHUNK_ROWS) -> Samples:
    """PAD's preference-aligned draws for every query (row of ``queries``, e.g. a persona text
    embedding) over the catalog in ``embeddings_uri``: ``cfg.k`` distinct item ids each, drawn
    uniformly within the min-max scaled score bins, a short bin filled from its neighbours
    (``distill.sampling.fill_from_pools``). ``seeds`` (one per query) make the draws repeatable."""
    import ray

    from distill.ray_utils import init_ray

    cfg = cfg or SamplerConfig()
    init_ray()
    files = embedding_files(embeddings_uri)
    q = ray.put(np.ascontiguousarray(queries, dtype=np.float32))
    parts = ray.get([_remote(_minmax_task).remote(f, q, rows) for f in files])
    lo = np.min([p[0] for p in parts], axis=0)
    hi = np.max([p[1] for p in parts], axis=0)
    n = int(sum(p[2] for p in parts))
    seed_arr = np.asarray([int(s) & 0xFFFFFFFFFFFFFFFF for s in seeds], dtype=np.uint64)
    keep = cfg.k
    refs = [_remote(_pools_task).remote(f, q, lo, hi, seed_arr, list(cfg.edges), keep, rows) for f in files]
    pools: list[list[list[tuple[int, str]]]] = [[[] for _ in cfg.draws] for _ in range(len(queries))]
    for ref in refs:  # merge file by file: the driver holds personas x bins x k ids, not the catalog
        part = ray.get(ref)
        for p in range(len(queries)):
            for b in range(len(cfg.draws)):
                pools[p][b] = sorted(pools[p][b] + part[p][b])[:keep]
    candidates = [tuple(fill_from_pools([[i for _, i in pool] for pool in pools[p]], cfg.draws))
                  for p in range(len(queries))]
    return Samples(candidates=candidates, lo=lo, hi=hi, n_items=n)


def _count_task(file_uri: str, queries: np.ndarray, targets: np.ndarray, target_ids: list[list[str]],
                rows: int) -> tuple[np.ndarray, np.ndarray]:
    """(below, at_or_above) counts per (target set, query); each target counts as tying itself."""
    below = np.zeros(targets.shape, np.int64)
    ge = np.zeros(targets.shape, np.int64)
    where: dict[str, list[tuple[int, int]]] = {}
    for t, ids in enumerate(target_ids):
        for p, i in enumerate(ids):
            where.setdefault(i, []).append((t, p))
    for batch in iter_embedding_batches(file_uri, rows):
        s, ids = _scores(queries, batch)
        for t in range(targets.shape[0]):
            below[t] += (s < targets[t][:, None]).sum(axis=1)
            ge[t] += (s >= targets[t][:, None]).sum(axis=1)
        for j, i in enumerate(ids):  # the target's own row: exactly a tie, whatever the rounding
            for t, p in where.get(i, ()):
                below[t, p] -= int(s[p, j] < targets[t, p])
                ge[t, p] += 1 - int(s[p, j] >= targets[t, p])
    return below, ge


@dataclass
class RankCounts:
    """Per target set and query: items scored strictly below the target, and at or above it."""

    below: np.ndarray   # (T, P) int
    at_or_above: np.ndarray  # (T, P) int: the target's 1-based rank, ties against it
    n_items: int


def rank_counts(embeddings_uri: str, queries: np.ndarray, target_sets: Sequence[Sequence[str]],
                rows: int = CHUNK_ROWS) -> RankCounts:
    """Where each target item lands in its query's ranking of the whole catalog (PAD's percentile:
    share of items scored strictly below; rank: items scored at or above), by chunked counting."""
    import ray

    from distill.ray_utils import init_ray

    init_ray()
    q = np.ascontiguousarray(queries, dtype=np.float32)
    target_ids = [list(ts) for ts in target_sets]
    targets = np.stack([np.einsum("pd,pd->p", q, vectors_by_id(embeddings_uri, ids)) for ids in target_ids]) \
        if target_ids else np.zeros((0, len(q)), np.float32)
    files = embedding_files(embeddings_uri)
    qref = ray.put(q)
    below = np.zeros(targets.shape, np.int64)
    ge = np.zeros(targets.shape, np.int64)
    n = 0
    for ref in [_remote(_count_task).remote(f, qref, targets, target_ids, rows) for f in files]:
        b, g = ray.get(ref)
        below += b
        ge += g
    from distill.embed import embeddings_complete

    n = int(embeddings_complete(embeddings_uri)["n_items"])
    return RankCounts(below=below, at_or_above=ge, n_items=n)
