"""The Ray Serve application: one hop when the index fits a replica, shard deployments when not.

    serve run configs/serve.yaml                       # or: serve deploy configs/serve.yaml
    serve run serving.app:build_app index_root=/path/to/index

Routes (FastAPI; OpenAPI with examples at ``/docs`` and ``/openapi.json``, contract in
``serving.api``): ``POST /v1/search`` (a persona), ``/v1/search/batch`` (several personas),
``/v1/search/vector`` (an embedding), ``/v1/search/item`` (more like an indexed product),
``/v1/search/image`` (an uploaded image); each takes ``k`` and, except the image route,
attribute ``filters`` applied inside the search. ``GET /v1/items/{id}``, ``/v1/items/{id}/image``,
``/healthz``, ``/readyz``.

Layouts (``layout: auto`` picks; the choice and its reason are printed when the app is built):

* ``one_hop`` - when the index fits one replica's memory budget (``replica_memory_mb``, checked
  against the per-shard sizes in the manifest): the ingress replica holds the query encoder and
  every shard and answers a search in-process. Every Serve hop costs a few ms of CPU on each
  side, more than encoding plus searching one persona on a small machine, so the hops are what
  to remove. Concurrent searches are gathered with ``@serve.batch`` and worked on *on the
  replica's event loop* (one encoder call, one FAISS call per batch): handing each batch to a
  thread lets requests trickle in one by one and batches stay near size 1.
* ``sharded`` - when it does not fit: ``QueryEncoder`` and ``Shard0..Shard{S-1}`` deployments,
  each shard replica requesting the memory its shard needs (Ray places them by it); the ingress
  fans a batch out and merges the per-shard top-k exactly. Same answers as ``one_hop`` (tested).

Query text is encoded by the student's text tower exported to ONNX (``query_encoder: onnx``,
``distill.export``) or by torch, behind a bounded LRU cache of persona embeddings.

Past capacity the endpoint sheds instead of queueing without bound: beyond the ingress replicas'
``ingress_max_ongoing_requests`` plus ``max_queued_requests`` waiting, Serve's proxy answers 503
with ``Retry-After``; a search whose shard or encoder replica died mid-request is also a 503 with
``Retry-After`` (Serve restarts the replica). Both are counted in the metrics (``serving.metrics``).

The app refuses to start when the index manifest does not match the student (dimension,
checkpoint hash) or a shard file fails its checksum. An index version swap is a config change
(``index_version``): Serve rolls the replicas over; ``rollout_surge_percent`` starts the new
ones before the old ones stop.
"""

# (no `from __future__ import annotations`: FastAPI must see real types on the ingress methods)

import asyncio
import time
from typing import Any, Literal

import numpy as np
from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from ray import serve
from ray.serve.handle import DeploymentHandle

from serving import api as contract
from serving.api import (
    MAX_K,
    BatchSearchRequest,
    BatchSearchResponse,
    Health,
    Hit,
    HitList,
    Item,
    ItemSearchRequest,
    SearchRequest,
    SearchResponse,
    VectorSearchRequest,
    errors,
)
from serving.index import (
    IndexManifest,
    IndexRefusedError,
    check_encoder,
    merge_topk,
    read_manifest,
    resolve_version,
    shard_of,
    version_dir,
)

__all__ = ["MAX_K", "SearchAppArgs", "SearchRequest", "build_app", "plan_layout"]


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
    layout: Literal["auto", "one_hop", "sharded"] = Field("auto", description=(
        "one_hop: the ingress encodes and searches in-process (no Serve hop per search); sharded: encoder "
        "and shard deployments; auto: one_hop when the index fits replica_memory_mb"))
    replica_memory_mb: int = Field(4096, ge=64, description=(
        "memory budget of one replica: the one-hop layout is chosen when the encoder plus every shard fits"))
    query_encoder: Literal["onnx", "torch"] = Field("onnx", description=(
        "text tower for queries: onnx (the student's ONNX export under ONNX Runtime; exported at replica "
        "start when onnx_dir holds none) or torch (eager)"))
    onnx_dir: str | None = Field(None, description="directory of `python -m distill.export` output; default a "
                                 "per-checkpoint cache directory the replica exports into")
    query_cache_size: int = Field(10_000, ge=0, description="persona embeddings kept in an LRU (0 = no cache)")
    encoder_batch_size: int = Field(16, ge=1, le=1024)
    encoder_batch_wait_s: float = Field(0.004, ge=0, le=1)
    ingress_batch_size: int = Field(32, ge=1, le=1024, description="concurrent searches worked on together")
    ingress_batch_wait_s: float = Field(0.002, ge=0, le=1)
    shard_batch_size: int = Field(32, ge=1, le=1024)
    shard_batch_wait_s: float = Field(0.002, ge=0, le=1)
    torch_threads: int = Field(1, ge=1, description="torch / ONNX Runtime threads per encoding replica")
    faiss_threads: int = Field(1, ge=1, description="OpenMP threads per searching replica")
    device: str = Field("cpu", description="encoder device ('cuda' on GPU nodes; then set encoder_gpus)")
    encoder_gpus: float = Field(0, ge=0)
    ingress_cpus: float = Field(0.1, ge=0, description="CPUs reserved per ingress replica")
    encoder_cpus: float = Field(0.5, ge=0, description="CPUs reserved per encoder replica")
    shard_cpus: float = Field(0.25, ge=0, description="CPUs reserved per shard replica")
    ingress_max_ongoing_requests: int = Field(64, ge=1, description="searches one ingress replica works on at once")
    max_queued_requests: int = Field(64, ge=-1, description=(
        "searches the ingress queues beyond its replicas' max_ongoing_requests before the proxy answers 503 "
        "(load shedding: past capacity, a fast 503 a client can retry beats a timeout; -1 = unbounded)"))
    retry_after_s: float = Field(1.0, ge=0, description="Retry-After of a shed search's 503")
    rollout_surge_percent: int = Field(100, ge=0, le=100, description=(
        "extra replicas a rolling update may start (% of each deployment's target): with 100 the old "
        "replicas keep serving until their replacements are ready, so an index swap drops nothing; "
        "0 stops old replicas first (needs no spare resources, but searches wait meanwhile)"))
    access_log: bool = Field(True, description="Serve's per-request access log lines on every deployment "
                             "(turn off at high QPS on small machines)")
    ingress_autoscaling: Autoscaling = Field(default_factory=lambda: Autoscaling(target_ongoing_requests=32))
    encoder_autoscaling: Autoscaling = Field(default_factory=lambda: Autoscaling(target_ongoing_requests=16))
    shard_autoscaling: Autoscaling = Field(default_factory=lambda: Autoscaling(target_ongoing_requests=16))


# --------------------------------------------------------------------------------------------
# memory plan


ENCODER_MB = 600  # a student (both towers) plus ONNX Runtime session and tokenizer, measured ~450 MB
ITEM_BYTES = 160  # per item: id, title, uri and attribute strings as Python objects, label map


def shard_bytes(root: str, manifest: IndexManifest) -> list[int]:
    """Serialised size of each shard, from the manifest (older manifests: the files' sizes)."""
    from distill import storage

    out = []
    for info in manifest.shards:
        if info.index_bytes is not None:
            out.append(int(info.index_bytes))
        else:
            fs, path = storage.resolve(storage.join(version_dir(root, manifest.version), info.index_file))
            out.append(int(fs.get_file_info(path).size))
    return out


def shard_memory_mb(index_bytes: int, n_items: int) -> int:
    """What a replica holding one shard needs: the index, its items, and the file bytes while loading."""
    return int((2 * index_bytes + n_items * ITEM_BYTES) / 2**20) + 128


class LayoutPlan(BaseModel):
    layout: Literal["one_hop", "sharded"]
    needed_mb: int = Field(description="memory the one-hop replica would need")
    budget_mb: int
    shard_mb: list[int]
    reason: str


def plan_layout(root: str, manifest: IndexManifest, args: SearchAppArgs) -> LayoutPlan:
    sizes = shard_bytes(root, manifest)
    # the manifest's own estimate of a shard replica's memory when the build recorded it
    shard_mb = [int(s.memory_bytes / 2**20) + 128 if s.memory_bytes else shard_memory_mb(b, s.n_items)
                for b, s in zip(sizes, manifest.shards)]
    needed = ENCODER_MB + sum(shard_mb) - 128 * (len(shard_mb) - 1)
    fits = needed <= args.replica_memory_mb
    layout = ("one_hop" if fits else "sharded") if args.layout == "auto" else args.layout
    why = (f"index {sum(sizes) / 2**20:,.0f} MB in {manifest.n_shards} shard(s): one replica needs ~{needed:,} MB, "
           f"budget {args.replica_memory_mb:,} MB ({'fits' if fits else 'does not fit'})")
    reason = f"{why}; layout={args.layout} -> {layout}"
    return LayoutPlan(layout=layout, needed_mb=needed, budget_mb=args.replica_memory_mb, shard_mb=shard_mb,
                      reason=reason)


# --------------------------------------------------------------------------------------------
# the query encoder (in the ingress for one_hop, a deployment for sharded)


class Encoders:
    """The student's two towers for queries: text through ONNX or torch behind an LRU; images in torch."""

    def __init__(self, checkpoint: str, manifest: IndexManifest, kind: str, onnx_dir: str | None, device: str,
                 threads: int, cache_size: int):
        from serving.encoders import CachedTextEncoder, load_encoder, onnx_text_encoder

        self.student = load_encoder(checkpoint, device=device, torch_threads=threads)
        check_encoder(manifest, self.student)
        text = onnx_text_encoder(self.student, onnx_dir, threads) if kind == "onnx" else self.student
        check_encoder(manifest, text)  # an ONNX export of another checkpoint is refused here
        self.text = CachedTextEncoder(text, cache_size)
        self.kind = kind
        self.text.encode_texts(["warm-up"])

    def info(self) -> dict:
        return {"checkpoint_id": self.student.checkpoint_id, "checkpoint_hash": self.student.checkpoint_hash,
                "dim": self.student.dim, "query_encoder": self.kind}


@serve.deployment(max_ongoing_requests=64)
class QueryEncoder:
    """The student's towers as a deployment (sharded layout), batched across ingress replicas."""

    def __init__(self, checkpoint: str, manifest: dict, kind: str, onnx_dir: str | None, device: str, threads: int,
                 cache_size: int, batch_size: int, batch_wait_s: float):
        from serving.metrics import SearchMetrics

        m = IndexManifest.model_validate(manifest)
        self.encoders = Encoders(checkpoint, m, kind, onnx_dir, device, threads, cache_size)
        self.metrics = SearchMetrics(m.version, "sharded")
        self.encode.set_max_batch_size(batch_size)
        self.encode.set_batch_wait_timeout_s(batch_wait_s)

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.004)
    async def encode(self, batches: list[list[str]]) -> list[np.ndarray]:
        """Each call carries a list of personas (one ingress batch); concurrent calls are encoded
        together, on the event loop (a thread would let calls trickle in one at a time)."""
        vecs = self.encoders.text.encode_texts([t for b in batches for t in b])
        self.metrics.encoded(self.encoders.text.last_encoded, sum(len(b) for b in batches))
        bounds = np.cumsum([0] + [len(b) for b in batches])
        return [vecs[lo:hi] for lo, hi in zip(bounds[:-1], bounds[1:])]

    def encode_images(self, images: list[bytes]) -> np.ndarray:
        return self.encoders.student.encode_images(images)

    def info(self) -> dict:
        return self.encoders.info()


@serve.deployment(max_ongoing_requests=128)
class ShardSearcher:
    """One FAISS shard (sha256-verified at start); concurrent queries are searched as one batch."""

    def __init__(self, index_root: str, manifest: dict, shard: int, search_params: str | None, verify: bool,
                 faiss_threads: int, batch_size: int, batch_wait_s: float):
        from serving.search import LocalIndex

        m = IndexManifest.model_validate(manifest)
        self.local = LocalIndex(index_root, m, [shard], verify=verify, search_params=search_params,
                                omp_threads=faiss_threads)
        self.shard = shard
        self.search.set_max_batch_size(batch_size)
        self.search.set_batch_wait_timeout_s(batch_wait_s)

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.002)
    async def search(self, queries: list[np.ndarray], ks: list[int], filters: list[dict | None]
                     ) -> list[tuple[list[np.ndarray], list[list[str]], dict[str, dict]]]:
        """Per call (a (n, D) block of query vectors, its k and filter): this shard's scores and ids per
        row plus the records of those items; concurrent calls are searched together."""
        d = self.local.manifest.dim
        blocks = [np.asarray(v, np.float32).reshape(-1, d) for v in queries]
        rows_k = [k for v, k in zip(blocks, ks) for _ in range(len(v))]
        rows_f = [f for v, f in zip(blocks, filters) for _ in range(len(v))]
        res = self.local.search_many(np.concatenate(blocks), rows_k, rows_f)
        out, r = [], 0
        for v in blocks:
            part = res[r:r + len(v)]
            r += len(v)
            out.append(([s for s, _ in part], [ids for _, ids in part], self.local.records([ids for _, ids in part])))
        return out

    def vector_of(self, item_id: str) -> np.ndarray | None:
        return self.local.vector_of(item_id)

    def item(self, item_id: str) -> dict | None:
        return self.local.item(item_id)

    def ready(self) -> dict:
        return {"shard": self.shard, "version": self.local.version, "n_items": len(self.local)}


def _read_image(dataset_root: str, item_id: str) -> bytes | None:
    import pyarrow.compute as pc

    from distill import datasets, storage
    from distill.schemas import CATALOG_SCHEMA

    table = storage.read_table(datasets.catalog_dir(dataset_root), columns=["image"], schema=CATALOG_SCHEMA,
                               filter=pc.field("item_id") == item_id)
    return table.column("image")[0].as_py() if len(table) else None


# --------------------------------------------------------------------------------------------
# the ingress


api = FastAPI(
    title="persona-distill search",
    description="Products a persona would pick: the distilled student's text tower embeds the persona "
                "(or its image tower an uploaded image), a FAISS index of its image embeddings returns the "
                "top-k, optionally filtered by product attributes.",
    version="2",
)
api.add_exception_handler(RequestValidationError, contract.validation_error_handler)


@api.middleware("http")
async def _media_types(request: Request, call_next):
    problem = contract.media_type_problem(request.url.path, request.method, request.headers.get("content-type"))
    if problem:
        return JSONResponse(status_code=problem[0], content={"detail": problem[1]})
    return await call_next(request)


class Unavailable(Exception):
    """A replica the search needed died or was overloaded: 503 with Retry-After, never a 500."""


def _is_unavailable(err: BaseException) -> bool:
    from ray.exceptions import RayActorError
    from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError

    return isinstance(err, (RayActorError, BackPressureError, DeploymentUnavailableError, Unavailable)) or \
        type(err).__name__ in ("ActorDiedError", "ActorUnavailableError", "RayActorError")


def _hits(scores, ids, records) -> list[Hit]:
    return [Hit(rank=r + 1, score=float(scores[r]), **records[iid]) for r, iid in enumerate(ids)]


@serve.deployment  # options (memory, queue, shedding) set by build_app from SearchAppArgs
@serve.ingress(api)
class SearchIngress:
    def __init__(self, manifest: dict, cfg: dict, encoder: DeploymentHandle | None, *shards: DeploymentHandle):
        from serving.metrics import SearchMetrics

        self.manifest = IndexManifest.model_validate(manifest)
        self.cfg = SearchAppArgs.model_validate(cfg)
        self.layout = "sharded" if encoder is not None else "one_hop"
        self.metrics = SearchMetrics(self.manifest.version, self.layout)
        self.encoder, self.shards = encoder, list(shards)
        self.local = self.encoders = None
        if self.layout == "one_hop":
            from serving.search import LocalIndex

            c = self.cfg
            self.encoders = Encoders(c.checkpoint or self.manifest.checkpoint_uri, self.manifest, c.query_encoder,
                                     c.onnx_dir, c.device, c.torch_threads, c.query_cache_size)
            self.local = LocalIndex(c.index_root, self.manifest, verify=c.verify_checksums,
                                    search_params=c.search_params, omp_threads=c.faiss_threads)
        elif len(self.shards) != self.manifest.n_shards:
            raise IndexRefusedError(f"{len(self.shards)} shard deployments for {self.manifest.n_shards} shards")
        batch = self._local_batch if self.layout == "one_hop" else self._remote_batch
        batch.set_max_batch_size(self.cfg.ingress_batch_size)
        batch.set_batch_wait_timeout_s(self.cfg.ingress_batch_wait_s)
        self._images: dict[str, bytes] = {}
        self._publish_dim()
        print(f"search ingress: layout={self.layout}, index {self.manifest.version} ({self.manifest.n_items:,} items, "
              f"{self.manifest.n_shards} shard(s)), query encoder {self.cfg.query_encoder}", flush=True)

    def _publish_dim(self) -> None:
        """State the index's dimension in the OpenAPI (the vector route's minItems/maxItems)."""
        dim = self.manifest.dim

        def openapi():
            if api.openapi_schema is None:
                from fastapi.openapi.utils import get_openapi

                spec = get_openapi(title=api.title, version=api.version, description=api.description,
                                   routes=api.routes)
                vec = spec["components"]["schemas"]["VectorSearchRequest"]["properties"]["vector"]
                vec["minItems"] = vec["maxItems"] = dim
                api.openapi_schema = spec
            return api.openapi_schema

        api.openapi_schema = None
        api.openapi = openapi

    # ---- the search paths -------------------------------------------------------------------
    async def _guarded(self, route: str, work):
        started = time.perf_counter()
        try:
            result = await work
        except HTTPException:
            raise
        except Exception as err:
            if _is_unavailable(err):
                self.metrics.shed_one("replica_unavailable")
                raise HTTPException(status_code=503, detail=f"a replica this search needs is unavailable "
                                    f"({type(err).__name__}); retry shortly",
                                    headers={"Retry-After": str(int(np.ceil(self.cfg.retry_after_s)))}) from None
            raise
        self.metrics.observe(route, (time.perf_counter() - started) * 1000,
                             sum(len(h) for h in result) if isinstance(result, list) else 0)
        return result

    async def _texts(self, personas: list[str], k: int, filters: dict | None) -> list[list[Hit]]:
        if self.layout == "one_hop":
            return await self._local_batch((personas, k, filters))
        return await self._remote_batch((personas, k, filters))

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.002, max_concurrent_batches=1)
    async def _local_batch(self, calls: list[tuple[list[str], int, dict | None]]) -> list[list[list[Hit]]]:
        """One encoder call and one FAISS call (per distinct filter) for all concurrent searches, on
        the event loop: while it runs, the next requests queue up and form the next batch."""
        texts = [t for p, _, _ in calls for t in p]
        vecs = self.encoders.text.encode_texts(texts)
        self.metrics.encoded(self.encoders.text.last_encoded, len(texts))
        ks = [k for p, k, _ in calls for _ in p]
        fs = [f for p, _, f in calls for _ in p]
        res = self.local.search_many(vecs, ks, fs)
        out, r = [], 0
        for p, _, _ in calls:
            part = res[r:r + len(p)]
            r += len(p)
            out.append([_hits(s, ids, self.local.records([ids])) for s, ids in part])
        return out

    # several batches in flight: a batch waits on the encoder and shard replicas
    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.002, max_concurrent_batches=4)
    async def _remote_batch(self, calls: list[tuple[list[str], int, dict | None]]) -> list[list[list[Hit]]]:
        texts = [t for p, _, _ in calls for t in p]
        vecs = await self.encoder.encode.remote(texts)
        ks = [k for p, k, _ in calls for _ in p]
        fs = [f for p, _, f in calls for _ in p]
        res, records = await self._fan_out(vecs, ks, fs)
        out, r = [], 0
        for p, _, _ in calls:
            out.append([_hits(s, ids, records) for s, ids in res[r:r + len(p)]])
            r += len(p)
        return out

    async def _fan_out(self, vecs: np.ndarray, ks: list[int], fs: list[dict | None]):
        """Every shard searches every row; per row an exact merge of the shards' top-k."""
        groups: dict = {}
        from serving.search import filter_key

        for r, f in enumerate(fs):
            groups.setdefault(filter_key(f), []).append(r)
        calls = [(rows, fs[rows[0]]) for rows in groups.values()]
        parts = await asyncio.gather(*[
            asyncio.gather(*[s.search.remote(vecs[rows], max(ks[r] for r in rows), f) for s in self.shards])
            for rows, f in calls])
        out: list = [None] * len(ks)
        records: dict[str, dict] = {}
        for (rows, _), per_shard in zip(calls, parts):
            kmax = max(ks[r] for r in rows)
            for p in per_shard:
                records.update(p[2])
            for i, r in enumerate(rows):
                scores, ids = merge_topk([(np.asarray([p[0][i]]), [p[1][i]]) for p in per_shard], kmax)
                n = min(ks[r], len(ids[0]))
                out[r] = (scores[0, :n], ids[0][:n])
        return out, records

    async def _vectors(self, vecs: np.ndarray, k: int, filters: dict | None) -> list[list[Hit]]:
        if self.layout == "one_hop":
            res = self.local.search_many(vecs, [k] * len(vecs), [filters] * len(vecs))
            return [_hits(s, ids, self.local.records([ids])) for s, ids in res]
        res, records = await self._fan_out(vecs, [k] * len(vecs), [filters] * len(vecs))
        return [_hits(s, ids, records) for s, ids in res]

    async def _vector_of(self, item_id: str) -> np.ndarray | None:
        if self.layout == "one_hop":
            return self.local.vector_of(item_id)
        return await self.shards[shard_of(item_id, len(self.shards))].vector_of.remote(item_id)

    def _response(self, hits: list[Hit], started: float) -> SearchResponse:
        return SearchResponse(hits=hits, index_version=self.manifest.version,
                              checkpoint_id=self.manifest.checkpoint_id,
                              took_ms=round((time.perf_counter() - started) * 1000, 3))

    # ---- routes -----------------------------------------------------------------------------
    @api.post("/v1/search", response_model=SearchResponse, summary="top-k products for a persona",
              responses=errors(400, 415, 422, 503))
    async def search(self, req: SearchRequest) -> SearchResponse:
        started = time.perf_counter()
        (hits,) = await self._guarded("/v1/search", self._texts([req.persona], req.k, req.filters))
        return self._response(hits, started)

    @api.post("/v1/search/batch", response_model=BatchSearchResponse, summary="top-k products for each of "
              "several personas", responses=errors(400, 415, 422, 503))
    async def search_batch(self, req: BatchSearchRequest) -> BatchSearchResponse:
        started = time.perf_counter()
        lists = await self._guarded("/v1/search/batch", self._texts(list(req.personas), req.k, req.filters))
        return BatchSearchResponse(results=[HitList(hits=h) for h in lists], index_version=self.manifest.version,
                                   checkpoint_id=self.manifest.checkpoint_id,
                                   took_ms=round((time.perf_counter() - started) * 1000, 3))

    @api.post("/v1/search/vector", response_model=SearchResponse, summary="top-k products for a query embedding",
              responses=errors(400, 415, 422, 503))
    async def search_vector(self, req: VectorSearchRequest) -> SearchResponse:
        started = time.perf_counter()
        if len(req.vector) != self.manifest.dim:
            raise HTTPException(status_code=422, detail=f"vector has {len(req.vector)} numbers; the index's "
                                f"dimension is {self.manifest.dim}")
        v = np.asarray(req.vector, np.float64)
        scale = np.abs(v).max()
        v = v / scale if scale > 0 else v  # no overflow for huge finite entries
        norm = np.linalg.norm(v)
        q = (v / norm if norm > 0 else v).astype(np.float32)[None, :]
        (hits,) = await self._guarded("/v1/search/vector", self._vectors(q, req.k, req.filters))
        return self._response(hits, started)

    @api.post("/v1/search/item", response_model=SearchResponse, summary="more like this: products nearest to an "
              "indexed product (itself excluded)", responses={404: {"model": contract.Problem,
                                                                     "description": "no such item"},
                                                                **errors(400, 415, 422, 503)})
    async def search_item(self, req: ItemSearchRequest) -> SearchResponse:
        started = time.perf_counter()

        async def work():
            vec = await self._vector_of(req.item_id)
            if vec is None:
                raise HTTPException(status_code=404, detail=f"no item {req.item_id!r} in index "
                                    f"{self.manifest.version}")
            (hits,) = await self._vectors(np.asarray(vec, np.float32)[None, :], req.k + 1, req.filters)
            hits = [h for h in hits if h.item_id != req.item_id][:req.k]
            return [[h.model_copy(update={"rank": r + 1}) for r, h in enumerate(hits)]]

        (hits,) = await self._guarded("/v1/search/item", work())
        return self._response(hits, started)

    @api.post("/v1/search/image", response_model=SearchResponse, summary="top-k products for an uploaded image",
              openapi_extra={"requestBody": contract.IMAGE_BODY},
              responses={413: {"model": contract.Problem, "description": "image too large"},
                         **errors(415, 422, 503)})
    async def search_image(self, request: Request,
                           k: int = Query(10, ge=1, le=MAX_K, description="number of products to return")
                           ) -> SearchResponse:
        started = time.perf_counter()
        ctype = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
        data = b""
        async for chunk in request.stream():
            data += chunk
            if len(data) > contract.MAX_IMAGE_BYTES:
                break
        problem = await asyncio.to_thread(contract.image_problem, data, ctype)
        if problem:
            raise HTTPException(status_code=problem[0], detail=problem[1])

        async def work():
            if self.layout == "one_hop":
                vec = await asyncio.to_thread(self.encoders.student.encode_images, [data])
            else:
                vec = await self.encoder.encode_images.remote([data])
            return await self._vectors(np.asarray(vec, np.float32), k, None)

        (hits,) = await self._guarded("/v1/search/image", work())
        return self._response(hits, started)

    @api.get("/v1/items/{item_id}", response_model=Item, summary="one product",
             responses={404: {"model": contract.Problem, "description": "no such item"}, **errors(503)})
    async def item(self, item_id: str) -> Item:
        async def work():
            if self.layout == "one_hop":
                return self.local.item(item_id)
            return await self.shards[shard_of(item_id, len(self.shards))].item.remote(item_id)

        found = await self._guarded("/v1/items", work())
        if found is None:
            raise HTTPException(status_code=404, detail=f"no item {item_id!r} in index {self.manifest.version}")
        return Item(**found)

    @api.get("/v1/items/{item_id}/image", summary="the product image (from the indexed catalog)",
             response_class=Response, responses={200: {"content": {"image/png": {}, "image/jpeg": {},
                                                                   "application/octet-stream": {}}},
                                                 404: {"model": contract.Problem, "description": "no image"}})
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
        return Health(status="ok", index_version=self.manifest.version, layout=self.layout)

    @api.get("/readyz", response_model=Health, summary="readiness: encoder and every shard answer",
             responses={503: {"model": Health, "description": "a replica the searches need does not answer"}})
    async def readyz(self):
        if self.layout == "sharded":
            try:
                await asyncio.wait_for(asyncio.gather(self.encoder.info.remote(),
                                                      *[s.ready.remote() for s in self.shards]), timeout=5)
            except Exception as err:  # noqa: BLE001 - any failure means not ready
                return JSONResponse(status_code=503, content=Health(
                    status="unavailable", index_version=self.manifest.version, layout=self.layout,
                    detail={"error": repr(err)[:500]}).model_dump())
        return Health(status="ready", index_version=self.manifest.version, layout=self.layout)


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
    from ray.serve.config import BackpressureConfig

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
    args = args.model_copy(update={"checkpoint": checkpoint})
    plan = plan_layout(args.index_root, manifest, args)
    print(f"serving layout: {plan.layout} ({plan.reason})", flush=True)
    m = manifest.model_dump(mode="json")
    logging = {"enable_access_log": args.access_log}
    surge = args.rollout_surge_percent
    ingress_opts = dict(autoscaling_config=args.ingress_autoscaling.as_config(), logging_config=logging,
                        max_ongoing_requests=args.ingress_max_ongoing_requests,
                        max_queued_requests=args.max_queued_requests, max_surge_percent=surge,
                        backpressure_config=BackpressureConfig(retry_after_s=args.retry_after_s))
    cfg = args.model_dump(mode="json")
    if plan.layout == "one_hop":
        return SearchIngress.options(**ingress_opts, ray_actor_options={
            "num_cpus": args.ingress_cpus, "num_gpus": args.encoder_gpus,
            "memory": plan.needed_mb * 2**20}).bind(m, cfg, None)
    encoder = QueryEncoder.options(
        autoscaling_config=args.encoder_autoscaling.as_config(), logging_config=logging, max_surge_percent=surge,
        ray_actor_options={"num_cpus": args.encoder_cpus, "num_gpus": args.encoder_gpus,
                           "memory": ENCODER_MB * 2**20},
    ).bind(checkpoint, m, args.query_encoder, args.onnx_dir, args.device, args.torch_threads, args.query_cache_size,
           args.encoder_batch_size, args.encoder_batch_wait_s)
    shards = [
        ShardSearcher.options(name=f"Shard{s}", autoscaling_config=args.shard_autoscaling.as_config(),
                              logging_config=logging, max_surge_percent=surge,
                              ray_actor_options={"num_cpus": args.shard_cpus, "memory": plan.shard_mb[s] * 2**20}
                              ).bind(args.index_root, m, s, args.search_params, args.verify_checksums,
                                     args.faiss_threads, args.shard_batch_size, args.shard_batch_wait_s)
        for s in range(manifest.n_shards)
    ]
    return SearchIngress.options(**ingress_opts, ray_actor_options={"num_cpus": args.ingress_cpus}).bind(
        m, cfg, encoder, *shards)
