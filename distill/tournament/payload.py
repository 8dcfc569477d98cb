"""The candidates' payload: the catalog columns a judge reads, staged once per run and read by id.

Why not ``ray.put`` the catalog: at millions of images it does not fit one object store, and
every judge actor would fetch all of it. Instead, when the run starts, one Ray task per catalog
Parquet part copies the rows of the run's candidates, with only the columns the judge declares
(``payload_columns``: ``title`` for the text oracle, ``image`` for a VLM, none for the no-op
judge), into ``<run>/payload/`` in small row groups. The block tasks (``blocks.py``) then read
exactly the rows of the candidates in each batch and send them with the batch: a judge actor
holds only its batches, and the text oracle never reads an image.
"""

from __future__ import annotations

import functools
import heapq
import os
from dataclasses import dataclass
from typing import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from distill import storage

ROW_GROUP_ROWS = 64  # at most, per payload row group: a batch reads ~one row group per candidate
ROW_GROUP_BYTES = 4 << 20  # and at most about this much (a few 1 MB photos, or 64 small JPEGs)


@dataclass(frozen=True)
class CatalogSource:
    """Catalog Parquet parts on any pyarrow filesystem (a directory or one file), optionally one split."""

    uri: str
    split: str | None = None

    def parts(self) -> list[str]:
        fs, path = storage.resolve(self.uri)
        if fs.get_file_info(path).type == pafs.FileType.File:
            return [self.uri]
        return storage.list_files(self.uri, ".parquet")

    def filter(self, ids: pa.Array | None = None) -> pc.Expression | None:
        expr = None if self.split is None else pc.field("split") == self.split
        if ids is not None:
            in_ids = pc.field("item_id").isin(ids)
            expr = in_ids if expr is None else expr & in_ids
        return expr


def _dataset(uri: str) -> pads.Dataset:
    fs, path = storage.resolve(uri)
    return pads.dataset(path, filesystem=fs, format="parquet")


def read_part(uri: str, columns: list[str], filt: pc.Expression | None) -> pa.Table:
    """Some columns of one catalog part (the ``split`` column is read only to filter)."""
    return _dataset(uri).to_table(columns=columns, filter=filt)


# --- candidate sampling -----------------------------------------------------------------------

def _hashes(ids: pa.Array, seed: int) -> np.ndarray:
    """A stable 64-bit key per id: the seeded sample is the ids with the smallest keys, so it does
    not depend on how the catalog is split into parts, and adding items moves few choices."""
    import hashlib

    prefix = f"{seed}\x1f".encode()
    return np.fromiter((int.from_bytes(hashlib.blake2b(prefix + i.encode(), digest_size=8).digest(), "little")
                        for i in ids.to_pylist()), dtype=np.uint64, count=len(ids))


def _sample_part(uri: str, split: str | None, m: int | None, seed: int) -> tuple[str, np.ndarray, list[str]]:
    ids = read_part(uri, ["item_id"], CatalogSource(uri, split).filter())["item_id"].combine_chunks()
    if m is None:
        return uri, np.zeros(len(ids), np.uint64), ids.to_pylist()
    h = _hashes(ids, seed)
    if len(h) > m:
        keep = np.argpartition(h, m)[:m]
        h, ids = h[keep], ids.take(pa.array(keep))
    return uri, h, ids.to_pylist()


def sample_ids(source: CatalogSource, m: int | None, seed: int) -> list[str]:
    """At most ``m`` item ids of ``source`` (all when ``m`` is None), one Ray task per part.

    The sample is the ``m`` ids with the smallest seeded hash, merged as the parts answer, so the
    driver holds O(m) ids, never the catalog. With ``m`` None every id is returned, in part order.
    """
    from distill.ray_utils import fan_out

    parts = source.parts()
    if not parts:
        raise FileNotFoundError(f"no catalog parts under {source.uri!r}")
    calls = [(p, source.split, m, seed) for p in parts]
    if m is None:  # every id, in part order
        by_part = {uri: ids for uri, _, ids in fan_out(_sample_part, calls)}
        return [i for p in parts for i in by_part[p]]
    best: list[tuple[int, str]] = []

    def merge(answer: tuple[str, np.ndarray, list[str]]) -> None:
        nonlocal best
        _, h, ids = answer
        best = heapq.nsmallest(m, best + list(zip(h.tolist(), ids)))

    fan_out(_sample_part, calls, on_result=merge)
    return [i for _, i in sorted(best)]


def read_items(source: CatalogSource | pa.Table, ids: list[str], columns: list[str]) -> pa.Table:
    """The rows of ``ids`` (``item_id`` + ``columns``), in the order of ``ids``; one Ray task per part."""
    wanted = pa.array(list(dict.fromkeys(ids)), pa.string())
    cols = ["item_id", *[c for c in columns if c != "item_id"]]
    if isinstance(source, pa.Table):
        table = source.select(cols).filter(pc.is_in(source["item_id"], wanted))
    else:
        from distill.ray_utils import fan_out

        parts = fan_out(read_part, [(p, cols, source.filter(wanted)) for p in source.parts()])
        table = pa.concat_tables(parts) if parts else pa.table({c: [] for c in cols})
    pos = pc.index_in(pa.array(ids, pa.string()), value_set=table["item_id"])
    if pos.null_count:
        missing = pa.array(ids, pa.string()).filter(pc.is_null(pos))[0].as_py()
        raise ValueError(f"{pos.null_count} candidate(s) not in the catalog, e.g. {missing!r}")
    return table.take(pos)


# --- staging the payload of a run --------------------------------------------------------------

def payload_dir(run_root: str) -> str:
    return storage.join(run_root, "payload")


def _write_payload(table: pa.Table, uri: str) -> int:
    import io

    table = table.sort_by("item_id")
    per_row = max(1, table.nbytes // max(1, table.num_rows))
    buf = io.BytesIO()
    pq.write_table(table, buf, row_group_size=int(max(1, min(ROW_GROUP_ROWS, ROW_GROUP_BYTES // per_row))),
                   compression="zstd")
    storage.write_bytes_atomic(buf.getvalue(), uri)
    return table.num_rows


def _stage_part(part: str, n: int, split: str | None, columns: list[str], universe: pa.Array, out: str) -> int:
    table = read_part(part, ["item_id", *columns], CatalogSource(part, split).filter(universe))
    if table.num_rows == 0:
        return 0
    return _write_payload(table, storage.join(out, f"part-{n:05d}.parquet"))


def stage_payload(run_root: str, source: CatalogSource | pa.Table, columns: list[str], universe: pa.Array) -> None:
    """Copy the ``columns`` of the candidates in ``universe`` into ``<run>/payload`` (once per run)."""
    out = payload_dir(run_root)
    manifest = storage.join(out, "manifest.json")
    if storage.exists(manifest) and storage.read_json(manifest).get("columns") == columns:
        return
    storage.delete(out)
    if isinstance(source, pa.Table):
        missing = [c for c in columns if c not in source.column_names]
        if missing:
            raise ValueError(f"the judge reads catalog column(s) {missing}; the payload has {source.column_names}")
        rows = _write_payload(source.select(["item_id", *columns])
                              .filter(pc.is_in(source["item_id"], universe)), storage.join(out, "part-00000.parquet"))
    else:
        import ray

        from distill.ray_utils import fan_out

        ref = ray.put(universe)  # the candidate ids, not the catalog
        # two in flight: each task holds one part's columns (images included) while it filters
        rows = sum(fan_out(_stage_part, [(p, n, source.split, columns, ref, out)
                                         for n, p in enumerate(source.parts())], max_in_flight=2))
    if rows != len(universe):
        raise ValueError(f"{len(universe) - rows} candidate(s) are not in the catalog (or appear twice in it)")
    storage.write_json_atomic({"columns": columns, "rows": rows}, manifest)


class PayloadReader:
    """Reads the payload rows of given ids from ``<run>/payload`` (one per process, cached)."""

    def __init__(self, out: str):
        self.files = storage.list_files(out, ".parquet")
        self.where: dict[str, tuple[int, int]] = {}
        self.starts: list[np.ndarray] = []
        for f, uri in enumerate(self.files):
            fs, path = storage.resolve(uri)
            with fs.open_input_file(path) as fh:
                pf = pq.ParquetFile(fh)
                ids = pf.read(columns=["item_id"])["item_id"].to_pylist()
                sizes = [pf.metadata.row_group(g).num_rows for g in range(pf.num_row_groups)]
            self.starts.append(np.concatenate([[0], np.cumsum(sizes)]))
            self.where.update((i, (f, row)) for row, i in enumerate(ids))

    def take(self, ids: Iterable[str], columns: list[str]) -> pa.Table:
        """``item_id`` + ``columns`` for the distinct ``ids``, reading only their row groups."""
        unique = list(dict.fromkeys(ids))
        by_file: dict[int, list[tuple[int, int]]] = {}
        for n, i in enumerate(unique):
            try:
                f, row = self.where[i]
            except KeyError:
                raise KeyError(f"candidate {i!r} is not in the run's payload") from None
            by_file.setdefault(f, []).append((n, row))
        pieces, order = [], []
        for f, wanted in by_file.items():
            rows = np.array([row for _, row in wanted])
            groups = np.unique(np.searchsorted(self.starts[f], rows, side="right") - 1)
            fs, path = storage.resolve(self.files[f])
            with fs.open_input_file(path) as fh:
                part = pq.ParquetFile(fh).read_row_groups(groups.tolist(), columns=["item_id", *columns])
            # rows of the groups read, in file order: map each wanted row to its offset in ``part``
            offsets = np.concatenate([np.arange(self.starts[f][g], self.starts[f][g + 1]) for g in groups])
            pieces.append(part.take(pa.array(np.searchsorted(offsets, rows))))
            order += [n for n, _ in wanted]
        table = pa.concat_tables(pieces)
        return table.take(pa.array(np.argsort(order)))


@functools.lru_cache(maxsize=4)
def _reader(out: str, stamp: float) -> PayloadReader:
    return PayloadReader(out)


def reader(run_root: str) -> PayloadReader:
    """This process's reader of a run's payload (rebuilt if the payload was restaged)."""
    out = payload_dir(run_root)
    fs, path = storage.resolve(storage.join(out, "manifest.json"))
    info = fs.get_file_info(path)
    return _reader(out, info.mtime.timestamp() if info.mtime else os.getpid())
