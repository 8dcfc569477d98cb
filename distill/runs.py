"""What identifies a run, and where its outputs live by default.

Every job config answers two questions the same way: which of its fields decide the *result*
(the run's identity), and which only decide how the work is *spread* (pool sizes, workers,
progress bars, where to write). A config class lists the latter in ``EXECUTION_FIELDS`` (a
``ClassVar``; nested models list their own), and ``identity`` drops them recursively. A rerun of
the same identity resumes the same folder however the work is spread; a change that alters the
result gets a new folder. ``run_folder`` names it ``<stage>-<name>-<short hash>`` so a listing of
``$PERSONA_DISTILL_HOME/runs`` is readable, in the spirit of vLLM's config hash.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from typing import Any, ClassVar

from pydantic import BaseModel

from distill import storage

DEFAULT_HOME = "~/.cache/persona-distill"


def home() -> str:
    """Where demo worlds and default run outputs live: ``$PERSONA_DISTILL_HOME``, or
    ``~/.cache/persona-distill`` when it is unset *or empty*."""
    return os.environ.get("PERSONA_DISTILL_HOME") or os.path.expanduser(DEFAULT_HOME)


class RunConfig:
    """Mixin for job configs: ``EXECUTION_FIELDS`` names the fields that do not identify a run."""

    EXECUTION_FIELDS: ClassVar[frozenset[str]] = frozenset()


def _strip(model: BaseModel, dumped: Any) -> Any:
    if not isinstance(dumped, dict):
        return dumped
    skip = getattr(type(model), "EXECUTION_FIELDS", frozenset())
    out = {}
    for key, value in dumped.items():
        if key in skip:
            continue
        sub = getattr(model, key, None)
        out[key] = _strip(sub, value) if isinstance(sub, BaseModel) else value
    return out


def identity(cfg: BaseModel) -> dict[str, Any]:
    """The config as it decides results: JSON-able, with every nested ``EXECUTION_FIELDS`` dropped."""
    return _strip(cfg, cfg.model_dump(mode="json"))


def digest(settings: Any, size: int = 4) -> str:
    """The one way a run's settings become a hex name: blake2b of their canonical JSON (sorted keys,
    compact separators), ``size`` bytes. Run folders and the tournament engine's resume
    fingerprint both use it."""
    payload = json.dumps(settings, sort_keys=True, separators=(",", ":"))
    return hashlib.blake2b(payload.encode(), digest_size=size).hexdigest()


def identity_hash(cfg: BaseModel, size: int = 4) -> str:
    """A short, stable hex digest of ``identity(cfg)`` (key order and execution fields ignored)."""
    return digest(identity(cfg), size)


def slug(text: str, max_len: int = 32) -> str:
    """A readable folder-name part: lower case, [a-z0-9-] only."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:max_len] or "run"


def dataset_name(root: str | None, world_name: str) -> str:
    """The readable name of a run's data: the demo world's name, or the dataset root's last part."""
    return slug(world_name if not root else root.rstrip("/").rsplit("/", 1)[-1])


def run_folder(stage: str, name: str, cfg: BaseModel, parent: str = "runs") -> str:
    """``$PERSONA_DISTILL_HOME/<parent>/<stage>-<name>-<hash of the identity>``."""
    return storage.join(home(), parent, f"{slug(stage)}-{slug(name)}-{identity_hash(cfg)}")
