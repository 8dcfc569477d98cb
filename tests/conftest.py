"""Shared fixtures: one local Ray for the in-process tests, repo on the path, a cache home."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
# Demo worlds and default outputs are cached here across tests (and across local runs).
os.environ.setdefault("PERSONA_DISTILL_HOME", str(REPO / ".cache" / "persona-distill"))
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


HEAVY_FIXTURES = ("ray_local", "vllm_python", "tiny_vlm")


@pytest.fixture(autouse=True)
def _heavy_tests_are_marked_slow(request, monkeypatch):
    """`make test-fast` is the quick loop: a test that starts Ray or vLLM must be marked slow.

    Enforced rather than remembered: an unmarked test asking for Ray's or vLLM's fixtures fails
    here, and one reaching ``ray.init`` through library code fails at that call."""
    if request.node.get_closest_marker("slow"):
        return
    heavy = [f for f in HEAVY_FIXTURES if f in request.fixturenames]
    if heavy:
        pytest.fail(f"{request.node.nodeid} uses {heavy}: mark it @pytest.mark.slow")
    import ray

    def refuse(*args, **kwargs):
        raise RuntimeError(f"{request.node.nodeid} starts Ray: mark it @pytest.mark.slow")

    monkeypatch.setattr(ray, "init", refuse)


@pytest.fixture(scope="session")
def ray_local():
    """A local Ray on loopback shared by every in-process test (starting one costs ~5 s)."""
    import ray

    from distill.ray_utils import init_ray

    init_ray()
    yield ray
    ray.shutdown()


VLLM_VENV = Path(os.environ.get("VLLM_VENV") or REPO / ".venv-vllm")
IN_CI = os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


@pytest.fixture(scope="session")
def vllm_python() -> Path:
    """The vLLM venv's interpreter (``make test`` builds it); in CI its absence is a failure."""
    python = VLLM_VENV / "bin" / "python"
    if not python.exists():
        msg = f"no vLLM venv at {VLLM_VENV} (create it with: bash scripts/make_vllm_env.sh)"
        if IN_CI:
            pytest.fail(msg + "; CI must run the VLM tests")
        pytest.skip(msg)
    return python


@pytest.fixture(scope="session")
def tiny_vlm(vllm_python) -> str:
    """A tiny random-weight Qwen2-VL built with the vLLM venv's transformers, once per machine:
    cached under the test home by the builder script's content, so the two xdist workers (and
    later runs) share one build. The build lock makes the second worker wait for the first."""
    import hashlib
    import shutil
    import subprocess

    from distill import storage

    script = REPO / "tests" / "fixtures" / "tiny_vlm.py"
    # the builder, the venv, and the venv's transformers (a rebuilt venv may write other files)
    site = vllm_python.parent.parent / "lib"
    versions = sorted(p.name for p in site.glob("python*/site-packages/transformers-*.dist-info"))
    key = hashlib.sha256(script.read_bytes() + str(vllm_python.resolve()).encode()
                         + "|".join(versions).encode()).hexdigest()[:12]
    out = Path(os.environ["PERSONA_DISTILL_HOME"]) / "models" / f"tiny-qwen2-vl-{key}"
    built = out.with_name(out.name + ".built")  # beside it: the model folder holds only the model
    with storage.build_lock(str(out)):
        if not built.exists():
            shutil.rmtree(out, ignore_errors=True)
            subprocess.run([str(vllm_python), str(script), str(out)], check=True, capture_output=True, timeout=300)
            built.write_text("ok")
    assert (out / "config.json").exists() and (out / "tokenizer.json").exists()
    return str(out)
