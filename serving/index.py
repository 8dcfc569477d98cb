"""Sharded FAISS index: build from an embeddings table, commit atomically, load, verify, search.

Layout of an index root (any pyarrow filesystem URI)::

    <root>/CURRENT                                  the live version's name, written last
    <root>/versions/<version>/shard-00000.faiss     one FAISS index per shard (serialised)
    <root>/versions/<version>/shard-00000.items.parquet   item_id, title, image_uri (row = FAISS label)
    <root>/versions/<version>/manifest.json         IndexManifest, written after every shard file

A version directory is complete exactly when its ``manifest.json`` exists, and ``CURRENT``
moves only after that, so a reader that resolves ``CURRENT`` sees the old index or the new one,
never half of one. Files are checked against the manifest's SHA-256 on load.

Metric: inner product on L2-normalised vectors (= cosine). Items are assigned to shards by a
stable hash of their id (so ``GET /v1/items/{id}`` knows which shard to ask); every shard is
searched for the full k and the per-shard top-k lists are merged, which is exact: the global
top-k is a subset of the union of the per-shard top-ks.
"""

from __future__ import annotations

import hashlib
import io
import time
import uuid
import zlib
from datetime import datetime, timezone
from typing import Iterable, Literal, Protocol, Sequence, runtime_checkable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field, field_validator

from distill import storage
from distill.embed import EMBEDDING_SCHEMA, embeddings_table  # noqa: F401  (re-exported: the index's input)
from distill.embed import vectors_of as _vectors_of
from distill.seeding import sample_indices

INDEX_FORMAT_VERSION = 1

ATTRIBUTES_TYPE = pa.map_(pa.string(), pa.string())
SHARD_ITEMS_SCHEMA = pa.schema(
    [
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("title", pa.string(), nullable=True),
        pa.field("image_uri", pa.string(), nullable=True),
        pa.field("attributes", ATTRIBUTES_TYPE, nullable=True),  # for filtered search
    ],
    metadata={"persona_distill.table": "index_items", "persona_distill.version": "1"},
)


class IndexRefusedError(ValueError):
    """An index that must not be served: bad checksum, wrong encoder, missing or incomplete files."""


# --------------------------------------------------------------------------------------------
# the encoder as the index sees it


@runtime_checkable
class EncoderInfo(Protocol):
    """What an index needs to know about the model whose vectors it holds (the student)."""

    @property
    def dim(self) -> int: ...

    @property
    def checkpoint_id(self) -> str: ...

    @property
    def checkpoint_hash(self) -> str: ...


@runtime_checkable
class TextEncoder(EncoderInfo, Protocol):
    def encode_texts(self, texts: list[str]) -> np.ndarray: ...


@runtime_checkable
class ImageEncoder(EncoderInfo, Protocol):
    def encode_images(self, images: list[bytes]) -> np.ndarray: ...


# --------------------------------------------------------------------------------------------
# config and manifest


#: Ray's predefined resources: requested through num_cpus / num_gpus / memory, never by name in ``resources``.
RESERVED_RESOURCES = frozenset({"CPU", "GPU", "memory", "object_store_memory"})


class IndexBuildConfig(BaseModel):
    """How to turn an embeddings table into shards."""

    model_config = ConfigDict(extra="forbid")

    factory: str = Field("Flat", min_length=1, description="FAISS index_factory string: 'Flat' for small "
                         "catalogs, e.g. 'IVF1024,Flat', 'IVF4096,PQ48x8,RFlat' or 'HNSW32' for large ones")
    n_shards: int = Field(1, ge=1, le=1024, description="number of shards (one Serve deployment each)")
    train_sample: int = Field(100_000, ge=1, description="vectors sampled (over all shards) to train the "
                              "coarse quantizer / PQ codebooks once; every shard clones the trained index")
    add_batch: int = Field(65_536, ge=1, description="vectors added per FAISS add() call (progress granularity)")
    search_params: str = Field("", description="default FAISS ParameterSpace string applied at load, "
                               "e.g. 'nprobe=32' or 'efSearch=128'; serving may override it")
    seed: int = Field(0, description="seed of the training sample")
    version: str | None = Field(None, pattern=r"^[A-Za-z0-9_.-]+$",
                                description="version directory name; default a UTC timestamp + random suffix")
    make_current: bool = Field(True, description="move CURRENT to the new version once it is complete")
    num_gpus: float = Field(0.0, ge=0, description=(
        "GPUs per build task (training and each shard's add); with GPUs and a GPU build of faiss the "
        "index trains and adds on them (index_cpu_to_all_gpus), else on CPU"))
    resources: dict[str, float] = Field(default_factory=dict, description=(
        "extra Ray resources each build task also requests; on the cluster `{faiss_gpu: 1}` sends the GPU "
        "build tasks to the gpu-index group, whose image has faiss-gpu (custom resources only: GPUs are "
        "num_gpus)"))
    read_rows: int = Field(65_536, ge=1, description="embedding rows a shard task reads at a time (bounds its memory)")

    @field_validator("resources")
    @classmethod
    def _custom_resources_only(cls, value: dict[str, float]) -> dict[str, float]:
        reserved = sorted(k for k in value if k in RESERVED_RESOURCES)
        if reserved:
            raise ValueError(f"{', '.join(map(repr, reserved))}: Ray's own resources, not custom ones (GPUs per "
                             "task: num_gpus; every build task takes 1 CPU); name only custom resources here, "
                             "e.g. {faiss_gpu: 1}")
        bad = sorted(k for k, v in value.items() if not v > 0)
        if bad:
            raise ValueError(f"resources {', '.join(map(repr, bad))}: a request must be > 0 (leave it out instead)")
        return value


class ShardInfo(BaseModel):
    shard: int
    n_items: int
    index_file: str = Field(description="file name inside the version directory")
    index_sha256: str
    items_file: str
    items_sha256: str
    index_bytes: int | None = Field(None, description="size of the serialised FAISS shard")
    memory_bytes: int | None = Field(None, description=(
        "memory a process needs to load and serve this shard (serialised blob + deserialised index + "
        "item table): what a Serve shard replica should request"))
    build_seconds: float | None = None
    build_peak_rss_bytes: int | None = Field(None, description="peak RSS of the task that built this shard")


class IndexManifest(BaseModel):
    """``manifest.json`` of one index version; its presence means the version is complete."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["faiss-index"] = "faiss-index"
    format_version: int = INDEX_FORMAT_VERSION
    version: str
    created_at: str = Field(description="UTC ISO time the build finished")
    build_seconds: float
    factory: str
    metric: Literal["inner_product"] = "inner_product"
    normalized: bool = Field(True, description="vectors are L2-normalised (so inner product = cosine)")
    dim: int
    n_items: int
    n_shards: int
    shard_assignment: Literal["crc32(item_id) % n_shards"] = "crc32(item_id) % n_shards"
    search_params: str = ""
    train_sample: int = 0
    checkpoint_id: str = Field(description="id of the student checkpoint whose image tower made the vectors")
    checkpoint_hash: str = Field(description="content hash of that checkpoint (the query encoder must match)")
    checkpoint_uri: str | None = Field(None, description="where that checkpoint lives (the endpoint's default encoder)")
    dataset_root: str | None = Field(None, description="the catalog the items came from (images are read from it)")
    embeddings_uri: str | None = None
    shards: list[ShardInfo]


# --------------------------------------------------------------------------------------------
# small helpers


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def shard_of(item_id: str, n_shards: int) -> int:
    """Stable shard of an item (crc32 of its UTF-8 id): the same in every process and language."""
    return zlib.crc32(item_id.encode()) % n_shards


def shard_of_many(item_ids: Sequence[str], n_shards: int) -> np.ndarray:
    return np.fromiter((zlib.crc32(i.encode()) % n_shards for i in item_ids), dtype=np.int64,
                       count=len(item_ids))


def normalize(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return x / norms


def version_dir(root: str, version: str) -> str:
    return storage.join(root, "versions", version)


def current_path(root: str) -> str:
    return storage.join(root, "CURRENT")


def resolve_version(root: str, version: str | None = None) -> str:
    """``version`` itself, or the name held in ``<root>/CURRENT``."""
    if version and version != "CURRENT":
        return version
    uri = current_path(root)
    if not storage.exists(uri):
        raise IndexRefusedError(f"no index at {root!r}: {uri!r} does not exist (build one with jobs/index.py)")
    return storage.read_bytes(uri).decode().strip()


def read_manifest(root: str, version: str | None = None) -> IndexManifest:
    version = resolve_version(root, version)
    uri = storage.join(version_dir(root, version), "manifest.json")
    if not storage.exists(uri):
        raise IndexRefusedError(f"index version {version!r} under {root!r} is incomplete or missing (no manifest.json)")
    return IndexManifest.model_validate(storage.read_json(uri))


def check_encoder(manifest: IndexManifest, encoder: EncoderInfo) -> None:
    """Refuse a query encoder whose vectors would not be comparable with the index's."""
    problems = []
    if int(encoder.dim) != manifest.dim:
        problems.append(f"dimension: index has {manifest.dim}, encoder produces {encoder.dim}")
    if encoder.checkpoint_hash != manifest.checkpoint_hash:
        problems.append(f"checkpoint hash: index built with {manifest.checkpoint_id!r} "
                        f"({manifest.checkpoint_hash[:16]}...), encoder is {encoder.checkpoint_id!r} "
                        f"({str(encoder.checkpoint_hash)[:16]}...)")
    if problems:
        raise IndexRefusedError(
            f"index version {manifest.version!r} does not match the query encoder: " + "; ".join(problems)
            + ". Rebuild the index with this student (jobs/index.py) or serve the student it was built with.")


def _progress(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="vec", disable=not enabled, leave=False)


# --------------------------------------------------------------------------------------------
# build


def _faiss():
    import faiss

    return faiss


def gpu_count() -> int:
    """GPUs this process's faiss can use: 0 for a CPU build of faiss or a process given no GPU."""
    faiss = _faiss()
    if not hasattr(faiss, "index_cpu_to_all_gpus") or not hasattr(faiss, "get_num_gpus"):
        return 0
    try:
        return int(faiss.get_num_gpus())
    except Exception:  # a GPU build without a usable driver
        return 0


def _on_gpus(index, fn):
    """Run ``fn(index)`` on every GPU of the process when there are some (training and adding are
    what GPUs speed up), and hand back a CPU index; on CPU, or for an index type faiss cannot move
    (e.g. HNSW), ``fn`` runs on the CPU index as it is."""
    faiss = _faiss()
    if gpu_count() > 0:
        try:
            gpu_index = faiss.index_cpu_to_all_gpus(index)
        except (RuntimeError, AttributeError):
            gpu_index = None
        if gpu_index is not None:
            fn(gpu_index)
            return faiss.index_gpu_to_cpu(gpu_index)
    fn(index)
    return index


def _train_template(factory: str, dim: int, sample: np.ndarray):
    """The empty index of ``factory``, trained once (coarse quantizer, PQ codebooks) on ``sample``."""
    faiss = _faiss()
    index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    if not index.is_trained:
        index = _on_gpus(index, lambda ix: ix.train(np.ascontiguousarray(sample, dtype=np.float32)))
    return index


def _needs_training(factory: str, dim: int) -> bool:
    faiss = _faiss()
    return not faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT).is_trained


def _peak_rss_bytes() -> int:
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def _fill_shard(template, batches: Iterable[tuple[pa.Array, np.ndarray, pa.Array, pa.Array, pa.Array]], shard: int,
                vdir: str, progress=None) -> ShardInfo:
    """Add every (ids, vectors, titles, uris, attributes) batch to a clone of the trained ``template`` (on the
    GPUs when the process has them) and write the shard's two files; holds the shard plus one batch."""
    faiss = _faiss()
    index = faiss.clone_index(template)
    ids, titles, uris, attrs = [], [], [], []
    seen: set[str] = set()

    def add_all(ix) -> None:
        for b_ids, vecs, b_titles, b_uris, b_attrs in batches:
            if len(b_ids) == 0:
                continue
            for i in b_ids.to_pylist():
                if i in seen:
                    raise ValueError(f"embeddings table has duplicate item ids (e.g. {i!r})")
                seen.add(i)
            ix.add(np.ascontiguousarray(normalize(vecs)))
            ids.append(b_ids)
            titles.append(b_titles)
            uris.append(b_uris)
            attrs.append(b_attrs)
            if progress is not None:
                progress.update(len(b_ids))

    index = _on_gpus(index, add_all)
    blob = faiss.serialize_index(index).tobytes()
    n = int(index.ntotal)
    del index
    items = pa.table({"item_id": pa.chunked_array(ids, pa.string()), "title": pa.chunked_array(titles, pa.string()),
                      "image_uri": pa.chunked_array(uris, pa.string()),
                      "attributes": pa.chunked_array(attrs, ATTRIBUTES_TYPE)}, schema=SHARD_ITEMS_SCHEMA)
    buf = io.BytesIO()
    pq.write_table(items, buf, compression="zstd")
    items_blob = buf.getvalue()
    index_file, items_file = f"shard-{shard:05d}.faiss", f"shard-{shard:05d}.items.parquet"
    storage.write_bytes_atomic(blob, storage.join(vdir, index_file))
    storage.write_bytes_atomic(items_blob, storage.join(vdir, items_file))
    return ShardInfo(shard=shard, n_items=n, index_file=index_file, index_sha256=sha256(blob),
                     items_file=items_file, items_sha256=sha256(items_blob), index_bytes=len(blob),
                     memory_bytes=2 * len(blob) + 2 * items.nbytes + 256 * n)


def _new_version(out_root: str, cfg: IndexBuildConfig) -> tuple[str, str]:
    version = cfg.version or (datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6])
    vdir = version_dir(out_root, version)
    if storage.exists(storage.join(vdir, "manifest.json")):
        raise ValueError(f"index version {version!r} already exists under {out_root!r}")
    return version, vdir


def _commit(out_root: str, version: str, vdir: str, cfg: IndexBuildConfig, started: float, dim: int, n: int,
            trained_on: int, shards: list[ShardInfo], **meta) -> IndexManifest:
    manifest = IndexManifest(
        version=version, created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        build_seconds=round(time.perf_counter() - started, 3), factory=cfg.factory, dim=dim, n_items=n,
        n_shards=cfg.n_shards, search_params=cfg.search_params, train_sample=trained_on, shards=shards, **meta)
    storage.write_json_atomic(manifest.model_dump(mode="json"), storage.join(vdir, "manifest.json"))
    if cfg.make_current:
        set_current(out_root, version)
    return manifest


def build_index(embeddings: pa.Table | str, out_root: str, checkpoint_id: str, checkpoint_hash: str,
                cfg: IndexBuildConfig | None = None, progress: bool = True, checkpoint_uri: str | None = None,
                dataset_root: str | None = None, embeddings_uri: str | None = None) -> IndexManifest:
    """Build ``cfg.n_shards`` FAISS shards in this process from a small embeddings table (or the
    Parquet at a URI): tests, benches, notebooks. Catalog-sized builds use :func:`build_index_parallel`
    (what ``jobs/index.py`` runs), which writes the same layout from parallel Ray tasks.

    Vectors are L2-normalised here whatever the input; the coarse quantizer (and PQ codebooks) is
    trained once on a sample of all vectors and cloned into every shard, so shards share cells.
    Writes the version directory (shards, then manifest) and finally ``CURRENT``.
    """
    cfg = cfg or IndexBuildConfig()
    started = time.perf_counter()
    embeddings_uri = embeddings if isinstance(embeddings, str) else embeddings_uri
    table = storage.read_table(embeddings) if isinstance(embeddings, str) else embeddings
    missing = {"item_id", "vector"} - set(table.column_names)
    if missing:
        raise ValueError(f"embeddings table lacks column(s) {sorted(missing)}")
    n = len(table)
    if n == 0:
        raise ValueError("cannot build an index from an empty embeddings table")
    vectors = normalize(_vectors_of(table))
    dim = vectors.shape[1]
    item_ids = table.column("item_id").combine_chunks()
    titles = table.column("title").combine_chunks() if "title" in table.column_names else pa.nulls(n, pa.string())
    uris = table.column("image_uri").combine_chunks() if "image_uri" in table.column_names \
        else pa.nulls(n, pa.string())
    attrs = table.column("attributes").combine_chunks() if "attributes" in table.column_names \
        else pa.nulls(n, ATTRIBUTES_TYPE)
    version, vdir = _new_version(out_root, cfg)
    trained_on = 0
    sample = vectors[:0]
    if _needs_training(cfg.factory, dim):
        pick = sample_indices(n, cfg.train_sample, np.random.default_rng(cfg.seed))
        sample, trained_on = (vectors if len(pick) == n else vectors[pick]), len(pick)
    template = _train_template(cfg.factory, dim, sample)
    assign = shard_of_many(item_ids.to_pylist(), cfg.n_shards)
    shards: list[ShardInfo] = []
    bar = _progress(n, f"index {cfg.factory} x{cfg.n_shards}", progress)
    for s in range(cfg.n_shards):
        rows = np.flatnonzero(assign == s)

        def batches(rows=rows):
            for lo in range(0, len(rows), cfg.add_batch):
                idx = pa.array(rows[lo:lo + cfg.add_batch])
                yield (item_ids.take(idx), vectors[rows[lo:lo + cfg.add_batch]], titles.take(idx), uris.take(idx),
                       attrs.take(idx))

        shards.append(_fill_shard(template, batches(), s, vdir, bar))
    bar.close()
    return _commit(out_root, version, vdir, cfg, started, dim, n, trained_on, shards, checkpoint_id=checkpoint_id,
                   checkpoint_hash=checkpoint_hash, embeddings_uri=embeddings_uri, checkpoint_uri=checkpoint_uri,
                   dataset_root=dataset_root)


# --------------------------------------------------------------------------------------------
# parallel build: one Ray task trains, one Ray task per shard fills


def _embedding_parts(uri: str) -> list[str]:
    if uri.endswith(".parquet"):
        return [uri]
    files = [f for f in storage.list_files(uri, ".parquet") if not f.rsplit("/", 1)[-1].startswith(("_", "."))]
    if not files:
        raise ValueError(f"no embeddings Parquet files under {uri!r}")
    return files


def _file_rows(uri: str) -> tuple[int, int]:
    """(rows, dim) of one embeddings file, from its footer and first row."""
    fs, path = storage.resolve(uri)
    with fs.open_input_file(path) as fh:
        pf = pq.ParquetFile(fh)
        n = pf.metadata.num_rows
        dim = len(next(pf.iter_batches(batch_size=1, columns=["vector"])).column(0)[0]) if n else 0
    return n, dim


def _iter_file(uri: str, rows: int, columns: list[str]):
    fs, path = storage.resolve(uri)
    names = set(pq.read_schema(fs.open_input_file(path)).names)
    with fs.open_input_file(path) as fh:
        yield from pq.ParquetFile(fh).iter_batches(batch_size=rows, columns=[c for c in columns if c in names])


def _sample_task(uri: str, picks: np.ndarray, rows: int) -> np.ndarray:
    """The vectors at row positions ``picks`` (sorted) of one file."""
    out, start = [], 0
    for batch in _iter_file(uri, rows, ["vector"]):
        end = start + batch.num_rows
        local = picks[(picks >= start) & (picks < end)] - start
        if len(local):
            out.append(_vectors_of(batch.take(pa.array(local))))
        start = end
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def _train_task(files: list[str], picks: list[np.ndarray], factory: str, dim: int, rows: int) -> tuple[bytes, dict]:
    """Gather the training sample (one bounded read per file) and train the template once."""
    t0 = time.perf_counter()
    parts = [_sample_task(f, p, rows) for f, p in zip(files, picks) if len(p)]
    sample = normalize(np.concatenate(parts)) if parts else np.zeros((0, dim), np.float32)
    template = _train_template(factory, dim, sample)
    blob = _faiss().serialize_index(template).tobytes()
    return blob, {"seconds": round(time.perf_counter() - t0, 3), "peak_rss_bytes": _peak_rss_bytes(),
                  "gpus": gpu_count(), "sample": len(sample)}


def _shard_task(shard: int, n_shards: int, files: list[str], template_blob: bytes, vdir: str, rows: int) -> dict:
    """Fill one shard from every embeddings file, reading ``rows`` at a time (its memory: the shard
    itself plus one slice). Runs in a fresh worker (``max_calls=1``), so its peak RSS is its own."""
    faiss = _faiss()
    t0 = time.perf_counter()
    template = faiss.deserialize_index(np.frombuffer(template_blob, dtype=np.uint8))

    def batches():
        for f in files:
            for batch in _iter_file(f, rows, ["item_id", "vector", "title", "image_uri", "attributes"]):
                ids = batch.column("item_id")
                mask = shard_of_many(ids.to_pylist(), n_shards) == shard
                if not mask.any():
                    continue
                pick = pa.array(np.flatnonzero(mask))
                n = int(mask.sum())
                col = lambda name, t=pa.string(): batch.column(name).take(pick) if name in batch.schema.names \
                    else pa.nulls(n, t)  # noqa: E731
                yield (ids.take(pick), _vectors_of(batch)[mask], col("title"), col("image_uri"),
                       col("attributes", ATTRIBUTES_TYPE))

    info = _fill_shard(template, batches(), shard, vdir)
    info.build_seconds = round(time.perf_counter() - t0, 3)
    info.build_peak_rss_bytes = _peak_rss_bytes()
    return info.model_dump()


def build_task_options(cfg: IndexBuildConfig) -> dict:
    """The ``ray.remote`` options of the training task and of every shard task: one CPU, a fresh
    worker per task (``max_calls=1``: its peak RSS is its own, and a GPU task frees its GPU memory),
    ``cfg.num_gpus`` GPUs when > 0, and ``cfg.resources`` when given (on the cluster ``faiss_gpu``,
    which only the pods of the faiss-gpu image offer)."""
    options: dict = {"num_cpus": 1, "max_calls": 1}
    if cfg.num_gpus > 0:
        options["num_gpus"] = cfg.num_gpus
    if cfg.resources:
        options["resources"] = dict(cfg.resources)
    return options


class IndexBuildReport(BaseModel):
    """What a parallel build did: the manifest, and the training task's time and memory."""

    manifest: IndexManifest
    train: dict
    seconds: float

    @property
    def max_shard_peak_rss_bytes(self) -> int:
        return max(s.build_peak_rss_bytes or 0 for s in self.manifest.shards)


def build_index_parallel(embeddings_uri: str, out_root: str, checkpoint_id: str, checkpoint_hash: str,
                         cfg: IndexBuildConfig | None = None, progress: bool = True,
                         checkpoint_uri: str | None = None, dataset_root: str | None = None) -> IndexBuildReport:
    """Build the sharded index from an embeddings directory with Ray tasks, never loading it whole.

    1. The driver counts rows from the Parquet footers and draws the training positions (seeded).
    2. One task reads just those rows and trains the coarse quantizer / PQ codebooks once; the
       trained, empty index goes to the object store (centroids only: small).
    3. One task per shard (in parallel, each a fresh worker) scans the embeddings in slices of
       ``cfg.read_rows``, keeps its rows (crc32(item_id) % n_shards) and adds them to a clone of
       the template, then writes its files. Its memory is its shard plus one slice.
    4. The driver writes the manifest (with each shard's bytes and memory need), then ``CURRENT``.
    With ``cfg.num_gpus`` > 0 the tasks get GPUs and train / add on them (``index_cpu_to_all_gpus``)
    when their process has a GPU build of faiss; ``cfg.resources`` sends them where that build is
    installed (``build_task_options``).
    """
    import ray

    from distill.ray_utils import init_ray

    cfg = cfg or IndexBuildConfig()
    started = time.perf_counter()
    init_ray()
    files = _embedding_parts(embeddings_uri)
    counts = [_file_rows(f) for f in files]
    n = sum(c for c, _ in counts)
    if n == 0:
        raise ValueError("cannot build an index from an empty embeddings table")
    dim = next(d for c, d in counts if c)
    version, vdir = _new_version(out_root, cfg)
    trained_on = 0
    picks = [np.zeros(0, np.int64) for _ in files]
    if _needs_training(cfg.factory, dim):
        pick = sample_indices(n, cfg.train_sample, np.random.default_rng(cfg.seed))
        trained_on = len(pick)
        offsets = np.cumsum([0] + [c for c, _ in counts])
        picks = [pick[(pick >= lo) & (pick < hi)] - lo for lo, hi in zip(offsets[:-1], offsets[1:])]
    options = build_task_options(cfg)
    blob, train = ray.get(ray.remote(**options)(_train_task).remote(files, picks, cfg.factory, dim, cfg.read_rows))
    template_ref = ray.put(blob)
    task = ray.remote(**options)(_shard_task)
    refs = [task.remote(s, cfg.n_shards, files, template_ref, vdir, cfg.read_rows) for s in range(cfg.n_shards)]
    shards: list[ShardInfo] = []
    bar = _progress(cfg.n_shards, f"index {cfg.factory} x{cfg.n_shards} (shards)", progress)
    for ref in refs:
        shards.append(ShardInfo(**ray.get(ref)))
        bar.update(1)
    bar.close()
    if sum(s.n_items for s in shards) != n:
        raise RuntimeError(f"shards hold {sum(s.n_items for s in shards)} of {n} vectors")
    manifest = _commit(out_root, version, vdir, cfg, started, dim, n, trained_on, shards,
                       checkpoint_id=checkpoint_id, checkpoint_hash=checkpoint_hash, embeddings_uri=embeddings_uri,
                       checkpoint_uri=checkpoint_uri, dataset_root=dataset_root)
    return IndexBuildReport(manifest=manifest, train=train, seconds=round(time.perf_counter() - started, 3))


def set_current(root: str, version: str) -> None:
    """Point ``CURRENT`` at a complete version (refuses an incomplete one)."""
    read_manifest(root, version)
    storage.write_bytes_atomic(version.encode() + b"\n", current_path(root))


# --------------------------------------------------------------------------------------------
# load and search


def merge_topk(parts: Iterable[tuple[np.ndarray, Sequence[Sequence[str]]]], k: int
               ) -> tuple[np.ndarray, list[list[str]]]:
    """Exact global top-k from per-shard top-k lists.

    ``parts``: per shard, (scores [nq, k_s], ids [nq][k_s]) sorted or not; padding (id None /
    score -inf, as FAISS returns when a shard has fewer than k items) is dropped. Ties on score
    are broken by item id, so the result does not depend on shard order.
    """
    parts = list(parts)
    if not parts:
        return np.zeros((0, k), np.float32), []
    nq = len(parts[0][1])
    out_scores = np.full((nq, k), -np.inf, dtype=np.float32)
    out_ids: list[list[str]] = []
    for q in range(nq):
        cand: list[tuple[float, str]] = []
        for scores, ids in parts:
            for sc, iid in zip(scores[q], ids[q]):
                if iid is not None and np.isfinite(sc):
                    cand.append((float(sc), iid))
        cand.sort(key=lambda t: (-t[0], t[1]))
        top = cand[:k]
        out_scores[q, :len(top)] = [t[0] for t in top]
        out_ids.append([t[1] for t in top])
    return out_scores, out_ids


class Shard:
    """One loaded, verified shard: a FAISS index plus its items table (row i = FAISS label i)."""

    def __init__(self, root: str, manifest: IndexManifest, shard: int, verify: bool = True,
                 search_params: str | None = None, omp_threads: int | None = None):
        faiss = _faiss()
        if not 0 <= shard < manifest.n_shards:
            raise IndexRefusedError(f"shard {shard} out of range for an index of {manifest.n_shards} shards")
        info = manifest.shards[shard]
        vdir = version_dir(root, manifest.version)
        blob = storage.read_bytes(storage.join(vdir, info.index_file))
        items_blob = storage.read_bytes(storage.join(vdir, info.items_file))
        if verify:
            for name, data, want in ((info.index_file, blob, info.index_sha256),
                                     (info.items_file, items_blob, info.items_sha256)):
                got = sha256(data)
                if got != want:
                    raise IndexRefusedError(f"checksum mismatch for {storage.join(vdir, name)!r}: manifest says "
                                      f"{want[:16]}..., file is {got[:16]}...; refusing to serve a corrupt shard")
        self.index = faiss.deserialize_index(np.frombuffer(blob, dtype=np.uint8))
        del blob
        items = pq.read_table(io.BytesIO(items_blob))
        if self.index.ntotal != len(items) or len(items) != info.n_items or self.index.d != manifest.dim:
            raise IndexRefusedError(f"shard {shard} of {manifest.version!r} is inconsistent with its manifest")
        self.item_ids = np.array(items.column("item_id").to_pylist(), dtype=object)
        self.titles = items.column("title").to_pylist()
        self.image_uris = items.column("image_uri").to_pylist()
        # attributes stay Arrow (a map column): filters run vectorised over it (serving.search)
        self.attributes = items.column("attributes").combine_chunks() if "attributes" in items.column_names \
            else None
        self._row = {iid: i for i, iid in enumerate(self.item_ids)}
        self.manifest, self.shard, self.version = manifest, shard, manifest.version
        params = manifest.search_params if search_params is None else search_params
        if params:
            faiss.ParameterSpace().set_index_parameters(self.index, params)
        if omp_threads:
            faiss.omp_set_num_threads(omp_threads)

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, list[list[str]]]:
        """Top-k of this shard: scores [nq, k'] (k' = min(k, n)), item ids [nq][k']."""
        q = np.ascontiguousarray(queries, dtype=np.float32)
        kk = min(k, len(self))
        if kk == 0:
            return np.zeros((len(q), 0), np.float32), [[] for _ in range(len(q))]
        scores, labels = self.index.search(q, kk)
        ids = [[self.item_ids[j] if j >= 0 else None for j in row] for row in labels]
        return scores, ids

    def item(self, item_id: str) -> dict | None:
        row = self._row.get(item_id)
        if row is None:
            return None
        return {"item_id": item_id, "title": self.titles[row], "image_uri": self.image_uris[row]}


class ShardedIndex:
    """All shards of one version in this process: the in-process reference the endpoint must equal."""

    def __init__(self, root: str, version: str | None = None, verify: bool = True,
                 search_params: str | None = None):
        self.root = root
        self.manifest = read_manifest(root, version)
        self.shards = [Shard(root, self.manifest, s, verify=verify, search_params=search_params)
                       for s in range(self.manifest.n_shards)]

    @property
    def version(self) -> str:
        return self.manifest.version

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, list[list[str]]]:
        return merge_topk((s.search(queries, k) for s in self.shards), k)

    def item(self, item_id: str) -> dict | None:
        return self.shards[shard_of(item_id, self.manifest.n_shards)].item(item_id)


def exact_search(vectors: np.ndarray, item_ids: Sequence[str], queries: np.ndarray, k: int
                 ) -> tuple[np.ndarray, list[list[str]]]:
    """Brute-force top-k by inner product over normalised vectors (ties by item id): the ground truth."""
    v, q = normalize(vectors), np.ascontiguousarray(queries, dtype=np.float32)
    sims = q @ v.T
    ids = np.asarray(item_ids, dtype=object)
    out_s = np.full((len(q), min(k, len(ids))), -np.inf, np.float32)
    out_i = []
    for r in range(len(q)):
        order = sorted(range(len(ids)), key=lambda j: (-float(sims[r, j]), ids[j]))[:k] if len(ids) < 5000 \
            else list(np.argsort(-sims[r], kind="stable")[:k])
        out_s[r, :len(order)] = sims[r, order]
        out_i.append([ids[j] for j in order])
    return out_s, out_i
