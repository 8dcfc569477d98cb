"""The search endpoint: request contract, layout choice, serve config, refusal of mismatched state,
and real HTTP on 127.0.0.1 against a tiny index in both layouts (one hop and sharded): every query
kind equals exact in-process search, both layouts answer identically, 4xx contract, OpenAPI,
fuzzing, metrics, load shedding and a killed replica."""

from __future__ import annotations

import io
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

from serving.index import IndexBuildConfig, IndexRefusedError, build_index, embeddings_table, exact_search, normalize

REPO = Path(__file__).resolve().parents[1]
N_ITEMS = 400
ARTICLES = ["mug", "cap", "tote bag", "cushion"]


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


def _attrs(i: int) -> dict[str, str]:
    return {"article": ARTICLES[i % 4], "colour": ["red", "blue", "green"][i % 3]}


def _catalog(seed=0, dim=32):
    rng = np.random.default_rng(seed)
    vecs = normalize(rng.standard_normal((N_ITEMS, dim)).astype(np.float32))
    ids = [f"sku-{i:04d}" for i in range(N_ITEMS)]
    return ids, vecs


def _make_index(root, ckpt, ckpt_hash, n_shards=2, seed=0, version=None, dim=32):
    ids, vecs = _catalog(seed, dim)
    table = embeddings_table(ids, vecs, [f"product {i}" for i in range(N_ITEMS)],
                             [f"/v1/items/sku-{i:04d}/image" for i in range(N_ITEMS)],
                             [_attrs(i) for i in range(N_ITEMS)])
    return build_index(table, str(root), ckpt, ckpt_hash, IndexBuildConfig(n_shards=n_shards, version=version),
                       progress=False, checkpoint_uri=ckpt)


def _png(seed=0, size=(40, 30)) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------
# fast: the contract, the layout plan, config, builder refusal


def test_search_request_contract():
    from distill.schemas import PERSONA_MAX_CHARS
    from serving.api import MAX_K, SearchRequest

    assert SearchRequest(persona="  a gardener  ").model_dump() == {"persona": "a gardener", "k": 10, "filters": None}
    assert SearchRequest.model_validate({"persona": "x", "k": 3.0}).k == 3  # 3.0 is an integer in JSON Schema
    bad = [{"persona": ""}, {"persona": "   "}, {"persona": "\u00a0"}, {"persona": "\u0000"}, {"persona": "\t\x1f"},
           {"persona": "cat \ud800 lover"}, {"persona": "x", "k": 0}, {"persona": "x", "k": MAX_K + 1},
           {"persona": "x", "k": "3"}, {"persona": "x", "k": True}, {"persona": "x", "k": 2.5},
           {"persona": "x", "k": float("nan")}, {"persona": "x", "k": float("inf")},
           {"persona": "x" * (PERSONA_MAX_CHARS + 1)}, {"persona": "x", "extra": 1}, {"persona": 3}, {},
           {"persona": "x", "filters": {"article": 3}}, {"persona": "x", "filters": {"article": []}}]
    for body in bad:
        with pytest.raises(ValidationError):
            SearchRequest.model_validate(body)
    assert SearchRequest(persona="x" * PERSONA_MAX_CHARS, k=MAX_K).k == 1000


def test_persona_rule_is_the_one_ingest_applies():
    """Blank, no-break-space-only and control-only personas are rejected alike by ingest's row model
    and the endpoint, and the OpenAPI pattern says the same as the Python rule."""
    import re

    from distill.schemas import PERSONA_VISIBLE_PATTERN, Persona
    from serving.api import SearchRequest

    for text, ok in [("cat", True), ("\u00a0", False), ("\u0000", False), (" \n ", False), ("\ufeff", False),
                     ("a\u0000", True), ("\u200b", True)]:
        accepted = []
        for model, field in ((Persona, {"persona_id": "p", "text": text}), (SearchRequest, {"persona": text})):
            try:
                model.model_validate(field)
                accepted.append(True)
            except ValidationError:
                accepted.append(False)
        assert accepted == [ok, ok], text
        assert bool(re.search(PERSONA_VISIBLE_PATTERN, text)) == ok, text
    spec = SearchRequest.model_json_schema()["properties"]["persona"]
    assert spec["pattern"] == PERSONA_VISIBLE_PATTERN and spec["maxLength"] == 2000


def test_422_bodies_render_whatever_the_input():
    import asyncio

    from fastapi.exceptions import RequestValidationError

    from serving.api import validation_error_handler

    exc = RequestValidationError([{"type": "x", "loc": ("body", "k"), "msg": "bad", "input": float("inf")},
                                  {"type": "x", "loc": ("body", "persona"), "msg": "bad", "input": "a\ud800b"},
                                  {"type": "x", "loc": ("body",), "msg": "bad", "input": b"\xff"}])
    resp = asyncio.run(validation_error_handler(None, exc))
    body = json.loads(resp.body)
    assert resp.status_code == 422 and [e["input"] for e in body["detail"]] == ["inf", "a\\ud800b", "<1 bytes>"]


def test_layout_plan_follows_the_memory_budget(tmp_path, tiny_student):
    from serving.app import SearchAppArgs, plan_layout, shard_bytes

    m = _make_index(tmp_path / "idx", tiny_student["a"], tiny_student["hash_a"], n_shards=2)
    root = str(tmp_path / "idx")
    sizes = shard_bytes(root, m)
    assert sizes == [(tmp_path / "idx" / "versions" / m.version / s.index_file).stat().st_size for s in m.shards]
    assert all(s.index_bytes == b for s, b in zip(m.shards, sizes))
    roomy = plan_layout(root, m, SearchAppArgs(index_root=root, replica_memory_mb=4096))
    tight = plan_layout(root, m, SearchAppArgs(index_root=root, replica_memory_mb=256))
    forced = plan_layout(root, m, SearchAppArgs(index_root=root, replica_memory_mb=4096, layout="sharded"))
    assert (roomy.layout, tight.layout, forced.layout) == ("one_hop", "sharded", "sharded")
    assert "fits" in roomy.reason and "does not fit" in tight.reason and len(tight.shard_mb) == 2


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
    assert args.layout == "auto" and args.query_encoder == "onnx"


def test_podmonitor_scrapes_every_ray_pod_of_the_project():
    """No PodMonitor CRD ships here, so the manifest is checked for what makes it work: its selector
    matches the pod labels of every Ray pod template in cluster/, and its port is the `metrics`
    port (8080, Ray's Prometheus endpoint; KubeRay adds it by that name when a container omits it)."""
    pm = yaml.safe_load((REPO / "cluster" / "podmonitor.yaml").read_text())
    assert pm["apiVersion"] == "monitoring.coreos.com/v1" and pm["kind"] == "PodMonitor"
    want = pm["spec"]["selector"]["matchLabels"]
    (endpoint,) = pm["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] == "metrics" and endpoint["path"] == "/metrics"
    templates = []
    for path in sorted((REPO / "cluster").glob("ray*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            spec = doc["spec"]
            cluster = spec.get("rayClusterSpec") or spec.get("rayClusterConfig") or spec
            groups = [cluster["headGroupSpec"]] + list(cluster.get("workerGroupSpecs", []))
            templates += [(path.name, g["template"]) for g in groups]
    assert len(templates) >= 4
    for name, template in templates:
        labels = template["metadata"]["labels"]
        assert all(labels.get(k) == v for k, v in want.items()), (name, labels)
        for c in template["spec"]["containers"]:
            ports = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
            assert ports.get("metrics", 8080) == 8080, (name, ports)


def test_index_job_config_validates():
    from distill.config import build_config
    from serving.pipeline import IndexJobConfig

    cfg = build_config(IndexJobConfig, (REPO / "configs" / "index.yaml").read_text(), ["index.n_shards=3"])
    assert cfg.index.n_shards == 3 and cfg.embed.num_gpus == 0


def test_builder_refuses_mismatched_encoder(tmp_path, tiny_student, capsys):
    from serving.app import build_app

    _make_index(tmp_path / "idx", tiny_student["a"], tiny_student["hash_a"])
    build_app({"index_root": str(tmp_path / "idx")})  # the right student: builds, and says which layout
    assert "serving layout: one_hop" in capsys.readouterr().out
    with pytest.raises(IndexRefusedError, match="checkpoint hash"):
        build_app({"index_root": str(tmp_path / "idx"), "checkpoint": tiny_student["b"]})
    _make_index(tmp_path / "idx64", tiny_student["a"], tiny_student["hash_a"], dim=64)
    with pytest.raises(IndexRefusedError, match="dimension: index has 64, encoder produces 32"):
        build_app({"index_root": str(tmp_path / "idx64")})
    with pytest.raises(IndexRefusedError, match="no index"):
        build_app({"index_root": str(tmp_path / "missing")})


def test_query_cache_is_bounded_and_exact(tiny_student):
    from serving.encoders import CachedTextEncoder, load_encoder

    enc = load_encoder(tiny_student["a"])
    cached = CachedTextEncoder(enc, size=3)
    texts = ["a", "b", "a", "c", "d", "b"]
    np.testing.assert_allclose(cached.encode_texts(texts), enc.encode_texts(texts), atol=1e-6)  # batch shapes differ
    assert cached.last_encoded == 4 and len(cached._cache) == 3  # a, b, c, d once each; LRU keeps 3
    cached.encode_texts(["d"])
    assert cached.last_encoded == 0 and cached.hits >= 3


def test_filtered_search_returns_k_whenever_k_match(tmp_path, tiny_student):
    """Filters run inside FAISS (IDSelector) or exactly over the matching items; with an IVF whose
    probed cells hold too few matches, k hits still come back."""
    import serving.search as search
    from serving.search import LocalIndex

    ids, vecs = _catalog()
    table = embeddings_table(ids, vecs, None, None, [_attrs(i) for i in range(N_ITEMS)])
    m = build_index(table, str(tmp_path / "ivf"), "c", "h", IndexBuildConfig(
        factory="IVF8,Flat", n_shards=2, search_params="nprobe=1"), progress=False)
    q = normalize(np.random.default_rng(5).standard_normal((6, 32)).astype(np.float32))
    old = search.EXACT_BELOW
    try:
        for exact_below in (0, 4096):  # the IDSelector path, then the exact-subset path
            search.EXACT_BELOW = exact_below
            local = LocalIndex(str(tmp_path / "ivf"), m)
            for filters, n_match in [({"article": "mug"}, 100), ({"article": ["mug", "cap"], "colour": "red"}, 67),
                                     ({"colour": "nope"}, 0)]:
                _, got = local.search(q, 60, filters)
                assert [len(g) for g in got] == [min(60, n_match)] * len(q)
                for row in got:
                    assert all(_attrs(int(i[4:]))["article"] in np.atleast_1d(filters.get("article", ARTICLES))
                               for i in row)
    finally:
        search.EXACT_BELOW = old


# ---------------------------------------------------------------------------------------------
# slow: real Serve apps over HTTP on 127.0.0.1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _call(base, path, body=None, raw=None, method=None, timeout=30, content_type="application/json",
          headers_out=None):
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(base + path, data=data, method=method or ("POST" if data is not None else "GET"),
                                 headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            if headers_out is not None:
                headers_out.update({k.lower(): v for k, v in r.headers.items()})
            return r.status, r.read()
    except urllib.error.HTTPError as err:
        if headers_out is not None:
            headers_out.update({k.lower(): v for k, v in err.headers.items()})
        return err.code, err.read()


def _args(root: str, **extra) -> dict:
    """Small CPU reservations: the test Ray has 2 CPUs, and a rolling update runs old and new replicas."""
    one = {"min_replicas": 1, "max_replicas": 1}
    return {"index_root": root, "ingress_cpus": 0.05, "encoder_cpus": 0.05, "shard_cpus": 0.05,
            "ingress_autoscaling": one, "encoder_autoscaling": one, "shard_autoscaling": one, **extra}


def _wait_ready(base: str, timeout: float = 90) -> None:
    deadline = time.time() + timeout
    while _call(base, "/readyz")[0] != 200:
        assert time.time() < deadline, f"{base} never became ready"
        time.sleep(0.5)


@pytest.fixture(scope="module")
def endpoint(ray_local, tiny_student, tmp_path_factory):
    """Two apps on one Serve: the one-hop layout at / and the sharded layout at /sharded."""
    from ray import serve

    from serving.app import build_app

    root = tmp_path_factory.mktemp("index")
    _make_index(root, tiny_student["a"], tiny_student["hash_a"], n_shards=3, version="v1")
    port = _free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build_app(_args(str(root))), name="search-test", route_prefix="/")
    serve.run(build_app(_args(str(root), layout="sharded")), name="search-sharded", route_prefix="/sharded")
    base = f"http://127.0.0.1:{port}"
    _wait_ready(base)
    _wait_ready(base + "/sharded")
    yield {"base": base, "sharded": base + "/sharded", "root": str(root), "port": port}
    serve.delete("search-test")
    serve.delete("search-sharded")
    serve.shutdown()


def _ids(body: bytes) -> list[str]:
    return [h["item_id"] for h in json.loads(body)["hits"]]


@pytest.mark.slow
def test_every_query_kind_equals_exact_search_in_both_layouts(endpoint, tiny_student):
    from serving.encoders import load_encoder

    enc = load_encoder(tiny_student["a"])
    ids, vecs = _catalog()
    assert json.loads(_call(endpoint["base"], "/healthz")[1])["layout"] == "one_hop"
    assert json.loads(_call(endpoint["sharded"], "/healthz")[1])["layout"] == "sharded"

    def exact(q, k, keep=lambda i: True):
        sel = [i for i in range(N_ITEMS) if keep(i)]
        s, got = exact_search(vecs[sel], [ids[i] for i in sel], q, k)
        return s, got

    mug = {"article": "mug"}
    mug_or_cap_red = {"article": ["mug", "cap"], "colour": "red"}
    img = _png(3)
    cases = []
    for persona, k, f in [("a gift for a mother who loves gardening", 10, None), ("a reserved mechanic", 1, None),
                          ("someone who likes cats and rockets", 1000, None), ("a tea lover", 7, mug),
                          ("a tea lover", 80, mug_or_cap_red)]:
        keep = (lambda i, f=f: all(_attrs(i)[a] in np.atleast_1d(v) for a, v in f.items())) if f else (lambda i: True)
        cases.append(("/v1/search", {"persona": persona, "k": k, **({"filters": f} if f else {})},
                      exact(enc.encode_texts([persona]), k, keep)[1][0]))
    qv = np.random.default_rng(9).standard_normal(32).astype(np.float32)
    cases.append(("/v1/search/vector", {"vector": (qv * 3).tolist(), "k": 12}, exact(normalize(qv[None]), 12)[1][0]))
    cases.append(("/v1/search/vector", {"vector": qv.tolist(), "k": 5, "filters": mug},
                  exact(normalize(qv[None]), 5, lambda i: i % 4 == 0)[1][0]))
    cases.append(("/v1/search/item", {"item_id": "sku-0042", "k": 8},
                  [i for i in exact(vecs[42:43], 9)[1][0] if i != "sku-0042"][:8]))
    cases.append(("/v1/search/item", {"item_id": "sku-0042", "k": 5, "filters": mug},
                  [i for i in exact(vecs[42:43], 6, lambda i: i % 4 == 0)[1][0] if i != "sku-0042"][:5]))
    for path, body, want in cases:
        answers = []
        for base in (endpoint["base"], endpoint["sharded"]):
            status, text = _call(base, path, body)
            assert status == 200, (base, path, body, text[:300])
            answers.append(json.loads(text))
            assert _ids(text) == want, (base, path, body)
        assert answers[0]["hits"] == answers[1]["hits"]  # the layouts agree on ids, ranks, scores, records
        hit = answers[0]["hits"][0]
        assert hit["rank"] == 1 and hit["title"].startswith("product ") and hit["attributes"]["article"] in ARTICLES
    # an image upload, and a batch of personas
    want_img = exact(enc.encode_images([img]), 6)[1][0]
    personas = ["a keen gardener", "a night-shift nurse", "a keen gardener"]
    want_batch = [exact(enc.encode_texts([p]), 4)[1][0] for p in personas]
    for base in (endpoint["base"], endpoint["sharded"]):
        status, text = _call(base, "/v1/search/image?k=6", raw=img, content_type="image/png")
        assert status == 200 and _ids(text) == want_img, text[:300]
        status, text = _call(base, "/v1/search/batch", {"personas": personas, "k": 4})
        assert status == 200 and [[h["item_id"] for h in r["hits"]] for r in json.loads(text)["results"]] == want_batch
    assert _call(endpoint["base"], "/v1/search/item", {"item_id": "nope", "k": 3})[0] == 404


@pytest.mark.slow
def test_http_contract_statuses(endpoint):
    """Issue 18's list: strict types, NaN/inf and lone surrogates -> 422 with a body that renders,
    text/plain -> 415, invalid UTF-8 -> 400, blank / control-only personas -> 422; the server keeps answering."""
    base = endpoint["base"]
    raw_422 = [b'{"persona":"cat","k":1e400}', b'{"persona":"cat","k":NaN}', b'{"persona":"cat","k":Infinity}',
               b'{"persona":"cat \\ud800 lover"}', b'{"persona":"cat","k":"3"}', b'{"persona":"cat","k":true}',
               b'{"persona":"\\u00a0"}', b'{"persona":"\\u0000"}', b'{"persona":"   "}', b'{"persona":""}',
               b'{"persona":"x","k":0}', b'{"persona":"x","k":1001}', b'{"k":3}', b'[1,2]', b'"x"',
               b'{"persona":"' + b"x" * 2001 + b'"}', b'{"vector":[1.0, NaN],"k":3}', b'{not json', b'']
    for raw in raw_422:
        for path in ("/v1/search",) if b"vector" not in raw else ("/v1/search/vector",):
            status, text = _call(base, path, raw=raw)
            assert status == 422, (raw[:60], status, text[:200])
            assert json.loads(text)["detail"]  # the body renders as JSON
    status, text = _call(base, "/v1/search", raw=b'{"persona":"cat"}', content_type="text/plain")
    assert status == 415 and "application/json" in json.loads(text)["detail"]
    assert _call(base, "/v1/search", raw=b"\xff\xfe{", method="POST")[0] == 400
    assert _call(base, "/v1/search/vector", {"vector": [0.1] * 5, "k": 3})[0] == 422  # wrong dimension
    # images: wrong type, not an image, too large, and the type the body really has
    assert _call(base, "/v1/search/image", raw=_png(), content_type="text/plain")[0] == 415
    assert _call(base, "/v1/search/image", raw=_png(), content_type="image/jpeg")[0] == 415
    assert _call(base, "/v1/search/image", raw=b"\x89PNG not really", content_type="image/png")[0] == 422
    assert _call(base, "/v1/search/image", raw=b"\0" * (8 * 2**20 + 1), content_type="image/png")[0] == 413
    assert _call(base, "/v1/search/image?k=0", raw=_png(), content_type="image/png")[0] == 422
    assert _call(base, "/v1/search", method="GET")[0] == 405
    assert _call(base, "/v1/items/does-not-exist")[0] == 404
    assert _call(base, "/v1/search", {"persona": "still serving", "k": 3})[0] == 200


@pytest.mark.slow
def test_http_items_health_openapi(endpoint):
    base = endpoint["base"]
    status, body = _call(base, "/v1/items/sku-0007")
    assert status == 200 and json.loads(body) == {"item_id": "sku-0007", "title": "product 7",
                                                  "image_uri": "/v1/items/sku-0007/image",
                                                  "attributes": _attrs(7)}
    assert json.loads(_call(base, "/healthz")[1])["status"] == "ok"
    assert json.loads(_call(base, "/readyz")[1])["status"] == "ready"
    status, body = _call(base, "/openapi.json")
    spec = json.loads(body)
    routes = {"/v1/search", "/v1/search/batch", "/v1/search/vector", "/v1/search/item", "/v1/search/image"}
    assert status == 200 and routes | {"/v1/items/{item_id}", "/healthz", "/readyz"} <= set(spec["paths"])
    schemas = spec["components"]["schemas"]
    assert schemas["SearchRequest"]["properties"]["k"]["maximum"] == 1000
    assert schemas["VectorSearchRequest"]["properties"]["vector"]["maxItems"] == 32  # the index's dimension
    for route in routes:
        op = spec["paths"][route]["post"]
        assert {"200", "415", "422", "503"} <= set(op["responses"]), route
        assert "Retry-After" in op["responses"]["503"]["headers"]
        content = op["requestBody"]["content"]
        media = "image/png" if route.endswith("image") else "application/json"
        assert media in content, route
        if media == "application/json":
            name = content[media]["schema"]["$ref"].rsplit("/", 1)[1]
            assert schemas[name].get("examples"), name
    assert _call(base, "/docs")[0] == 200


@pytest.mark.slow
def test_schemathesis_from_outside_all_checks_pass(endpoint, tmp_path):
    """The CLI a user would run against the live endpoint, every check on, zero failures."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "SCHEMATHESIS_HOOKS": "tests.schemathesis_hooks", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "schemathesis.cli", "run", endpoint["base"] + "/openapi.json", "--checks", "all",
           "--max-examples", "25", "--seed", "1", "--workers", "1", "--request-timeout", "30",
           "--phases", "examples,coverage,fuzzing", "--suppress-health-check", "all",
           "--report", "junit", "--report-dir", str(tmp_path)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path, env=env)  # its cache dir lands there
    tail = (out.stdout + out.stderr)[-4000:]
    assert out.returncode == 0, tail
    assert "passed" in tail.lower() and "failed" not in tail.lower().replace("0 failed", ""), tail


@pytest.mark.slow
def test_metrics_on_rays_prometheus_endpoint(endpoint, ray_local):
    """Latency per route, hits, encoder batch sizes, index version: scraped as Prometheus would."""
    base = endpoint["base"]
    for i in range(5):
        assert _call(base, "/v1/search", {"persona": f"metrics probe {i % 2}", "k": 4})[0] == 200
    node = ray_local._private.worker.global_worker.node
    url = f"http://{node.node_ip_address}:{node.metrics_export_port}/metrics"
    want = ["ray_persona_search_latency_ms_bucket", "ray_persona_search_hits_total",
            "ray_persona_search_encoder_batch_size_bucket", "ray_persona_search_index_info",
            "ray_persona_search_query_cache_hits_total"]
    deadline, text = time.time() + 60, ""
    while time.time() < deadline:
        text = urllib.request.urlopen(url, timeout=10).read().decode()
        if all(w in text for w in want) and 'route="/v1/search"' in text:
            break
        time.sleep(2)
    missing = [w for w in want if w not in text]
    assert not missing, (missing, [ln for ln in text.splitlines() if "persona" in ln][:20])
    assert 'index_version="v1"' in text


@pytest.mark.slow
def test_killed_shard_replica_is_a_503_then_serve_restores_it(endpoint, ray_local):
    """A shard replica killed under load: every answer is 200 or a 503 with Retry-After, Serve
    starts a new replica, and searches succeed afterwards."""
    import ray

    base = endpoint["sharded"]
    statuses, retry, stop = [], [], threading.Event()

    def client(n):
        i = 0
        while not stop.is_set() and i < 400:
            headers = {}
            status, _ = _call(base, "/v1/search", {"persona": f"a cyclist {n}-{i % 5}", "k": 5}, timeout=60,
                              headers_out=headers)
            statuses.append(status)
            if status == 503:
                retry.append(headers.get("retry-after"))
            i += 1

    threads = [threading.Thread(target=client, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    try:
        time.sleep(2)
        victims = [a for a in ray.util.list_named_actors(all_namespaces=True)
                   if "search-sharded" in a["name"] and "#Shard1#" in a["name"]]
        assert victims, ray.util.list_named_actors(all_namespaces=True)
        ray.kill(ray.get_actor(victims[0]["name"], namespace=victims[0]["namespace"]), no_restart=True)
        time.sleep(4)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=120)
    counts = {s: statuses.count(s) for s in set(statuses)}
    assert set(statuses) <= {200, 503} and counts.get(200), counts
    assert all(r == "1" for r in retry), retry
    _wait_ready(base, timeout=120)
    names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
             if "search-sharded" in a["name"] and "#Shard1#" in a["name"]]
    assert names and victims[0]["name"] not in names  # a new replica, not the killed one
    status, body = _call(base, "/v1/search", {"persona": "after the fault", "k": 5})
    assert status == 200 and len(json.loads(body)["hits"]) == 5


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
        deadline = time.time() + 90
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
    with Retry-After for the excess (answered, not left to time out), the admitted ones succeed,
    and the service answers normally afterwards. Redeploys the module's app, so it runs last."""
    from ray import serve

    from serving.app import build_app

    base = endpoint["base"]
    # a slow batch (it waits 0.5 s to fill) keeps the admitted searches in flight
    serve.run(build_app(_args(endpoint["root"], ingress_max_ongoing_requests=1,
                              max_queued_requests=1, ingress_batch_wait_s=0.5)),
              name="search-test", route_prefix="/")
    deadline = time.time() + 90
    while time.time() < deadline:
        status, body = _call(base, "/v1/search", {"persona": "a cyclist", "k": 3})
        if status == 200 and json.loads(body)["took_ms"] >= 400:  # the slow batching is live
            break
        time.sleep(0.2)
    else:
        pytest.fail("the redeployed app never served a search through the slow batch")

    statuses: list[tuple[int, str | None]] = []
    start = threading.Barrier(12)

    def client():
        start.wait()
        headers = {}
        status = _call(base, "/v1/search", {"persona": "a burst of shoppers", "k": 3}, timeout=20,
                       headers_out=headers)[0]
        statuses.append((status, headers.get("retry-after")))

    threads = [threading.Thread(target=client) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    codes = [s for s, _ in statuses]
    counts = {s: codes.count(s) for s in set(codes)}
    assert set(codes) == {200, 503}, counts
    assert counts[503] >= 6, counts  # at most 1 running + 1 queued at a time, each for ~0.5 s
    assert all(r == "1" for s, r in statuses if s == 503), statuses
    status, body = _call(base, "/v1/search", {"persona": "after the burst", "k": 3})
    assert status == 200 and len(json.loads(body)["hits"]) == 3
