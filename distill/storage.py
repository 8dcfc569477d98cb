"""Reading and writing through pyarrow filesystems, with all-or-nothing commits.

Every output of the product lives under a URI: a local path, ``s3://bucket/prefix`` or
``gs://bucket/prefix``. Object stores have no rename, so atomicity comes from two rules:
(1) a single object appears whole or not at all (PUT semantics; locally we write a temp file
and ``os.replace`` it), and (2) readers trust only what a manifest written *last* lists.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import posixpath
import uuid
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq


def resolve(uri: str) -> tuple[pafs.FileSystem, str]:
    """Filesystem and path for ``uri``; bare paths are local and made absolute."""
    if "://" not in uri:
        return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(uri))
    return pafs.FileSystem.from_uri(uri)


def join(uri: str, *parts: str) -> str:
    """Join URI parts with '/' (never os.sep: URIs are not local paths)."""
    if "://" in uri:
        return posixpath.join(uri, *parts)
    return os.path.join(uri, *parts)


def _is_local(fs: pafs.FileSystem) -> bool:
    return isinstance(fs, pafs.LocalFileSystem)


def exists(uri: str) -> bool:
    fs, path = resolve(uri)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def makedirs(uri: str) -> None:
    fs, path = resolve(uri)
    fs.create_dir(path, recursive=True)


@contextlib.contextmanager
def build_lock(uri: str) -> Iterator[None]:
    """Hold an exclusive lock named after ``uri`` while building what it names, when it is local.

    Why: two processes on one machine (two jobs, or two test workers) asking for the same cached
    demo world would otherwise both build it, and one's clearing of a partial build would pull
    files from under the other's reads. Locally an ``flock`` on ``<uri>.lock`` serialises them;
    the second finds the first's manifest and builds nothing. An object store has no such lock,
    and needs none for correctness: builds write the manifest last and readers trust only it.
    """
    fs, path = resolve(uri)
    if not _is_local(fs):
        yield
        return
    import fcntl

    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path + ".lock", "a") as handle:  # closing the file releases the lock
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def write_bytes_atomic(data: bytes, uri: str) -> None:
    """Write ``data`` so readers see the old object or the new one, never a torn one."""
    fs, path = resolve(uri)
    parent = posixpath.dirname(path) if not _is_local(fs) else os.path.dirname(path)
    if parent:
        fs.create_dir(parent, recursive=True)
    if _is_local(fs):
        # Hidden (leading '.') so a temp left by a killed process is skipped by read_table's
        # ignore_prefixes as well as list_files; removed on any error we live through.
        tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.tmp-{uuid.uuid4().hex}")
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise
    else:
        with fs.open_output_stream(path) as out:
            out.write(data)


def read_bytes(uri: str) -> bytes:
    fs, path = resolve(uri)
    with fs.open_input_stream(path) as f:
        return f.read()


def write_json_atomic(obj: Any, uri: str) -> None:
    write_bytes_atomic(json.dumps(obj, indent=2, sort_keys=True, default=str).encode(), uri)


def read_json(uri: str) -> Any:
    return json.loads(read_bytes(uri))


def write_table_atomic(table: pa.Table, uri: str, schema: pa.Schema | None = None) -> None:
    """Write one Parquet file atomically, cast to ``schema`` when given (explicit schemas only)."""
    if schema is not None:
        table = table.select(schema.names).cast(schema)
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    write_bytes_atomic(buf.getvalue(), uri)


def read_table(uri: str, columns: list[str] | None = None, schema: pa.Schema | None = None,
               filter: Any = None) -> pa.Table:
    """Read a Parquet file or a directory of Parquet files (hidden/temp files ignored)."""
    import pyarrow.dataset as ds

    fs, path = resolve(uri)
    dataset = ds.dataset(path, filesystem=fs, format="parquet", schema=schema,
                         exclude_invalid_files=False,
                         ignore_prefixes=[".", "_"])
    table = dataset.to_table(columns=columns, filter=filter)
    return table


def list_files(uri: str, suffix: str = "") -> list[str]:
    """URIs of the files directly under ``uri`` ending in ``suffix`` (sorted; temp files skipped)."""
    fs, path = resolve(uri)
    if fs.get_file_info(path).type == pafs.FileType.NotFound:
        return []
    infos = fs.get_file_info(pafs.FileSelector(path, recursive=False))
    names = sorted(
        i.base_name for i in infos
        if i.type == pafs.FileType.File and i.base_name.endswith(suffix) and ".tmp-" not in i.base_name
    )
    return [join(uri, n) for n in names]


def delete(uri: str) -> None:
    """Delete a file or a directory tree; missing is fine."""
    fs, path = resolve(uri)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.Directory:
        fs.delete_dir(path)
    elif info.type == pafs.FileType.File:
        fs.delete_file(path)
