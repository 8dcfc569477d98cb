"""Models load the way their libraries load them: hub names download into HF_HOME, offline only
when the user says so or every model is local, and an offline miss names the model and setting.

The download tests serve a tiny open_clip checkpoint and the tiny VLM from a loopback server that
answers the hub's file API (tests/fixtures/hub_server.py) and point the libraries at it with
``HF_ENDPOINT``; each load runs in a subprocess whose environment has offline mode off (this test
session keeps it on, tests/conftest.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from distill import hub
from distill.distill_job import DistillJobConfig
from distill.judges.vlm import VLMJudgeConfig
from distill.student import StudentConfig
from tests.fixtures.hub_server import LoopbackHub

REPO = Path(__file__).resolve().parents[1]
CLIP_REPO = "persona-distill/tiny-clip"
VLM_REPO = "persona-distill/tiny-qwen2-vl"


def _online_env(home: Path, endpoint: str | None = None, **extra: str) -> dict[str, str]:
    """This process's environment with offline mode off, a fresh HF_HOME, the loopback endpoint."""
    env = {k: v for k, v in os.environ.items() if k not in hub.OFFLINE_VARS and not k.startswith("HF_")}
    env.update(HF_HOME=str(home), PYTHONPATH=str(REPO), HF_HUB_DISABLE_TELEMETRY="1", VLLM_NO_USAGE_STATS="1",
               HF_HUB_ETAG_TIMEOUT="30", HF_HUB_DOWNLOAD_TIMEOUT="60", **extra)
    if endpoint:
        env["HF_ENDPOINT"] = endpoint
    return env


def _result(stdout: str) -> dict:
    """The script's one ``RESULT {json}`` line (library logs may surround it)."""
    return json.loads(next(line for line in stdout.splitlines() if line.startswith("RESULT "))[len("RESULT "):])


# ---- which models a config names, and when the run is offline -------------------------------------

def test_config_refs_find_every_model_and_its_source():
    cfg = DistillJobConfig.model_validate({
        "judge": {"kind": "vlm", "model": "Qwen/Qwen2.5-VL-7B-Instruct"},
        "pretrain": {"student": {"arch": "ViT-B-32", "pretrained": "laion2b_s34b_b79k"}}})
    refs = {r.setting: r for r in hub.config_refs(cfg)}
    assert refs["judge.model"].source == "hub" and refs["judge.model"].repo_id == "Qwen/Qwen2.5-VL-7B-Instruct"
    tag = refs["pretrain.student.pretrained"]
    assert tag.source == "hub" and tag.repo_id == "laion/CLIP-ViT-B-32-laion2B-s34B-b79K" and tag.filename
    # the demo: the shipped MiniLM teacher and a demo student whose text tower is that MiniLM
    demo = hub.config_refs(DistillJobConfig())
    assert demo and {r.source for r in demo} == {"shipped"}
    assert {r.setting for r in demo} >= {"judge.model_path", "pretrain.student.text_cfg.hf_model_name"}
    assert hub.student_refs(StudentConfig(arch="hf-hub:org/clip"), "student")[0].repo_id == "org/clip"
    assert hub.judge_refs(VLMJudgeConfig(model=str(REPO)), "judge")[0].source == "local"


def test_offline_only_when_asked_or_when_every_model_is_local(monkeypatch):
    local = [hub.ModelRef("judge.model", "/models/x", "local"), hub.ModelRef("student", "$MINILM", "shipped")]
    remote = local + [hub.ModelRef("judge.model", "Qwen/Qwen2.5-VL-7B-Instruct", "hub", repo_id="Qwen/x")]
    for var in hub.OFFLINE_VARS:
        monkeypatch.delenv(var, raising=False)
    assert hub.apply_offline_policy(remote) is False
    assert not hub.offline_requested(), "a hub model keeps the run online"
    assert hub.apply_offline_policy(local) is True
    assert os.environ["HF_HUB_OFFLINE"] == "1", "every model local: nothing to ask the network"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hub.apply_offline_policy(remote) is True, "the user's offline setting stands"


def test_importing_the_student_no_longer_forces_offline_mode():
    env = _online_env(Path("/nonexistent-hf-home"))
    code = "import os, distill.student, distill.ray_utils; print(os.environ.get('HF_HUB_OFFLINE'))"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120,
                         cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "None"


@pytest.mark.slow
@pytest.mark.parametrize(("job", "override", "setting", "name"), [
    ("jobs/index.py", "student.arch=hf-hub:persona-distill/not-cached", "student.arch", "persona-distill/not-cached"),
    ("jobs/tournament.py", "judge={kind: vlm, model: Qwen/Qwen2.5-VL-7B-Instruct}", "judge.model",
     "Qwen/Qwen2.5-VL-7B-Instruct"),
])
def test_offline_and_absent_is_one_line_naming_model_and_setting(tmp_path, job, override, setting, name):
    env = _online_env(tmp_path / "hf", HF_HUB_OFFLINE="1", PERSONA_DISTILL_HOME=str(tmp_path / "home"))
    out = subprocess.run([sys.executable, job, override], env=env, capture_output=True, text=True, timeout=300,
                         cwd=REPO)
    assert out.returncode == 2, out.stderr[-2000:]
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert setting in lines[0] and name in lines[0] and "HF_HUB_OFFLINE" in lines[0]
    assert "Traceback" not in out.stderr and not (tmp_path / "home").exists(), "refused before any work"


# ---- downloads through the hub's file API, from a loopback endpoint --------------------------------

def _tiny_clip_repo(path: Path) -> str:
    """An open_clip hub repository (open_clip_config.json + weights) of the tiny-test student."""
    import torch

    from distill.student import MODEL_CONFIG_DIR, build_student

    torch.manual_seed(7)
    student = build_student(StudentConfig(arch="tiny-test"))
    path.mkdir(parents=True)
    config = {"model_cfg": json.loads((MODEL_CONFIG_DIR / "tiny-test.json").read_text()),
              "preprocess_cfg": {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}}
    (path / "open_clip_config.json").write_text(json.dumps(config))
    torch.save(student.state_dict(), path / "open_clip_pytorch_model.bin")
    return student.checkpoint_id


_LOAD_STUDENT = """
import json, sys
from distill.student import Student, StudentConfig, build_student
s = build_student(StudentConfig(arch=sys.argv[1])) if sys.argv[1] != "load" else Student.load(sys.argv[2])
if sys.argv[1] != "load":
    s.save(sys.argv[2])
print("RESULT", json.dumps({"id": s.checkpoint_id, "mean": list(s.preprocess.transforms[-1].mean),
                  "text": s.encode_texts(["a cat"]).round(5).tolist()}))
"""


@pytest.mark.slow
def test_open_clip_hub_student_downloads_into_hf_home_then_loads_offline(tmp_path):
    expected_id = _tiny_clip_repo(tmp_path / "repo")
    home, ckpt = tmp_path / "hf", tmp_path / "ckpt"
    with LoopbackHub({CLIP_REPO: tmp_path / "repo"}) as server:
        out = subprocess.run([sys.executable, "-c", _LOAD_STUDENT, f"hf-hub:{CLIP_REPO}", str(ckpt)],
                             env=_online_env(home, server.endpoint), capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-3000:]
        fetched = server.downloads(CLIP_REPO)
    online = _result(out.stdout)
    assert online["id"] == expected_id, "the repository's weights, loaded by open_clip from the hub"
    assert online["mean"] == [0.5, 0.5, 0.5], "and its preprocess config"
    assert {"open_clip_config.json", "open_clip_pytorch_model.bin"} <= set(fetched)
    assert list((home / "hub").glob("models--persona-distill--tiny-clip/snapshots/*/open_clip_pytorch_model.bin"))
    # the server is gone: offline mode loads from HF_HOME's cache, and the saved student needs no hub at all
    offline = _online_env(home, "http://127.0.0.1:9", HF_HUB_OFFLINE="1")
    again = subprocess.run([sys.executable, "-c", _LOAD_STUDENT, f"hf-hub:{CLIP_REPO}", str(tmp_path / "ckpt2")],
                           env=offline, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert _result(again.stdout) == online
    bare = _online_env(tmp_path / "empty-hf", "http://127.0.0.1:9", HF_HUB_OFFLINE="1")
    loaded = subprocess.run([sys.executable, "-c", _LOAD_STUDENT, "load", str(ckpt)], env=bare,
                            capture_output=True, text=True, timeout=300)
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    assert _result(loaded.stdout) == online
    assert "initialized randomly" not in loaded.stderr


_LOAD_VLM = """
import io, json, sys
import numpy as np
from PIL import Image
from transformers import AutoConfig, AutoProcessor
from distill.judges.base import Candidate, MatchView
from distill.judges.vlm import VLMJudgeConfig

repo = sys.argv[1]
config = AutoConfig.from_pretrained(repo)
processor = AutoProcessor.from_pretrained(repo)
judge = VLMJudgeConfig(model=repo, dtype="bfloat16", max_model_len=1024, gpu_memory_utilization=0.3,
                       kv_cache_gib=1, enforce_eager=True, max_num_seqs=2, max_k=2, image_max_side=56).build()
rng = np.random.default_rng(0)
def png():
    buf = io.BytesIO(); Image.fromarray(rng.integers(0, 256, (56, 56, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()
view = MatchView("a gardener", (Candidate("a", image=png()), Candidate("b", image=png())), seed=0)
scores = judge.judge([view])[0].scores
print("RESULT", json.dumps({"model_type": config.model_type, "processor": type(processor).__name__,
                  "scores": [float(s) for s in scores]}))
"""


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_vlm_judge_downloads_a_repo_id_through_the_hub_endpoint(tmp_path, vllm_python, tiny_vlm):
    home = tmp_path / "hf"
    with LoopbackHub({VLM_REPO: tiny_vlm}) as server:
        env = _online_env(home, server.endpoint, VLLM_CPU_KVCACHE_SPACE="1")
        out = subprocess.run([str(vllm_python), "-c", _LOAD_VLM, VLM_REPO], env=env, capture_output=True,
                             text=True, timeout=800, cwd=tmp_path)
        fetched = set(server.downloads(VLM_REPO))
    assert out.returncode == 0, out.stderr[-4000:]
    got = _result(out.stdout)
    assert got["model_type"] == "qwen2_vl" and "Processor" in got["processor"]
    assert len(got["scores"]) == 2 and abs(sum(got["scores"]) - 1) < 1e-4, "one constrained label token"
    weights = {p.name for p in Path(tiny_vlm).glob("*.safetensors")}
    assert weights and weights <= fetched and "config.json" in fetched and "tokenizer.json" in fetched
    assert list((home / "hub").glob("models--persona-distill--tiny-qwen2-vl/snapshots/*/config.json"))


def test_a_loaded_checkpoint_logs_no_random_initialisation(tmp_path, caplog):
    """open_clip warns "initialized randomly" when it loads no weights; a checkpoint load goes through
    its ``pretrained=`` path, so the warning appears for a fresh random student and never for a load."""
    import logging

    import torch

    from distill.student import Student, build_student

    torch.manual_seed(0)
    with caplog.at_level(logging.WARNING):
        fresh = build_student(StudentConfig(arch="tiny-test"))
    assert "initialized randomly" in caplog.text, "the warning is captured here when it is due"
    fresh.save(str(tmp_path / "ckpt"))
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        loaded = Student.load(str(tmp_path / "ckpt"))
        again = build_student(StudentConfig(arch="tiny-test", pretrained=str(tmp_path / "ckpt")))
    assert "initialized randomly" not in caplog.text and "No pretrained weights" not in caplog.text
    assert loaded.checkpoint_id == again.checkpoint_id == fresh.checkpoint_id
