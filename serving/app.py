"""The Ray Serve application: FastAPI ingress -> query encoder -> one deployment per index shard.

    serve run configs/serve.yaml                       # or: serve deploy configs/serve.yaml
    serve run serving.app:build_app index_root=/path/to/index

Deployments (each with its own replicas and autoscaling):

* ``SearchIngress`` - FastAPI: ``POST /v1/search``, ``GET /v1/items/{id}``, ``GET /v1/items/{id}/image``,
  ``GET /healthz``, ``GET /readyz``, OpenAPI at ``/docs`` and ``/openapi.json``. Concurrent
  searches are gathered with ``@serve.batch``: one encoder call per batch, one call per shard with
  the batch's vectors, then an exact merge of the per-shard top-k. Every Serve hop costs CPU
  (~1-2 ms each side on a small machine), so paying them per batch rather than per request is what
  lets throughput grow with load.
* ``QueryEncoder`` - the student's text tower; concurrent calls (each a list of personas) are
  batched again with ``@serve.batch`` across ingress replicas.
* ``Shard0`` .. ``Shard{S-1}`` - one FAISS shard each (checksum-verified at start), concurrent blocks
  of query vectors searched as one FAISS batch.

Past capacity the ingress sheds load: beyond ``ingress_max_ongoing_requests`` per replica plus
``max_queued_requests`` waiting, the proxy answers 503 at once instead of letting queues (and
latency) grow without bound.

The app refuses to start when the index manifest does not match the student (dimension,
checkpoint hash) or a shard file fails its checksum: the builder checks what it can cheaply
(manifest, student.json), the replicas check the loaded weights and the file bytes.
An index version swap is a config change (``index_version``): Serve rolls the shard, encoder
and ingress replicas over to the new version; ``max_surge_percent`` (``rollout_surge_percent``)
starts the new replicas before the old ones stop, so no search waits on a deployment with none.
"""

# (no `from __future__ import annotations`: FastAPI must see real types on the ingress methods)

import asyncio
import time
from typing import Any

import numpy as np
from fastapi import FastAPI, HTTPException
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, field_validator
from ray import serve
from ray.serve.handle import DeploymentHandle

from serving.index import (
    IndexManifest,
    IndexRefusedError,
    Shard,
    check_encoder,
    merge_topk,
    read_manifest,
    resolve_version,
    shard_of,
)


MAX_K = 1000
MAX_PERSONA_CHARS = 2000


# --------------------------------------------------------------------------------------------
# HTTP models


class SearchRequest(BaseModel):
    """A shopper's persona and how many products to return."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "examples": [{"persona": "a gift for a mother who loves gardening", "k": 10}]})

    persona: str = Field(min_length=1, max_length=MAX_PERSONA_CHARS, description="free-text persona")
    k: int = Field(10, ge=1, le=MAX_K, description="number of products to return")

    @field_validator("persona")
    @classmethod
    def _not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("persona must not be blank")
        return v.strip()


class Item(BaseModel):
    item_id: str
    title: str | None = None
    image_uri: str | None = None


class Hit(Item):
    rank: int = Field(description="1-based rank")
    score: float = Field(description="cosine similarity of persona and product embeddings")


class SearchResponse(BaseModel):
    hits: list[Hit]
    index_version: str
    checkpoint_id: str
    took_ms: float


class Health(BaseModel):
    status: str
    index_version: str | None = None
    detail: dict[str, str] | None = None


# --------------------------------------------------------------------------------------------
# builder args (the serve config's `args:`)


class Autoscaling(BaseModel):
    """Ray Serve autoscaling of one deployment (replicas follow ongoing requests per replica)."""

    model_config = ConfigDict(extra="forbid")

    min_replicas: int = Field(1, ge=0)
    max_replicas: int = Field(2, ge=1)
    target_ongoing_requests: float = Field(8, gt=0, description="queue depth per replica Serve aims for")
    upscale_delay_s: float = Field(3.0, ge=0)
    downscale_delay_s: float = Field(60.0, ge=0)

    def as_config(self) -> dict[str, Any]:
        return self.model_dump()


class SearchAppArgs(BaseModel):
    """Arguments of ``build_app`` (``args:`` of an application in a serve config)."""

    model_config = ConfigDict(extra="forbid")

    index_root: str = Field(description="index root URI written by jobs/index.py")
    index_version: str | None = Field(None, description="version to serve; default the one CURRENT names "
                                      "(resolved when the app is built, so changing it is a rolling update)")
    checkpoint: str | None = Field(None, description="student checkpoint for the query encoder; "
                                   "default the one the index was built with")
    search_params: str | None = Field(None, description="FAISS ParameterSpace string, e.g. 'nprobe=32' "
                                      "(default: the manifest's)")
    verify_checksums: bool = Field(True, description="verify every shard file's sha256 at replica start")
    encoder_batch_size: int = Field(16, ge=1, le=1024)
    encoder_batch_wait_s: float = Field(0.004, ge=0, le=1)
    ingress_batch_size: int = Field(32, ge=1, le=1024, description="concurrent searches fanned out together")
    ingress_batch_wait_s: float = Field(0.002, ge=0, le=1)
    shard_batch_size: int = Field(32, ge=1, le=1024)
    shard_batch_wait_s: float = Field(0.002, ge=0, le=1)
    torch_threads: int = Field(1, ge=1, description="torch threads per encoder replica")
    faiss_threads: int = Field(1, ge=1, description="OpenMP threads per shard replica")
    device: str = Field("cpu", description="encoder device ('cuda' on GPU nodes; then set encoder_gpus)")
    encoder_gpus: float = Field(0, ge=0)
    ingress_cpus: float = Field(0.1, ge=0, description="CPUs reserved per ingress replica")
    encoder_cpus: float = Field(0.5, ge=0, description="CPUs reserved per encoder replica")
    shard_cpus: float = Field(0.25, ge=0, description="CPUs reserved per shard replica")
    ingress_max_ongoing_requests: int = Field(64, ge=1, description="searches one ingress replica works on at once")
    max_queued_requests: int = Field(64, ge=-1, description=(
        "searches the ingress queues beyond its replicas' max_ongoing_requests before the proxy answers 503 "
        "(load shedding: past capacity, a fast 503 a client can retry beats a timeout; -1 = unbounded)"))
    rollout_surge_percent: int = Field(100, ge=0, le=100, description=(
        "extra replicas a rolling update may start (% of each deployment's target): with 100 the old "
        "replicas keep serving until their replacements are ready, so an index swap drops nothing; "
        "0 stops old replicas first (needs no spare resources, but searches wait meanwhile)"))
    access_log: bool = Field(True, description="Serve's per-request access log lines on every deployment "
                             "(four lines per search; turn off at high QPS on small machines)")
    ingress_autoscaling: Autoscaling = Field(default_factory=lambda: Autoscaling(target_ongoing_requests=32))
    encoder_autoscaling: Autoscaling = Field(default_factory=lambda: Autoscaling(target_ongoing_requests=16))
    shard_autoscaling: Autoscaling = Field(default_factory=lambda: Autoscaling(target_ongoing_requests=16))


# --------------------------------------------------------------------------------------------
# deployments


@serve.deployment(max_ongoing_requests=64)
class QueryEncoder:
    """The student's text tower, batched; refuses to start if it is not the index's student."""

    def __init__(self, checkpoint: str, manifest: dict, device: str, torch_threads: int,
                 batch_size: int, batch_wait_s: float):
        from serving.encoders import load_encoder

        self.encoder = load_encoder(checkpoint, device=device, torch_threads=torch_threads)
        check_encoder(IndexManifest.model_validate(manifest), self.encoder)
        self.encode.set_max_batch_size(batch_size)
        self.encode.set_batch_wait_timeout_s(batch_wait_s)
        self.encoder.encode_texts(["warm-up"])

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.004, max_concurrent_batches=2)
    async def encode(self, batches: list[list[str]]) -> list[np.ndarray]:
        """Each call carries a list of personas (one ingress batch); concurrent calls are encoded together."""
        vecs = await asyncio.to_thread(self.encoder.encode_texts, [t for b in batches for t in b])
        bounds = np.cumsum([0] + [len(b) for b in batches])
        return [vecs[lo:hi] for lo, hi in zip(bounds[:-1], bounds[1:])]

    def info(self) -> dict:
        return {"checkpoint_id": self.encoder.checkpoint_id, "checkpoint_hash": self.encoder.checkpoint_hash,
                "dim": self.encoder.dim}


@serve.deployment(max_ongoing_requests=128)
class ShardSearcher:
    """One FAISS shard (sha256-verified at start); concurrent queries are searched as one batch."""

    def __init__(self, index_root: str, manifest: dict, shard: int, search_params: str | None, verify: bool,
                 faiss_threads: int, batch_size: int, batch_wait_s: float):
        self.shard = Shard(index_root, IndexManifest.model_validate(manifest), shard, verify=verify,
                           search_params=search_params, omp_threads=faiss_threads)
        self.search.set_max_batch_size(batch_size)
        self.search.set_batch_wait_timeout_s(batch_wait_s)

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.002, max_concurrent_batches=2)
    async def search(self, queries: list[np.ndarray], ks: list[int]
                     ) -> list[tuple[np.ndarray, list[list[str]], dict[str, dict]]]:
        """Per call (a (n, D) block of query vectors and its k): this shard's scores [n, k'], item ids
        [n][k'] and the records of those items; concurrent calls are searched as one FAISS batch."""
        blocks = [np.asarray(v, np.float32).reshape(-1, self.shard.index.d) for v in queries]
        scores, ids = await asyncio.to_thread(self.shard.search, np.concatenate(blocks), max(ks))
        out, row = [], 0
        for v, k in zip(blocks, ks):
            n = len(v)
            block = [[iid for iid in ids[r][:k] if iid is not None] for r in range(row, row + n)]
            records = {iid: self.shard.item(iid) for top in block for iid in top}
            out.append((scores[row:row + n, :k], block, records))
            row += n
        return out

    def item(self, item_id: str) -> dict | None:
        return self.shard.item(item_id)

    def ready(self) -> dict:
        return {"shard": self.shard.shard, "version": self.shard.version, "n_items": len(self.shard)}


def _read_image(dataset_root: str, item_id: str) -> bytes | None:
    import pyarrow.compute as pc

    from distill import datasets, storage
    from distill.schemas import CATALOG_SCHEMA

    table = storage.read_table(datasets.catalog_dir(dataset_root), columns=["image"], schema=CATALOG_SCHEMA,
                               filter=pc.field("item_id") == item_id)
    return table.column("image")[0].as_py() if len(table) else None


api = FastAPI(
    title="persona-distill search",
    description="Products a persona would pick: the distilled student's text tower embeds the persona, "
                "a sharded FAISS index of its image embeddings returns the top-k.",
    version="1",
)


@serve.deployment  # max_ongoing_requests, max_queued_requests: from SearchAppArgs in build_app
@serve.ingress(api)
class SearchIngress:
    def __init__(self, manifest: dict, batch_size: int, batch_wait_s: float, encoder: DeploymentHandle,
                 *shards: DeploymentHandle):
        self.manifest = IndexManifest.model_validate(manifest)
        self._search_batch.set_max_batch_size(batch_size)
        self._search_batch.set_batch_wait_timeout_s(batch_wait_s)
        self.encoder = encoder
        self.shards = list(shards)
        if len(self.shards) != self.manifest.n_shards:
            raise IndexRefusedError(f"{len(self.shards)} shard deployments for {self.manifest.n_shards} shards")
        self._images: dict[str, bytes] = {}

    @api.post("/v1/search", response_model=SearchResponse, summary="top-k products for a persona")
    async def search(self, req: SearchRequest) -> SearchResponse:
        started = time.perf_counter()
        scores, ids, records = await self._search_batch(req.persona, req.k)
        hits = [Hit(rank=r + 1, score=float(scores[r]), **records[iid]) for r, iid in enumerate(ids)]
        return SearchResponse(hits=hits, index_version=self.manifest.version,
                              checkpoint_id=self.manifest.checkpoint_id,
                              took_ms=round((time.perf_counter() - started) * 1000, 3))

    # several batches in flight: a batch waits ~tens of ms on the encoder and shards, and with one
    # at a time (Serve's default) throughput would be capped at batch size / round trip
    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.002, max_concurrent_batches=4)
    async def _search_batch(self, personas: list[str], ks: list[int]) -> list[tuple[np.ndarray, list[str], dict]]:
        """Concurrent searches share one encoder call and one call per shard: the Serve hops (the
        costly part on small CPUs) are paid per batch, not per request. The merge stays exact."""
        vecs = await self.encoder.encode.remote(list(personas))
        kmax = max(ks)
        parts = await asyncio.gather(*[s.search.remote(vecs, kmax) for s in self.shards])
        scores, ids = merge_topk([(p[0], p[1]) for p in parts], kmax)
        records = {iid: rec for p in parts for iid, rec in p[2].items()}
        return [(scores[i, :k], ids[i][:k], {iid: records[iid] for iid in ids[i][:k]}) for i, k in enumerate(ks)]

    @api.get("/v1/items/{item_id}", response_model=Item, summary="one product", responses={404: {}})
    async def item(self, item_id: str) -> Item:
        found = await self.shards[shard_of(item_id, len(self.shards))].item.remote(item_id)
        if found is None:
            raise HTTPException(status_code=404, detail=f"no item {item_id!r} in index {self.manifest.version}")
        return Item(**found)

    @api.get("/v1/items/{item_id}/image", summary="the product image (from the indexed catalog)",
             response_class=Response, responses={200: {"content": {"image/png": {}, "image/jpeg": {}}}, 404: {}})
    async def image(self, item_id: str) -> Response:
        data = self._images.get(item_id)
        if data is None and self.manifest.dataset_root:
            data = await asyncio.to_thread(_read_image, self.manifest.dataset_root, item_id)
            if data is not None and len(self._images) < 10_000:
                self._images[item_id] = data
        if data is None:
            raise HTTPException(status_code=404, detail=f"no image for item {item_id!r}")
        media = "image/jpeg" if data[:3] == b"\xff\xd8\xff" else "image/png" if data[:4] == b"\x89PNG" \
            else "application/octet-stream"
        return Response(content=data, media_type=media)

    @api.get("/healthz", response_model=Health, summary="liveness")
    async def healthz(self) -> Health:
        return Health(status="ok", index_version=self.manifest.version)

    @api.get("/readyz", response_model=Health, summary="readiness: encoder and every shard answer",
             responses={503: {"model": Health}})
    async def readyz(self):
        try:
            await asyncio.wait_for(asyncio.gather(self.encoder.info.remote(),
                                                  *[s.ready.remote() for s in self.shards]), timeout=5)
        except Exception as err:  # noqa: BLE001 - any failure means not ready
            from fastapi.responses import JSONResponse

            return JSONResponse(status_code=503, content=Health(status="unavailable", index_version=self.manifest.version,
                                                                detail={"error": repr(err)[:500]}).model_dump())
        return Health(status="ready", index_version=self.manifest.version)


# --------------------------------------------------------------------------------------------
# builder


def checkpoint_identity(checkpoint: str) -> tuple[str, int | None]:
    """(content hash, embed dim or None) of a student checkpoint, from its student.json (no weights loaded)."""
    from distill.student import read_checkpoint_meta

    meta = read_checkpoint_meta(checkpoint)
    cfg = meta.get("model_cfg") or {}
    return meta["checkpoint_id"], cfg.get("embed_dim")


class _Identity:
    def __init__(self, checkpoint_id: str, checkpoint_hash: str, dim: int):
        self.checkpoint_id, self.checkpoint_hash, self.dim = checkpoint_id, checkpoint_hash, dim


def build_app(args: SearchAppArgs) -> serve.Application:
    """The search application for one index version (see the module docstring); ``args`` may be a dict."""
    args = args if isinstance(args, SearchAppArgs) else SearchAppArgs.model_validate(args)
    if "://" not in args.index_root:  # replicas run elsewhere: pin a relative path to where the app is built
        import os

        args = args.model_copy(update={"index_root": os.path.abspath(os.path.expanduser(args.index_root))})
    version = resolve_version(args.index_root, args.index_version)
    manifest = read_manifest(args.index_root, version)
    checkpoint = args.checkpoint or manifest.checkpoint_uri
    if not checkpoint:
        raise IndexRefusedError(f"index {version!r} records no student checkpoint; set `checkpoint`")
    ckpt_hash, dim = checkpoint_identity(checkpoint)
    check_encoder(manifest, _Identity(checkpoint, ckpt_hash, dim if dim is not None else manifest.dim))
    m = manifest.model_dump(mode="json")
    logging = {"enable_access_log": args.access_log}
    surge = args.rollout_surge_percent
    encoder = QueryEncoder.options(
        autoscaling_config=args.encoder_autoscaling.as_config(), logging_config=logging, max_surge_percent=surge,
        ray_actor_options={"num_cpus": args.encoder_cpus, "num_gpus": args.encoder_gpus},
    ).bind(checkpoint, m, args.device, args.torch_threads, args.encoder_batch_size, args.encoder_batch_wait_s)
    shards = [
        ShardSearcher.options(name=f"Shard{s}", autoscaling_config=args.shard_autoscaling.as_config(),
                              logging_config=logging, max_surge_percent=surge,
                              ray_actor_options={"num_cpus": args.shard_cpus}).bind(
            args.index_root, m, s, args.search_params, args.verify_checksums, args.faiss_threads,
            args.shard_batch_size, args.shard_batch_wait_s)
        for s in range(manifest.n_shards)
    ]
    return SearchIngress.options(autoscaling_config=args.ingress_autoscaling.as_config(), logging_config=logging,
                                 max_ongoing_requests=args.ingress_max_ongoing_requests,
                                 max_queued_requests=args.max_queued_requests, max_surge_percent=surge,
                                 ray_actor_options={"num_cpus": args.ingress_cpus}).bind(
        m, args.ingress_batch_size, args.ingress_batch_wait_s, encoder, *shards)
