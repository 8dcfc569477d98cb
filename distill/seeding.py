"""Stable seeds derived from names, so every random choice is reproducible and independent of
scheduling: the same match gets the same shuffle and the same judge noise on any actor, in any
batch, in any rerun."""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa


def seed_for(*parts: object) -> int:
    """A 63-bit seed from any printable parts (stable across processes, unlike ``hash``)."""
    digest = hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def rng_for(*parts: object) -> np.random.Generator:
    return np.random.default_rng(seed_for(*parts))


def sample_indices(n: int, m: int | None, rng: np.random.Generator) -> np.ndarray:
    """At most ``m`` of ``range(n)``, drawn without replacement by ``rng`` and sorted (so the rows
    keep their file order: Parquet reads stay sequential, ids stay comparable across runs);
    all of them when ``m`` is None/0 or not smaller than ``n`` (then ``rng`` is left untouched)."""
    if not m or m >= n:
        return np.arange(n)
    return np.sort(rng.choice(n, m, replace=False))


def sample_rows(table: pa.Table, m: int | None, rng: np.random.Generator) -> pa.Table:
    """``table`` cut to a seeded, order-keeping subsample of at most ``m`` rows (see sample_indices);
    the table itself, not a copy, when nothing is cut."""
    pick = sample_indices(table.num_rows, m, rng)
    return table if len(pick) == table.num_rows else table.take(pick)
