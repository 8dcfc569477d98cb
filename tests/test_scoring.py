"""Chunked Ray tasks over embedding files answer what a dense persona x catalog matrix would:
PAD's bin draws and the winners' percentile / rank counts, whatever the file split."""

from __future__ import annotations

import numpy as np
import pytest

from distill import storage
from distill.embed import SUCCESS, embeddings_table
from distill.metrics import dense_counts
from distill.sampling import SamplerConfig, bin_of


def _write(root, ids, vecs, n_files: int) -> str:
    """An embeddings directory of ``n_files`` parts plus its _SUCCESS record, as the pipeline writes."""
    uri = str(root)
    for f, part in enumerate(np.array_split(np.arange(len(ids)), n_files)):
        storage.write_table_atomic(embeddings_table([ids[i] for i in part], vecs[part]),
                                   storage.join(uri, f"part-{f:03d}.parquet"))
    storage.write_json_atomic({"n_items": len(ids)}, storage.join(uri, SUCCESS))
    return uri


def _data(n=900, d=8, p=6, seed=0):
    rng = np.random.default_rng(seed)
    vecs = rng.standard_normal((n, d)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    q = rng.standard_normal((p, d)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    return [f"item-{i:04d}" for i in range(n)], vecs, q


@pytest.mark.slow
def test_sampling_and_counts_match_the_dense_matrix(ray_local, tmp_path):
    from distill.scoring import rank_counts, sample_matches

    ids, vecs, q = _data()
    dense = q @ vecs.T
    one = _write(tmp_path / "one", ids, vecs, 1)
    three = _write(tmp_path / "three", ids, vecs, 3)
    pos = {i: n for n, i in enumerate(ids)}

    # PAD's draws: k distinct items, one from each lower bin and two from the top, the same
    # whichever way the catalog is split into files (keys hash item ids, not positions)
    seeds = list(range(100, 100 + len(q)))
    cfg = SamplerConfig()
    a = sample_matches(three, q, seeds, cfg, rows=128)
    b = sample_matches(one, q, seeds, cfg, rows=1000)
    assert a.candidates == b.candidates and a.n_items == len(ids)
    np.testing.assert_allclose(a.lo, dense.min(axis=1), atol=1e-5)
    np.testing.assert_allclose(a.hi, dense.max(axis=1), atol=1e-5)
    for p, cands in enumerate(a.candidates):
        assert len(set(cands)) == cfg.k
        bins = bin_of(dense[p])
        assert sorted(int(bins[pos[c]]) for c in cands) == [0, 1, 2, 3, 3]
    other = sample_matches(three, q, [s + 1 for s in seeds], cfg, rows=128)
    assert other.candidates != a.candidates  # another seed, other draws

    # a thin top bin gives what it has and its neighbours fill in (as distill.sampling does)
    narrow = SamplerConfig(edges=[0, 0.5, 0.999, 1], draws=[1, 1, 3])
    for cands in sample_matches(three, q, seeds, narrow, rows=128).candidates:
        assert len(set(cands)) == 5

    # the winners' counts equal the dense matrix's, with ties against the target
    rng = np.random.default_rng(3)
    targets = [rng.integers(0, len(ids), len(q)), rng.integers(0, len(ids), len(q))]
    counts = rank_counts(three, q, [[ids[t] for t in ts] for ts in targets], rows=100)
    assert counts.n_items == len(ids)
    for t, ts in enumerate(targets):
        below, ge = dense_counts(dense, ts)
        np.testing.assert_array_equal(counts.below[t], below)
        np.testing.assert_array_equal(counts.at_or_above[t], ge)
