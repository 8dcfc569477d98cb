"""Stable seeds derived from names, so every random choice is reproducible and independent of
scheduling: the same match gets the same shuffle and the same judge noise on any actor, in any
batch, in any rerun."""

from __future__ import annotations

import hashlib

import numpy as np


def seed_for(*parts: object) -> int:
    """A 63-bit seed from any printable parts (stable across processes, unlike ``hash``)."""
    digest = hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def rng_for(*parts: object) -> np.random.Generator:
    return np.random.default_rng(seed_for(*parts))
