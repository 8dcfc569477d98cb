"""Catalog -> student image embeddings -> sharded FAISS index: the library behind ``jobs/index.py``.

Embeddings come from the one catalog-embedding pipeline (``distill.embed``: Parquet parts ->
actor pool -> Parquet); the index is built from them by parallel Ray tasks
(``serving.index.build_index_parallel``), so neither the driver nor any task holds the catalog.

With no student checkpoint given, the student is built from its config with a fixed seed (the
untrained demo student) and saved under ``<output>/students/<hash>`` first, so the endpoint
loads exactly the weights the index was built with. Embeddings are cached per
(checkpoint hash, catalog selection) under ``<output>/embeddings/``; a finished set is reused.
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from distill import storage
from distill.student import StudentConfig
from distill.world import WorldConfig
from distill.embed import EmbedConfig, embed_catalog, embeddings_complete
from serving.index import IndexBuildConfig, IndexManifest, build_index_parallel


class IndexJobConfig(BaseModel):
    """Embed a catalog with the student's image tower and build a sharded FAISS index from it."""

    model_config = ConfigDict(extra="forbid")
    # The default index root is named by the catalog alone: builds with another student, factory or
    # pool are versions inside it (versions/<v>/ and CURRENT), not other roots.
    EXECUTION_FIELDS: ClassVar[frozenset[str]] = frozenset({
        "checkpoint", "student", "seed", "output", "embed", "index", "reuse_embeddings"})

    dataset: str | None = Field(None, description="dataset root URI (see distill.datasets); default the demo world")
    world: WorldConfig = Field(default_factory=WorldConfig, description="the demo world, used when dataset is unset")
    split: Literal["train", "val", "test"] | None = Field(None, description="index one split only (default all)")
    limit: int | None = Field(None, ge=1, description="index only the first N items by id (smoke runs)")
    checkpoint: str | None = Field(None, description="student checkpoint directory URI (Student.save); "
                                   "default: build `student` untrained with `seed` and save it beside the index")
    student: StudentConfig = Field(default_factory=StudentConfig, description="the student, when no checkpoint")
    seed: int = Field(0, description="torch seed of the untrained student")
    allow_untrained: bool = Field(True, description=(
        "without a checkpoint, index the untrained `student` (smoke runs); the shipped configs set false, "
        "so they serve a distilled student (jobs/pipeline.py passes its checkpoint by id)"))
    output: str | None = Field(None, description="index root URI; default $PERSONA_DISTILL_HOME/indexes/<name>")
    embed: EmbedConfig = Field(default_factory=EmbedConfig, description="the Ray Data embedding pool")
    index: IndexBuildConfig = Field(default_factory=IndexBuildConfig, description="FAISS factory, shards, version")
    reuse_embeddings: bool = Field(True, description="reuse finished embeddings of the same checkpoint and catalog")


def default_output(cfg: IndexJobConfig) -> str:
    """One index root per catalog: rebuilding it with another student or factory adds a version."""
    from distill.runs import dataset_name, run_folder

    return run_folder("index", dataset_name(cfg.dataset, cfg.world.name), cfg, parent="indexes")


def materialise_student(cfg: IndexJobConfig, output: str) -> tuple[str, str]:
    """(checkpoint URI, checkpoint hash): the given checkpoint, or the seeded untrained student saved once."""
    import torch

    from distill.student import build_student, read_checkpoint_meta

    if cfg.checkpoint:
        meta = read_checkpoint_meta(cfg.checkpoint)
        return cfg.checkpoint, meta["checkpoint_id"]
    torch.manual_seed(cfg.seed)
    student = build_student(cfg.student)
    ckpt_hash = student.checkpoint_id
    uri = storage.join(output, "students", ckpt_hash[:16])
    if not storage.exists(storage.join(uri, "student.json")):
        student.save(uri, extra={"seed": cfg.seed, "untrained": True})
    return uri, ckpt_hash


def _absolute(uri: str) -> str:
    """Local paths are recorded absolute in the manifest (the endpoint's replicas run elsewhere)."""
    import os

    return uri if "://" in uri else os.path.abspath(os.path.expanduser(uri))


def index_root(cfg: IndexJobConfig) -> str:
    """The absolute index root URI this config writes."""
    return _absolute(cfg.output or default_output(cfg))


def run_index_job(cfg: IndexJobConfig, progress: bool = True) -> IndexManifest:
    from distill import datasets

    if not cfg.checkpoint and not cfg.allow_untrained:
        from distill.config import ConfigError

        raise ConfigError("checkpoint is empty and allow_untrained is false: set checkpoint=<a distilled student>, "
                          "or run jobs/pipeline.py, which indexes the checkpoint it distilled")

    started = time.perf_counter()
    # before the first actor starts: the catalog (split) it indexes has rows
    dataset, _ = datasets.resolve_root(cfg.dataset, cfg.world, "index", catalog=(cfg.split or "all",),
                                       setting="dataset")
    output = index_root(cfg)
    dataset = _absolute(dataset)
    ckpt_uri, ckpt_hash = materialise_student(cfg, output)
    selection = json.dumps({"dataset": dataset, "split": cfg.split, "limit": cfg.limit}, sort_keys=True)
    emb_uri = storage.join(output, "embeddings",
                           f"{ckpt_hash[:16]}-{hashlib.sha256(selection.encode()).hexdigest()[:8]}")
    done = embeddings_complete(emb_uri)
    embed_catalog(dataset, ckpt_uri, emb_uri, cfg.embed, split=cfg.split, limit=cfg.limit,
                  checkpoint_hash=ckpt_hash, reuse=cfg.reuse_embeddings, progress=progress)
    if progress and done is not None and cfg.reuse_embeddings and done.get("checkpoint_hash") == ckpt_hash:
        print(f"reusing embeddings at {emb_uri} ({done['n_items']} items)")
    manifest = build_index_parallel(emb_uri, output, checkpoint_id=ckpt_hash, checkpoint_hash=ckpt_hash,
                                    cfg=cfg.index, progress=progress, checkpoint_uri=ckpt_uri,
                                    dataset_root=dataset).manifest
    if progress:
        print(f"index {manifest.version} at {output}: {manifest.n_items} items, dim {manifest.dim}, "
              f"{manifest.n_shards} shard(s) of {manifest.factory}; {time.perf_counter() - started:.1f} s")
    return manifest
