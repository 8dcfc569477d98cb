"""The search endpoint: request limits, serve config, refusal of mismatched state, and real HTTP
on 127.0.0.1 against a tiny index (same top-k as exact in-process search, 4xx, OpenAPI, fuzzing,
load shedding)."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import yaml
from pydantic import ValidationError

from serving.index import IndexBuildConfig, IndexRefusedError, build_index, embeddings_table, normalize

REPO = Path(__file__).resolve().parents[1]
N_ITEMS = 400


@pytest.fixture(scope="module")
def tiny_student(tmp_path_factory):
    """The tiny-test student (dim 32), saved as a checkpoint; and a second, different one."""
    import torch

    from distill.student import StudentConfig, build_student

    root = tmp_path_factory.mktemp("students")
    torch.manual_seed(0)
    a = build_student(StudentConfig(arch="tiny-test"))
    ha = a.save(str(root / "a"))
    torch.manual_seed(1)
    hb = build_student(StudentConfig(arch="tiny-test")).save(str(root / "b"))
    return {"a": str(root / "a"), "hash_a": ha, "b": str(root / "b"), "hash_b": hb}


def _make_index(root, ckpt, ckpt_hash, n_shards=2, seed=0, version=None, dim=32):
    rng = np.random.default_rng(seed)
    vecs = normalize(rng.standard_normal((N_ITEMS, dim)).astype(np.float32))
    ids = [f"sku-{i:04d}" for i in range(N_ITEMS)]
    table = embeddings_table(ids, vecs, [f"product {i}" for i in range(N_ITEMS)],
                             [f"/v1/items/sku-{i:04d}/image" for i in range(N_ITEMS)])
    return build_index(table, str(root), ckpt, ckpt_hash, IndexBuildConfig(n_shards=n_shards, version=version),
                       progress=False, checkpoint_uri=ckpt)


# ---------------------------------------------------------------------------------------------
# fast: models, config, builder refusal


def test_search_request_limits():
    from serving.app import MAX_K, SearchRequest

    assert SearchRequest(persona="  a gardener  ").model_dump() == {"persona": "a gardener", "k": 10}
    for bad in ({"persona": ""}, {"persona": "   "}, {"persona": "x", "k": 0}, {"persona": "x", "k": MAX_K + 1},
                {"persona": "x" * 2001}, {"persona": "x", "extra": 1}, {"persona": 3}, {}):
        with pytest.raises(ValidationError):
            SearchRequest.model_validate(bad)
    assert SearchRequest(persona="x", k=MAX_K).k == 1000


def test_serve_config_validates():
    from ray.serve.schema import ServeDeploySchema

    from serving.app import SearchAppArgs

    cfg = yaml.safe_load((REPO / "configs" / "serve.yaml").read_text())
    schema = ServeDeploySchema.model_validate(cfg) if hasattr(ServeDeploySchema, "model_validate") \
        else ServeDeploySchema.parse_obj(cfg)
    (app,) = schema.applications
    assert app.import_path == "serving.app:build_app"
    args = SearchAppArgs.model_validate(app.args)
    assert args.index_version is None and args.shard_autoscaling.max_replicas >= 1


def test_index_job_config_validates():
    from distill.config import build_config
    from serving.pipeline import IndexJobConfig

    cfg = build_config(IndexJobConfig, (REPO / "configs" / "index.yaml").read_text(), ["index.n_shards=3"])
    assert cfg.index.n_shards == 3 and cfg.embed.num_gpus == 0


def test_builder_refuses_mismatched_encoder(tmp_path, tiny_student):
    from serving.app import build_app

    _make_index(tmp_path / "idx", tiny_student["a"], tiny_student["hash_a"])
    build_app({"index_root": str(tmp_path / "idx")})  # the right student: builds
    with pytest.raises(IndexRefusedError, match="checkpoint hash"):
        build_app({"index_root": str(tmp_path / "idx"), "checkpoint": tiny_student["b"]})
    _make_index(tmp_path / "idx64", tiny_student["a"], tiny_student["hash_a"], dim=64)
    with pytest.raises(IndexRefusedError, match="dimension: index has 64, encoder produces 32"):
        build_app({"index_root": str(tmp_path / "idx64")})
    with pytest.raises(IndexRefusedError, match="no index"):
        build_app({"index_root": str(tmp_path / "missing")})


# ---------------------------------------------------------------------------------------------
# slow: a real Serve app over HTTP on 127.0.0.1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _call(base, path, body=None, raw=None, method=None, timeout=30):
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(base + path, data=data, method=method or ("POST" if data is not None else "GET"),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def _args(root: str, **extra) -> dict:
    """Small CPU reservations: the test Ray has 2 CPUs, and a rolling update runs old and new replicas."""
    one = {"min_replicas": 1, "max_replicas": 1}
    return {"index_root": root, "ingress_cpus": 0.05, "encoder_cpus": 0.05, "shard_cpus": 0.05,
            "ingress_autoscaling": one, "encoder_autoscaling": one, "shard_autoscaling": one, **extra}


@pytest.fixture(scope="module")
def endpoint(ray_local, tiny_student, tmp_path_factory):
    from ray import serve

    from serving.app import build_app

    root = tmp_path_factory.mktemp("index")
    _make_index(root, tiny_student["a"], tiny_student["hash_a"], n_shards=3, version="v1")
    port = _free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build_app(_args(str(root))), name="search-test", route_prefix="/")
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while _call(base, "/readyz")[0] != 200 and time.time() < deadline:
        time.sleep(0.5)
    yield {"base": base, "root": str(root), "port": port}
    serve.delete("search-test")
    serve.shutdown()


@pytest.mark.slow
def test_http_search_equals_in_process_exact(endpoint, tiny_student):
    from serving.encoders import load_encoder
    from serving.index import ShardedIndex

    enc = load_encoder(tiny_student["a"])
    index = ShardedIndex(endpoint["root"])
    for persona, k in [("a gift for a mother who loves gardening", 10), ("a reserved mechanic", 1),
                       ("someone who likes cats and rockets", 1000)]:
        status, body = _call(endpoint["base"], "/v1/search", {"persona": persona, "k": k})
        assert status == 200, body
        res = json.loads(body)
        want_s, want_i = index.search(enc.encode_texts([persona]), k)
        assert [h["item_id"] for h in res["hits"]] == want_i[0]
        np.testing.assert_allclose([h["score"] for h in res["hits"]], want_s[0][:len(want_i[0])], atol=1e-4)
        assert res["index_version"] == "v1" and len(res["hits"]) == min(k, N_ITEMS)
        first = res["hits"][0]
        assert first["rank"] == 1 and first["title"].startswith("product ") and first["image_uri"]


@pytest.mark.slow
def test_http_bad_requests_are_4xx_and_service_survives(endpoint):
    base = endpoint["base"]
    bad = [{"persona": ""}, {"persona": "   "}, {"persona": "x", "k": 0}, {"persona": "x", "k": 1001},
           {"persona": "x" * 5000}, {"persona": ["x"]}, {"persona": "x", "k": "ten"}, {"k": 3}, [1, 2], "x"]
    for body in bad:
        status, text = _call(base, "/v1/search", body)
        assert 400 <= status < 500, (body, status, text)
        assert json.loads(text)["detail"]
    for raw in (b"{not json", b"", b"\xff\xfe"):
        status, _ = _call(base, "/v1/search", raw=raw, method="POST")
        assert 400 <= status < 500, (raw, status)
    assert _call(base, "/v1/search", method="GET")[0] == 405
    assert _call(base, "/v1/items/does-not-exist")[0] == 404
    assert _call(base, "/v1/search", {"persona": "still serving", "k": 3})[0] == 200


@pytest.mark.slow
def test_http_items_health_openapi(endpoint):
    base = endpoint["base"]
    status, body = _call(base, "/v1/items/sku-0007")
    assert status == 200 and json.loads(body) == {"item_id": "sku-0007", "title": "product 7",
                                                  "image_uri": "/v1/items/sku-0007/image"}
    assert json.loads(_call(base, "/healthz")[1])["status"] == "ok"
    assert json.loads(_call(base, "/readyz")[1]) == {"status": "ready", "index_version": "v1", "detail": None}
    status, body = _call(base, "/openapi.json")
    spec = json.loads(body)
    assert status == 200 and {"/v1/search", "/v1/items/{item_id}", "/healthz", "/readyz"} <= set(spec["paths"])
    assert spec["components"]["schemas"]["SearchRequest"]["properties"]["k"]["maximum"] == 1000
    assert _call(base, "/docs")[0] == 200


@pytest.mark.slow
def test_http_openapi_fuzz_no_5xx(endpoint):
    schemathesis = pytest.importorskip("schemathesis")
    from hypothesis import HealthCheck, settings

    from hypothesis import given
    from hypothesis.errors import Unsatisfiable
    from schemathesis.generation.modes import GenerationMode

    schema = schemathesis.openapi.from_url(endpoint["base"] + "/openapi.json")
    failures, seen = [], []
    for op in schema.get_all_operations():
        operation = op.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @settings(max_examples=30, deadline=None, database=None, suppress_health_check=list(HealthCheck))
            @given(operation.as_strategy(generation_mode=mode))
            def run(case):
                response = case.call(base_url=endpoint["base"], timeout=30)
                seen.append((operation.path, response.status_code))
                if response.status_code >= 500:
                    failures.append((operation.path, case.body, case.path_parameters, response.status_code))

            try:
                run()
            except Unsatisfiable:  # nothing can be made invalid (e.g. GET /healthz has no inputs)
                assert mode is GenerationMode.NEGATIVE
    assert not failures, failures[:5]
    print(f"fuzzed {len(seen)} requests: " + str(sorted({(p, c): 0 for p, c in seen})))
    assert len(seen) >= 100 and any(c == 422 for _, c in seen) and any(c == 200 for _, c in seen)
    assert _call(endpoint["base"], "/v1/search", {"persona": "after fuzzing", "k": 2})[0] == 200


@pytest.mark.slow
def test_corrupt_shard_refused_by_serve(endpoint, tiny_student, tmp_path):
    """A shard whose bytes do not match the manifest never becomes a replica; the app fails to deploy."""
    from ray import serve

    from serving.app import build_app

    m = _make_index(tmp_path / "bad", tiny_student["a"], tiny_student["hash_a"], n_shards=1)
    path = tmp_path / "bad" / "versions" / m.version / m.shards[0].index_file
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(RuntimeError, match="bad-index"):
        serve.run(build_app(_args(str(tmp_path / "bad"))), name="bad-index", route_prefix="/bad")
    status = serve.status().applications["bad-index"]
    messages = " ".join([status.message] + [d.message for d in status.deployments.values()])
    assert "checksum mismatch" in messages and "shard-00000.faiss" in messages, messages[-800:]
    serve.delete("bad-index")
    assert _call(endpoint["base"], "/v1/search", {"persona": "the other app is unaffected", "k": 2})[0] == 200


@pytest.mark.slow
def test_index_version_swap_is_a_rolling_config_change(endpoint, tiny_student):
    """Deploying index_version=v2 while clients search: no request fails, and v2 takes over."""
    from ray import serve

    from serving.app import build_app

    base, root = endpoint["base"], endpoint["root"]
    _make_index(root, tiny_student["a"], tiny_student["hash_a"], n_shards=3, seed=7, version="v2")
    statuses, versions, stop = [], set(), threading.Event()

    def client():
        while not stop.is_set():
            status, body = _call(base, "/v1/search", {"persona": "a cyclist", "k": 5})
            statuses.append(status)
            if status == 200:
                versions.add(json.loads(body)["index_version"])

    threads = [threading.Thread(target=client) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        serve.run(build_app(_args(root, index_version="v2")), name="search-test", route_prefix="/")
        deadline = time.time() + 60
        while time.time() < deadline:
            status, body = _call(base, "/v1/search", {"persona": "a cyclist", "k": 5})
            if status == 200 and json.loads(body)["index_version"] == "v2":
                break
            time.sleep(0.2)
        time.sleep(1.0)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert statuses and set(statuses) == {200}, {s: statuses.count(s) for s in set(statuses)}
    assert "v2" in versions


@pytest.mark.slow
def test_ingress_sheds_load_past_capacity_and_recovers(endpoint):
    """With room for one search in flight and one queued, a burst of concurrent searches gets 503s
    for the excess (answered, not left to time out), the admitted ones succeed, and the service
    answers normally afterwards. Redeploys the module's app, so it runs last."""
    from ray import serve

    from serving.app import build_app

    base = endpoint["base"]
    # a slow encoder batch (it waits 0.5 s to fill) keeps the admitted searches in flight
    serve.run(build_app(_args(endpoint["root"], ingress_max_ongoing_requests=1, max_queued_requests=1,
                              encoder_batch_wait_s=0.5)), name="search-test", route_prefix="/")
    deadline = time.time() + 60
    while time.time() < deadline:
        status, body = _call(base, "/v1/search", {"persona": "a cyclist", "k": 3})
        if status == 200 and json.loads(body)["took_ms"] >= 400:  # the slow encoder is live
            break
        time.sleep(0.2)
    else:
        pytest.fail("the redeployed app never served a search through the slow encoder")

    statuses: list[int] = []
    start = threading.Barrier(12)

    def client():
        start.wait()
        statuses.append(_call(base, "/v1/search", {"persona": "a burst of shoppers", "k": 3}, timeout=20)[0])

    threads = [threading.Thread(target=client) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    counts = {s: statuses.count(s) for s in set(statuses)}
    assert set(statuses) == {200, 503}, counts
    assert counts[503] >= 6, counts  # at most 1 running + 1 queued at a time, each for ~0.5 s
    status, body = _call(base, "/v1/search", {"persona": "after the burst", "k": 3})
    assert status == 200 and len(json.loads(body)["hits"]) == 3
