"""The on-disk layout of a dataset root: the catalog and persona tables any stage reads.

A dataset root (demo world or a user's ingested data) is a URI holding::

    catalog/<split>-<part>.parquet   CATALOG_SCHEMA, any number of parts
    personas.parquet                 PERSONA_SCHEMA
    manifest.json                    what built it; written last, so its presence means complete
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from distill import storage
from distill.errors import DataError, MissingInputError
from distill.schemas import CATALOG_SCHEMA, PERSONA_SCHEMA, SPLITS

# How to get missing splits, said once for every stage that needs one.
SPLIT_FIX = ("re-run jobs/ingest.py with no split column (rows without a split get a seeded "
             "train/val/test split; split_fractions sets the shares) or give those rows split values")


def catalog_dir(root: str) -> str:
    return storage.join(root, "catalog")


def personas_path(root: str) -> str:
    return storage.join(root, "personas.parquet")


def manifest_path(root: str) -> str:
    return storage.join(root, "manifest.json")


def _check_split(split: str | None) -> None:
    if split is not None and split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")


def read_catalog(root: str, split: str | None = None, columns: list[str] | None = None) -> pa.Table:
    """The catalog (optionally one split, optionally some columns), in a stable item order."""
    _check_split(split)
    if not storage.exists(catalog_dir(root)):
        raise MissingInputError(f"no catalog under {root!r} (expected {catalog_dir(root)!r})")
    filt = pc.field("split") == split if split else None
    table = storage.read_table(catalog_dir(root), columns=columns, schema=CATALOG_SCHEMA, filter=filt)
    return table


def read_personas(root: str, split: str | None = None) -> pa.Table:
    _check_split(split)
    if not storage.exists(personas_path(root)):
        raise MissingInputError(f"no personas under {root!r} (expected {personas_path(root)!r})")
    table = storage.read_table(personas_path(root), schema=PERSONA_SCHEMA)
    if split:
        table = table.filter(pc.field("split") == split)
    return table


def write_catalog_part(table: pa.Table, root: str, name: str) -> str:
    """Write one catalog part atomically; ``name`` like ``test-00003``."""
    uri = storage.join(catalog_dir(root), f"{name}.parquet")
    storage.write_table_atomic(table, uri, CATALOG_SCHEMA)
    return uri


def write_personas(table: pa.Table, root: str) -> str:
    uri = personas_path(root)
    storage.write_table_atomic(table, uri, PERSONA_SCHEMA)
    return uri


def require_root(root: str, setting: str = "root") -> None:
    """A complete dataset root (its manifest is written last), or a one-line user error."""
    if not storage.exists(manifest_path(root)):
        what = "does not exist" if not storage.exists(root) else "is not a complete dataset root (no manifest.json)"
        raise MissingInputError(f"{setting}={root!r} {what}; run jobs/ingest.py (or jobs/world.py) first")


def split_counts(root: str, table: str) -> dict[str, int]:
    """Rows per split of ``catalog`` or ``personas``, counted by a streaming scan of the ``split``
    column (Parquet statistics where they suffice): no rows are materialised in the driver."""
    import pyarrow.dataset as ds

    uri = catalog_dir(root) if table == "catalog" else personas_path(root)
    if not storage.exists(uri):
        return {}
    fs, path = storage.resolve(uri)
    schema = CATALOG_SCHEMA if table == "catalog" else PERSONA_SCHEMA
    dataset = ds.dataset(path, filesystem=fs, format="parquet", schema=schema, ignore_prefixes=[".", "_"])
    return {s: n for s in SPLITS if (n := dataset.count_rows(filter=pc.field("split") == s))}


def require_splits(root: str, stage: str, catalog: tuple[str, ...] = (), personas: tuple[str, ...] = (),
                   setting: str = "root") -> None:
    """Before a stage does any work: the splits it reads must hold rows, else one line saying which
    split is empty and how to fix it. ``"all"`` asks for a non-empty table whatever the splits."""
    require_root(root, setting)
    problems, have = [], []
    for table, wanted in (("catalog", catalog), ("personas", personas)):
        if not wanted:
            continue
        counts = split_counts(root, table)
        have.append(f"{table}: " + (", ".join(f"{s} {n}" for s, n in counts.items()) or "none"))
        empty = [s for s in wanted if (not counts if s == "all" else not counts.get(s))]
        if empty:
            noun = "catalog items" if table == "catalog" else "personas"
            problems.append(f"no {noun}" + ("" if empty == ["all"] else f" in split(s) {', '.join(map(repr, empty))}"))
    if problems:
        raise DataError(f"{setting}={root!r} has {' and '.join(problems)} ({'; '.join(have)}), which {stage} "
                        f"needs; {SPLIT_FIX}")


def resolve_root(root: str | None, world, stage: str, catalog: tuple[str, ...] = (), personas: tuple[str, ...] = (),
                 setting: str = "root") -> tuple[str, bool]:
    """The one answer to "a dataset root, or the demo world": ``(root, is_demo)``.

    A user's root must hold the splits ``stage`` reads (checked before any work, one line naming
    ``setting`` when not); with no root the demo world of ``world`` (a ``WorldConfig``) is built on
    first use and reused after, and it always holds every split."""
    if root:
        require_splits(root, stage, catalog=catalog, personas=personas, setting=setting)
        return root, False
    from distill.world import ensure_world  # the world package builds on this module

    return ensure_world(world), True


def _scan_catalog(root: str, columns: list[str], filt=None, batch_rows: int = 65_536):
    """Record batches of the catalog parts in file order (a streaming scan: no split is held whole)."""
    import pyarrow.dataset as pads

    if not storage.exists(catalog_dir(root)):
        raise FileNotFoundError(f"no catalog under {root!r} (expected {catalog_dir(root)!r})")
    fs, path = storage.resolve(catalog_dir(root))
    dataset = pads.dataset(path, filesystem=fs, format="parquet", schema=CATALOG_SCHEMA,
                           ignore_prefixes=[".", "_"])
    yield from dataset.to_batches(columns=columns, filter=filt, batch_size=batch_rows)


def sample_catalog_ids(root: str, split: str | None, m: int | None, rng) -> list[str] | None:
    """The ids ``seeding.sample_rows(read_catalog(root, split), m, rng)`` would keep, found by two
    streaming scans of the ``item_id`` column (a count, then the picked positions), so the driver
    holds ``m`` ids, never the split. None when nothing is cut (``m`` empty or >= the split)."""
    from distill.seeding import sample_indices

    _check_split(split)
    filt = pc.field("split") == split if split else None
    n = sum(b.num_rows for b in _scan_catalog(root, ["item_id"], filt))
    pick = sample_indices(n, m, rng)
    if len(pick) == n:
        return None
    out: list[str] = []
    start, j = 0, 0
    for batch in _scan_catalog(root, ["item_id"], filt):
        end = start + batch.num_rows
        hi = j
        while hi < len(pick) and pick[hi] < end:
            hi += 1
        if hi > j:
            out.extend(batch.column(0).take(pa.array(pick[j:hi] - start)).to_pylist())
        start, j = end, hi
    return out


def read_catalog_items(root: str, item_ids, columns: list[str]) -> pa.Table:
    """The catalog rows of ``item_ids`` (only ``columns``), in the order of ``item_ids``: a filtered
    streaming scan, so a stage can fetch the images of the candidates it judges or trains on."""
    wanted = sorted(set(item_ids))
    cols = list(dict.fromkeys(["item_id", *columns]))
    filt = pc.field("item_id").isin(pa.array(wanted, pa.string()))
    batches = list(_scan_catalog(root, cols, filt))
    table = pa.Table.from_batches(batches, schema=pa.schema([CATALOG_SCHEMA.field(c) for c in cols]))
    pos = {i: n for n, i in enumerate(table.column("item_id").to_pylist())}
    missing = [i for i in wanted if i not in pos]
    if missing:
        raise KeyError(f"{len(missing)} item id(s) not in the catalog under {root!r}, e.g. {missing[:3]}")
    return table.take(pa.array([pos[i] for i in item_ids], pa.int64())).select(columns)
