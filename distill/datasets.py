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
from distill.schemas import CATALOG_SCHEMA, PERSONA_SCHEMA, SPLITS


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
        raise FileNotFoundError(f"no catalog under {root!r} (expected {catalog_dir(root)!r})")
    filt = pc.field("split") == split if split else None
    table = storage.read_table(catalog_dir(root), columns=columns, schema=CATALOG_SCHEMA, filter=filt)
    return table


def read_personas(root: str, split: str | None = None) -> pa.Table:
    _check_split(split)
    if not storage.exists(personas_path(root)):
        raise FileNotFoundError(f"no personas under {root!r} (expected {personas_path(root)!r})")
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
