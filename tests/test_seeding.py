"""Seeded choices: stable across processes, and subsamples that keep file order."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pyarrow as pa

from distill.seeding import rng_for, sample_indices, sample_rows, seed_for


def test_seed_for_is_stable_across_processes_and_separates_parts():
    here = seed_for("cycle", 3)
    there = subprocess.run([sys.executable, "-c", "from distill.seeding import seed_for; print(seed_for('cycle', 3))"],
                           capture_output=True, text=True, check=True).stdout.strip()
    assert int(there) == here
    assert here != seed_for("cycle", 4) and here != seed_for("cycle3")  # parts are kept apart
    assert 0 <= here < 2**63


def test_sample_indices_sorted_unique_seeded_and_all_when_small():
    a = sample_indices(1000, 50, rng_for("x"))
    assert len(a) == 50 and len(set(a.tolist())) == 50 and np.all(np.diff(a) > 0) and a.max() < 1000
    np.testing.assert_array_equal(a, sample_indices(1000, 50, rng_for("x")))
    assert not np.array_equal(a, sample_indices(1000, 50, rng_for("y")))
    for m in (None, 0, 1000, 5000):
        rng = rng_for("x")
        np.testing.assert_array_equal(sample_indices(1000, m, rng), np.arange(1000))
        assert rng.integers(1 << 30) == rng_for("x").integers(1 << 30)  # no draw was spent


def test_sample_rows_keeps_rows_in_file_order():
    table = pa.table({"id": list(range(100)), "v": [f"r{i}" for i in range(100)]})
    cut = sample_rows(table, 10, rng_for("rows"))
    ids = cut["id"].to_pylist()
    assert len(ids) == 10 and ids == sorted(ids)
    assert cut["v"].to_pylist() == [f"r{i}" for i in ids]
    assert sample_rows(table, None, rng_for("rows")) is table
