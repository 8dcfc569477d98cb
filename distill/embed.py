"""The one catalog-embedding pipeline: catalog Parquet parts -> student on an actor pool -> Parquet.

Reader -> mapper -> writer, as clip-retrieval does it, and every stage that needs image
embeddings (the distillation cycles, evaluation, ``jobs/index.py``) goes through here:

* **reader**: ``ray.data.read_parquet`` over the dataset root's ``catalog/`` parts through a
  pyarrow filesystem (local, ``s3://``, ``gs://``), only the columns the mapper uses, the split
  and an optional id selection pushed down as a Parquet filter. No process ever holds a split's
  image bytes: Ray Data streams blocks through the pool.
* **mapper**: ``map_batches`` with an ``ActorPoolStrategy``; each actor loads the student once
  (on a GPU when ``num_gpus`` > 0) and turns a batch of image bytes into L2-normalised vectors.
* **writer**: ``write_parquet`` from the workers (``EMBEDDING_SCHEMA``), then ``_SUCCESS.json``
  last. A directory without it is incomplete and is rebuilt; one with it, for the same student
  and the same selection, is reused.

Readers of the result never load it whole either: :func:`embedding_files` lists the parts that
chunked Ray tasks (``distill.scoring``, the parallel index build) each read in bounded slices.
"""

from __future__ import annotations

import hashlib
import time
from typing import Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field

from distill import datasets, storage

SUCCESS = "_SUCCESS.json"

EMBEDDING_SCHEMA = pa.schema(
    [
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("vector", pa.list_(pa.float32()), nullable=False),
        pa.field("title", pa.string(), nullable=True),
        pa.field("image_uri", pa.string(), nullable=True),
        pa.field("attributes", pa.map_(pa.string(), pa.string()), nullable=True),  # serving's filters
    ],
    metadata={"persona_distill.table": "embeddings", "persona_distill.version": "1"},
)


class EmbedConfig(BaseModel):
    """Where and how the image tower runs over the catalog."""

    model_config = ConfigDict(extra="forbid")

    batch_size: int = Field(128, ge=1, le=65_536, description=(
        "images per actor call (128 keeps a CPU actor busy without starving the other of blocks)"))
    min_actors: int = Field(1, ge=1, description="smallest size of the embedding actor pool")
    max_actors: int = Field(2, ge=1, description="largest size of the actor pool (Ray Data scales between)")
    num_cpus: float = Field(1.0, gt=0, description="CPUs reserved per actor")
    num_gpus: float = Field(0.0, ge=0, description="GPUs per actor (e.g. 1 on GPU nodes; the model moves to cuda)")
    accelerator_type: str | None = Field(None, description=(
        "Ray accelerator type of the actors' GPU, e.g. 'H100' (with num_gpus): on a cluster whose GPU groups "
        "run different images it keeps the actors on the group with CUDA torch; null = any GPU"))
    torch_threads: int = Field(1, ge=1, description="torch intra-op threads per actor")
    io_cpus: float = Field(0.25, gt=0, description=(
        "CPUs reserved per Parquet read / write task (light work: a full CPU each would keep the "
        "actors from the cores on a small node)"))
    block_rows: int | None = Field(None, ge=1, description=(
        "split the read's blocks into blocks of at most this many rows before the actor pool (Ray Data's "
        "streaming repartition). The pool hands out whole blocks and small Parquet files are read as one "
        "block, which leaves all actors but one idle; null = the read's blocks (a repartition costs ~1.5 s "
        "per pass)"))
    part_rows: int = Field(100_000, ge=1, description="at most this many rows per written embeddings Parquet file")


def image_uri_of(item_id: str, attributes: dict[str, str] | None) -> str:
    """A user's own image URI (attribute ``image_uri``/``image_url``) or the endpoint's image route."""
    if attributes:
        for key in ("image_uri", "image_url"):
            if attributes.get(key):
                return attributes[key]
    return f"/v1/items/{item_id}/image"


def embeddings_table(item_ids: Sequence[str], vectors: np.ndarray, titles: Sequence[str | None] | None = None,
                     image_uris: Sequence[str | None] | None = None,
                     attributes: Sequence[dict[str, str] | None] | None = None) -> pa.Table:
    """An EMBEDDING_SCHEMA table from arrays (vectors stored as float32 lists)."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    n, dim = vectors.shape
    vec = pa.ListArray.from_arrays(pa.array(np.arange(0, (n + 1) * dim, dim, dtype=np.int32)),
                                   pa.array(vectors.reshape(-1)))
    return pa.table({
        "item_id": pa.array(list(item_ids), pa.string()),
        "vector": vec,
        "title": pa.array(list(titles) if titles is not None else [None] * n, pa.string()),
        "image_uri": pa.array(list(image_uris) if image_uris is not None else [None] * n, pa.string()),
        "attributes": pa.array([list(a.items()) if a else None for a in attributes] if attributes is not None
                               else [None] * n, EMBEDDING_SCHEMA.field("attributes").type),
    }, schema=EMBEDDING_SCHEMA)


def vectors_of(table: pa.Table | pa.RecordBatch) -> np.ndarray:
    """(n, dim) float32 view of a ``vector`` column (list or fixed-size list of float32)."""
    col = table.column("vector")
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    n = len(col)
    if n == 0:
        return np.zeros((0, 0), dtype=np.float32)
    if pa.types.is_fixed_size_list(col.type):
        dim = col.type.list_size
    else:
        lengths = np.diff(col.offsets.to_numpy())
        if not (lengths == lengths[0]).all():
            raise ValueError("embeddings have vectors of different lengths")
        dim = int(lengths[0])
    flat = col.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    return flat.reshape(n, dim)


# --------------------------------------------------------------------------------------------
# reader


def catalog_dataset(root: str, columns: list[str], split: str | None = None,
                    item_ids: Sequence[str] | None = None, io_cpus: float | None = None):
    """The catalog parts as a Ray Dataset: only ``columns``; the split and id selection are Ray Data
    predicate expressions, which its optimiser pushes into the Parquet scan."""
    import ray.data
    from ray.data.expressions import col

    from distill.ray_utils import footer_readers_for

    datasets._check_split(split)
    cdir = datasets.catalog_dir(root)
    if not storage.exists(cdir):
        raise FileNotFoundError(f"no catalog under {root!r} (expected {cdir!r})")
    fs, path = storage.resolve(cdir)
    # read, filter and projection share one resource shape, so Ray Data fuses them into the read
    # tasks (a filter at its default 1 CPU would be a separate stage holding a core on a small node)
    io = {"num_cpus": io_cpus} if io_cpus is not None else {}
    # one footer reader per 10 parts: Ray Data fixes the pool's size when the read is created
    with footer_readers_for(len(storage.list_files(cdir, ".parquet"))):
        ds = ray.data.read_parquet(path, filesystem=fs, **io)
    if split:
        ds = ds.filter(expr=col("split") == split, **io)
    if item_ids is not None:
        ds = ds.filter(expr=col("item_id").is_in(list(item_ids)), **io)
    return ds.select_columns(columns, **io)


# --------------------------------------------------------------------------------------------
# mapper


class ImageEmbedder:
    """A Ray Data actor: one student per actor, a batch of catalog rows -> EMBEDDING_SCHEMA rows."""

    def __init__(self, checkpoint_uri: str, device: str = "cpu", torch_threads: int = 1):
        import torch

        from distill.student import Student

        torch.set_num_threads(torch_threads)
        self.student = Student.load(checkpoint_uri, device=device)
        self.student.model.eval()

    def __call__(self, batch: pa.Table) -> pa.Table:
        vecs = self.student.encode_images(batch.column("image").to_pylist())
        ids = batch.column("item_id").to_pylist()
        attrs = batch.column("attributes").to_pylist() if "attributes" in batch.column_names else [None] * len(ids)
        uris = [image_uri_of(i, dict(a) if a else None) for i, a in zip(ids, attrs)]
        return embeddings_table(ids, vecs, batch.column("title").to_pylist(), uris,
                                [dict(a) if a else None for a in attrs])


# --------------------------------------------------------------------------------------------
# the pipeline


class EmbedRecord(BaseModel):
    """``_SUCCESS.json`` of an embeddings directory: what made it, and that it is complete."""

    n_items: int
    n_files: int
    dim: int
    checkpoint_uri: str
    checkpoint_hash: str
    dataset_root: str
    split: str | None = None
    selection: str = Field(description="hash of the item-id selection ('' = the whole split)")
    limit: int | None = None
    seconds: float


def selection_key(item_ids: Sequence[str] | None) -> str:
    if item_ids is None:
        return ""
    h = hashlib.sha256()
    for i in sorted(item_ids):
        h.update(i.encode() + b"\x1f")
    return h.hexdigest()[:16]


def embeddings_complete(out_uri: str) -> dict | None:
    uri = storage.join(out_uri, SUCCESS)
    return storage.read_json(uri) if storage.exists(uri) else None


def embed_catalog(dataset_root: str, checkpoint_uri: str, out_uri: str, cfg: EmbedConfig | None = None,
                  split: str | None = None, item_ids: Sequence[str] | None = None, limit: int | None = None,
                  checkpoint_hash: str | None = None, reuse: bool = True, progress: bool = False) -> EmbedRecord:
    """Embed the catalog (a split, an id selection, or the first ``limit`` items by id) into ``out_uri``.

    Reuses a complete ``out_uri`` made by the same student for the same selection. Needs Ray
    (``distill.ray_utils.init_ray`` is called). Returns the ``_SUCCESS.json`` record.
    """
    from distill.ray_utils import init_ray
    from distill.student import read_checkpoint_meta

    cfg = cfg or EmbedConfig()
    checkpoint_hash = checkpoint_hash or read_checkpoint_meta(checkpoint_uri)["checkpoint_id"]
    sel = selection_key(item_ids)
    done = embeddings_complete(out_uri) if reuse else None
    if done and done.get("checkpoint_hash") == checkpoint_hash and done.get("selection", "") == sel \
            and done.get("split") == split and done.get("limit") == limit:
        return EmbedRecord(**done)
    init_ray()
    import ray.data

    started = time.perf_counter()
    ds = catalog_dataset(dataset_root, ["item_id", "title", "image", "attributes"], split, item_ids, cfg.io_cpus)
    if limit is not None:
        ds = ds.sort("item_id").limit(limit)
    device = "cuda" if cfg.num_gpus > 0 else "cpu"
    if cfg.block_rows is not None:
        ds = ds.repartition(target_num_rows_per_block=cfg.block_rows)
    ds = ds.map_batches(
        ImageEmbedder, batch_format="pyarrow", batch_size=cfg.batch_size,
        fn_constructor_kwargs={"checkpoint_uri": checkpoint_uri, "device": device,
                               "torch_threads": cfg.torch_threads},
        # autoscaled from min_actors: an initial pool holding every core starves the read tasks
        compute=ray.data.ActorPoolStrategy(min_size=cfg.min_actors, max_size=max(cfg.min_actors, cfg.max_actors)),
        num_cpus=cfg.num_cpus, num_gpus=cfg.num_gpus or None, accelerator_type=cfg.accelerator_type)
    storage.delete(out_uri)  # a rerun replaces the files of an incomplete earlier attempt
    fs, path = storage.resolve(out_uri)
    ds.write_parquet(path, filesystem=fs, max_rows_per_file=cfg.part_rows, schema=EMBEDDING_SCHEMA,
                     compression="zstd", ray_remote_args={"num_cpus": cfg.io_cpus})
    files = embedding_files(out_uri, check=False)
    n, dim = 0, 0
    for f in files:
        fsf, p = storage.resolve(f)
        with fsf.open_input_file(p) as fh:
            md = pq.ParquetFile(fh)
            n += md.metadata.num_rows
            if not dim and md.metadata.num_rows:
                dim = len(next(md.iter_batches(batch_size=1, columns=["vector"])).column(0)[0])
    if n == 0:
        raise ValueError(f"no catalog items under {dataset_root!r} (split={split!r}"
                         + (f", {len(item_ids)} selected ids" if item_ids is not None else "") + ")")
    if item_ids is not None and n != len(set(item_ids)):
        raise ValueError(f"{len(set(item_ids)) - n} of the {len(set(item_ids))} selected items are not in the "
                         f"catalog under {dataset_root!r} (split={split!r})")
    record = EmbedRecord(n_items=n, n_files=len(files), dim=dim, checkpoint_uri=checkpoint_uri,
                         checkpoint_hash=checkpoint_hash, dataset_root=dataset_root, split=split, selection=sel,
                         limit=limit, seconds=round(time.perf_counter() - started, 2))
    storage.write_json_atomic(record.model_dump(mode="json"), storage.join(out_uri, SUCCESS))
    if progress:
        print(f"embedded {n} items into {len(files)} file(s) at {out_uri} ({record.seconds:.1f} s)", flush=True)
    return record


# --------------------------------------------------------------------------------------------
# reading the result


def embedding_files(uri: str, check: bool = True) -> list[str]:
    """The Parquet parts of a complete embeddings directory (sorted)."""
    if check and embeddings_complete(uri) is None:
        raise FileNotFoundError(f"embeddings at {uri!r} are incomplete (no {SUCCESS})")
    return [f for f in storage.list_files(uri, ".parquet") if not f.rsplit("/", 1)[-1].startswith(("_", "."))]


def iter_embedding_batches(file_uri: str, rows: int = 8192, columns: list[str] | None = None
                           ) -> Iterator[pa.RecordBatch]:
    """One embeddings file in slices of ``rows``: what a chunked task holds at a time."""
    fs, path = storage.resolve(file_uri)
    with fs.open_input_file(path) as fh:
        yield from pq.ParquetFile(fh).iter_batches(batch_size=rows, columns=columns or ["item_id", "vector"])


def read_embeddings(uri: str, item_ids: Sequence[str] | None = None) -> pa.Table:
    """A complete embeddings directory as one table (small catalogs, tests), or just ``item_ids``' rows."""
    if embeddings_complete(uri) is None:
        raise FileNotFoundError(f"embeddings at {uri!r} are incomplete (no {SUCCESS})")
    filt = None if item_ids is None else pc.field("item_id").isin(pa.array(list(item_ids), pa.string()))
    return storage.read_table(uri, schema=EMBEDDING_SCHEMA, filter=filt)


def vectors_by_id(uri: str, item_ids: Sequence[str]) -> np.ndarray:
    """(len(item_ids), dim) vectors of the given items, in that order (a filtered scan, not a load)."""
    table = read_embeddings(uri, sorted(set(item_ids)))
    pos = {i: n for n, i in enumerate(table.column("item_id").to_pylist())}
    missing = [i for i in item_ids if i not in pos]
    if missing:
        raise KeyError(f"{len(missing)} item(s) not in the embeddings at {uri!r}, e.g. {missing[:3]}")
    vecs = vectors_of(table)
    return vecs[[pos[i] for i in item_ids]]
