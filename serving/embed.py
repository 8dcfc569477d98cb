"""Embed a catalog with the student's image tower through Ray Data, into an embeddings table.

Reader -> mapper -> writer: catalog Parquet parts are read by Ray Data, an autoscaling pool
of actors (each holding one student, on a GPU when ``num_gpus`` > 0) maps image batches to
L2-normalised vectors, and the driver writes ``part-NNNNN.parquet`` files atomically, then
``_SUCCESS.json`` last; an embeddings directory without it is incomplete and is rebuilt.
"""

from __future__ import annotations

import time

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field

from distill import datasets, storage
from serving.index import EMBEDDING_SCHEMA, embeddings_table

SUCCESS = "_SUCCESS.json"


class EmbedConfig(BaseModel):
    """Where and how the image tower runs."""

    model_config = ConfigDict(extra="forbid")

    batch_size: int = Field(64, ge=1, le=65_536, description="images per actor call")
    min_actors: int = Field(1, ge=1, description="smallest size of the embedding actor pool")
    max_actors: int = Field(2, ge=1, description="largest size of the actor pool (Ray Data scales between)")
    num_cpus: float = Field(1.0, gt=0, description="CPUs reserved per actor")
    num_gpus: float = Field(0.0, ge=0, description="GPUs per actor (e.g. 1 on GPU nodes; the model moves to cuda)")
    torch_threads: int = Field(1, ge=1, description="torch intra-op threads per actor")
    part_rows: int = Field(100_000, ge=1, description="rows per written embeddings Parquet part")


def image_uri_of(item_id: str, attributes: dict[str, str] | None) -> str:
    """A user's own image URI (attribute ``image_uri``/``image_url``) or the endpoint's image route."""
    if attributes:
        for key in ("image_uri", "image_url"):
            if attributes.get(key):
                return attributes[key]
    return f"/v1/items/{item_id}/image"


class _ImageEmbedder:
    """A Ray Data actor: one student per actor, image bytes -> normalised vectors."""

    def __init__(self, checkpoint_uri: str, device: str, torch_threads: int):
        from serving.encoders import load_encoder

        self.encoder = load_encoder(checkpoint_uri, device=device, torch_threads=torch_threads)

    def __call__(self, batch: pa.Table) -> pa.Table:
        vecs = self.encoder.encode_images(batch.column("image").to_pylist())
        attrs = batch.column("attributes").to_pylist() if "attributes" in batch.column_names else [None] * len(batch)
        ids = batch.column("item_id").to_pylist()
        uris = [image_uri_of(i, dict(a) if a else None) for i, a in zip(ids, attrs)]
        return embeddings_table(ids, vecs, batch.column("title").to_pylist(), uris)


def embeddings_complete(out_uri: str) -> dict | None:
    uri = storage.join(out_uri, SUCCESS)
    return storage.read_json(uri) if storage.exists(uri) else None


def embed_catalog(dataset_root: str, checkpoint_uri: str, checkpoint_hash: str, out_uri: str,
                  cfg: EmbedConfig | None = None, split: str | None = None, limit: int | None = None,
                  progress: bool = True) -> dict:
    """Embed every catalog item (optionally one split, the first ``limit`` items) into ``out_uri``.

    Returns the ``_SUCCESS.json`` record. Needs Ray initialised (``distill.ray_utils.init_ray``).
    """
    import ray
    from tqdm.auto import tqdm

    cfg = cfg or EmbedConfig()
    started = time.perf_counter()
    columns = ["item_id", "title", "image", "attributes"]
    table = datasets.read_catalog(dataset_root, split=split, columns=columns)
    table = table.sort_by("item_id")
    if limit is not None:
        table = table.slice(0, limit)
    n = len(table)
    if n == 0:
        raise ValueError(f"no catalog items under {dataset_root!r} (split={split!r})")
    ds = ray.data.from_arrow(table)
    device = "cuda" if cfg.num_gpus > 0 else "cpu"
    ds = ds.map_batches(
        _ImageEmbedder, batch_format="pyarrow", batch_size=cfg.batch_size,
        fn_constructor_kwargs={"checkpoint_uri": checkpoint_uri, "device": device,
                               "torch_threads": cfg.torch_threads},
        compute=ray.data.ActorPoolStrategy(min_size=cfg.min_actors, max_size=max(cfg.min_actors, cfg.max_actors)),
        num_cpus=cfg.num_cpus, num_gpus=cfg.num_gpus or None)
    # a rerun replaces the parts of an incomplete earlier attempt
    storage.delete(out_uri)
    part, rows, pending = 0, 0, []
    bar = tqdm(total=n, desc="embed catalog", unit="img", disable=not progress)

    def flush() -> None:
        nonlocal part, pending
        if pending:
            storage.write_table_atomic(pa.concat_tables(pending), storage.join(out_uri, f"part-{part:05d}.parquet"),
                                       EMBEDDING_SCHEMA)
            part, pending = part + 1, []

    buffered = 0
    for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None):
        pending.append(batch.cast(EMBEDDING_SCHEMA))
        buffered += len(batch)
        rows += len(batch)
        bar.update(len(batch))
        if buffered >= cfg.part_rows:
            flush()
            buffered = 0
    flush()
    bar.close()
    if rows != n:
        raise RuntimeError(f"embedded {rows} of {n} items")
    record = {"n_items": rows, "n_parts": part, "checkpoint_uri": checkpoint_uri, "checkpoint_hash": checkpoint_hash,
              "dataset_root": dataset_root, "split": split, "limit": limit,
              "seconds": round(time.perf_counter() - started, 2)}
    storage.write_json_atomic(record, storage.join(out_uri, SUCCESS))
    return record


def read_embeddings(uri: str) -> pa.Table:
    if embeddings_complete(uri) is None:
        raise FileNotFoundError(f"embeddings at {uri!r} are incomplete (no {SUCCESS})")
    return storage.read_table(uri, schema=EMBEDDING_SCHEMA)


def sort_by_id(table: pa.Table) -> pa.Table:
    return table.take(pc.sort_indices(table, sort_keys=[("item_id", "ascending")]))

