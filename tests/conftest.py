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


@pytest.fixture(scope="session")
def ray_local():
    """A local Ray on loopback shared by every in-process test (starting one costs ~5 s)."""
    import ray

    from distill.ray_utils import init_ray

    init_ray()
    yield ray
    ray.shutdown()
