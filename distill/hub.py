"""Where a config's models come from, and whether the run may use the network for them.

Models load the way their libraries load them: a Hugging Face hub name (``Qwen/Qwen2.5-VL-7B-Instruct``,
``hf-hub:org/repo``, an open_clip tag such as ``laion2b_s34b_b79k``) is downloaded on first use
into ``HF_HOME`` by huggingface_hub, with the token it finds in the environment (``HF_TOKEN``), from
``HF_ENDPOINT`` when that is set. A local path or a model shipped in a package (the demo's MiniLM)
loads from disk.

The run is offline in two cases only: the user says so (``HF_HUB_OFFLINE=1`` or
``TRANSFORMERS_OFFLINE=1``), or every model in the config is local or shipped, in which case
``apply_offline_policy`` turns offline mode on so no library asks the network about a path.
When offline mode is on and a hub model is not in the cache, ``check_available`` says which
setting names it and what to change, before any work starts (``load_config`` turns that into
one line and exit code 2).

huggingface_hub and transformers read ``HF_HUB_OFFLINE`` when they are imported, so the policy
is applied by ``load_config``, before a job imports them; workers of a local Ray inherit it.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Any, Iterable, Literal

from pydantic import BaseModel

from distill.errors import UserError

OFFLINE_VARS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
HF_HUB_PREFIX = "hf-hub:"
SHIPPED_PLACEHOLDER = "$MINILM"

Source = Literal["hub", "local", "shipped", "url"]


class ModelUnavailable(UserError):
    """A model the config names cannot be loaded under the current settings (a user error)."""


@dataclass(frozen=True)
class ModelRef:
    """One model a config names: the setting it comes from, the name as written, its source."""

    setting: str
    name: str
    source: Source
    repo_id: str | None = None     # hub models: the repository
    filename: str | None = None    # hub models loaded as one file (open_clip tags)


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def offline_requested(env: dict[str, str] | None = None) -> bool:
    """Whether the user turned offline mode on (``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE``)."""
    env = os.environ if env is None else env
    return any(_truthy(env.get(v)) for v in OFFLINE_VARS)


def _is_local(name: str) -> bool:
    if "://" in name:  # s3://, gs://, file://: read through pyarrow, never the hub
        return True
    return os.path.exists(os.path.expanduser(name))


def classify(setting: str, name: str) -> ModelRef:
    """A hub repository, a local path or a shipped model, from how the name is written."""
    if name == SHIPPED_PLACEHOLDER:
        return ModelRef(setting, name, "shipped")
    if name.startswith(HF_HUB_PREFIX):
        return ModelRef(setting, name, "hub", repo_id=name[len(HF_HUB_PREFIX):])
    if _is_local(name) or name.startswith(("/", "./", "../", "~")):
        return ModelRef(setting, name, "local")
    return ModelRef(setting, name, "hub", repo_id=name)


def student_refs(cfg: Any, setting: str) -> list[ModelRef]:
    """Models a ``StudentConfig`` loads: its architecture (``hf-hub:``), ``pretrained`` weights
    (an open_clip tag is a file in a hub repository), and a Hugging Face text tower."""
    from distill.student import raw_model_cfg

    refs: list[ModelRef] = []
    if cfg.model_cfg is None and cfg.arch.startswith(HF_HUB_PREFIX):
        refs.append(classify(f"{setting}.arch", cfg.arch))
    if cfg.pretrained:
        if _is_local(cfg.pretrained):
            refs.append(ModelRef(f"{setting}.pretrained", cfg.pretrained, "local"))
        elif not cfg.arch.startswith(HF_HUB_PREFIX):
            refs.append(_open_clip_tag(cfg.arch, cfg.pretrained, f"{setting}.pretrained"))
    try:
        _, raw = raw_model_cfg(cfg)
    except (OSError, ValueError):  # a missing JSON path is the student factory's error to raise
        raw = None
    text = (raw or {}).get("text_cfg", {}) if isinstance(raw, dict) else {}
    for key in ("hf_model_name", "hf_tokenizer_name"):
        name = text.get(key)
        if isinstance(name, str) and name and not (key == "hf_model_name" and not cfg.pretrained_text):
            refs.append(classify(f"{setting}.text_cfg.{key}", name))
    return refs


def _open_clip_tag(arch: str, tag: str, setting: str) -> ModelRef:
    """An open_clip pretrained tag: the hub file it downloads (``hf_hub: org/repo/file``) or a URL."""
    from open_clip.pretrained import get_pretrained_cfg

    pcfg = get_pretrained_cfg(arch, tag) or {}
    hub = pcfg.get("hf_hub", "")
    if hub:
        repo_id, filename = os.path.split(hub.rstrip("/")) if not hub.endswith("/") else (hub.rstrip("/"), None)
        return ModelRef(setting, f"{arch} {tag}", "hub", repo_id=repo_id,
                        filename=filename or "open_clip_pytorch_model.bin")
    if pcfg.get("url"):
        return ModelRef(setting, f"{arch} {tag}", "url")
    # not a known tag: the student factory reports it (open_clip lists the known tags)
    return ModelRef(setting, tag, "local")


def judge_refs(cfg: Any, setting: str) -> list[ModelRef]:
    """Models a judge config loads: a VLM's model and tokenizer, the text oracle's encoder."""
    kind = getattr(cfg, "kind", None)
    refs: list[ModelRef] = []
    if kind == "vlm":
        refs.append(classify(f"{setting}.model", cfg.model))
        if cfg.tokenizer:
            refs.append(classify(f"{setting}.tokenizer", cfg.tokenizer))
    elif kind == "text_oracle":
        refs.append(classify(f"{setting}.model_path", cfg.model_path) if cfg.model_path
                    else ModelRef(f"{setting}.model_path", SHIPPED_PLACEHOLDER, "shipped"))
    return refs


def config_refs(cfg: BaseModel, prefix: str = "") -> list[ModelRef]:
    """Every model a job config names, found by walking its pydantic tree."""
    from distill.judges.config import TextOracleConfig
    from distill.judges.vlm import VLMJudgeConfig
    from distill.student import StudentConfig

    if isinstance(cfg, StudentConfig):
        return student_refs(cfg, prefix.rstrip(".") or "student")
    if isinstance(cfg, (VLMJudgeConfig, TextOracleConfig)):
        return judge_refs(cfg, prefix.rstrip(".") or "judge")
    refs: list[ModelRef] = []
    for name in type(cfg).model_fields:
        value = getattr(cfg, name, None)
        values = value.items() if isinstance(value, dict) else [(None, value)]
        for key, item in values:
            if isinstance(item, BaseModel):
                sub = f"{prefix}{name}." if key is None else f"{prefix}{name}.{key}."
                refs.extend(config_refs(item, sub))
    return refs


def apply_offline_policy(refs: Iterable[ModelRef]) -> bool:
    """Turn offline mode on when every model is local or shipped; returns whether the run is offline.

    Never turns it off: a user's ``HF_HUB_OFFLINE=1`` stands."""
    refs = list(refs)
    if offline_requested():
        return True
    if all(r.source in ("local", "shipped") for r in refs):
        for var in OFFLINE_VARS:
            os.environ[var] = "1"
        hub = sys.modules.get("huggingface_hub.constants")
        if hub is not None:  # imported already (e.g. by a test process): tell it too
            hub.HF_HUB_OFFLINE = True
        return True
    return False


def hf_cache_dir() -> str:
    from huggingface_hub import constants

    return constants.HF_HUB_CACHE


def _cached(ref: ModelRef) -> bool:
    from huggingface_hub import snapshot_download, try_to_load_from_cache
    from huggingface_hub.errors import LocalEntryNotFoundError

    if ref.filename:
        return isinstance(try_to_load_from_cache(ref.repo_id, ref.filename), str)
    try:
        snapshot_download(ref.repo_id, local_files_only=True)
    except (LocalEntryNotFoundError, FileNotFoundError, OSError, ValueError):
        return False
    return True


def check_available(refs: Iterable[ModelRef]) -> None:
    """Raise ``ModelUnavailable`` naming the setting when offline mode forbids fetching a model.

    Online, nothing is checked here: the library downloads the model when it first loads it.
    Local paths are not checked either: on a cluster they may exist only on the workers."""
    offline = offline_requested()
    for ref in refs:
        if not offline or ref.source != "hub":
            continue
        if not _cached(ref):
            var = next((v for v in OFFLINE_VARS if _truthy(os.environ.get(v))), OFFLINE_VARS[0])
            raise ModelUnavailable(
                f"{ref.setting}={ref.name!r} is not in the Hugging Face cache ({hf_cache_dir()}) and "
                f"{var}=1 forbids downloading it: unset {var} to download it, or set {ref.setting} "
                f"to a local directory")


def prepare(cfg: BaseModel) -> bool:
    """The offline policy and the availability check for one job config; returns offline or not."""
    refs = config_refs(cfg)
    offline = apply_offline_policy(refs)
    check_available(refs)
    return offline
