"""The student: an open_clip model built from config, with checkpoints that carry a content hash.

``build_student(StudentConfig(...))`` returns a :class:`Student` wrapping an open_clip model.
The architecture is an open_clip built-in name (``ViT-B-32``), a JSON config shipped in
``distill/model_configs/`` (``tiny-test``, ``demo-minilm-vit``), a path to such a JSON, or an
inline dict. Strings ``"$MINILM"`` inside a config are replaced by the local directory of the
shipped all-MiniLM-L6-v2, so the demo student's text tower is a Hugging Face text tower loaded
offline. Preprocessing and tokenizer come from open_clip unchanged.

A checkpoint is a directory URI (any pyarrow filesystem) holding::

    student.json   the unresolved model config, arch, train_towers, checkpoint_id
    model.pt       the open_clip state_dict (torch.save; also loadable by open_clip as `pretrained`)

``checkpoint_id`` is the sha256 over the state_dict tensors (names, dtypes, shapes, bytes in
name order), independent of how the file was serialised: the serving index records it.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from contextlib import ExitStack
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from distill import storage

MODEL_CONFIG_DIR = Path(__file__).resolve().parent / "model_configs"
MINILM_PLACEHOLDER = "$MINILM"
STUDENT_JSON = "student.json"
WEIGHTS_FILE = "model.pt"

# Hub names download into HF_HOME unless the user or distill.hub turned offline mode on.
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


class StudentConfig(BaseModel):
    """Which open_clip model the student is, where its weights come from, and what trains."""

    model_config = ConfigDict(extra="forbid")

    arch: str = Field("demo-minilm-vit", description=(
        "open_clip architecture: a built-in name (e.g. 'ViT-B-32'), a config in distill/model_configs "
        "('tiny-test', 'demo-minilm-vit'), a path to an open_clip-style JSON model config, or "
        "'hf-hub:org/repo' (config and weights from a Hugging Face repository, as open_clip loads it)"))
    model_cfg: dict[str, Any] | None = Field(None, description=(
        "inline open_clip model config (embed_dim, vision_cfg, text_cfg); overrides `arch` when set"))
    pretrained: str | None = Field(None, description=(
        "weights: an open_clip pretrained tag of `arch` (e.g. 'laion2b_s34b_b79k', downloaded into HF_HOME "
        "on first use), a local open_clip checkpoint file, or a student checkpoint directory URI written "
        "by Student.save. An `arch` of 'hf-hub:org/repo' brings its own weights"))
    pretrained_text: bool = Field(True, description=(
        "load a Hugging Face text tower's own weights (e.g. the shipped MiniLM) when no full checkpoint is given"))
    train_towers: Literal["image", "text", "both"] = Field("image", description=(
        "towers that train: image (PAD; the catalog index must be rebuilt), text (index stays valid), both"))
    precision: str = Field("fp32", description="open_clip precision: fp32 on CPU; amp / bf16 / fp16 on GPU")
    device: str = Field("cpu", description="torch device the model lives on ('cpu', 'cuda')")


def _resolve_placeholders(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _resolve_placeholders(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_resolve_placeholders(v) for v in obj]
    if obj == MINILM_PLACEHOLDER:
        from distill.text_encoder import minilm_path

        return minilm_path()
    return obj


def raw_model_cfg(cfg: StudentConfig) -> tuple[str, dict[str, Any] | None]:
    """(name, unresolved config) of the architecture; config None for an open_clip built-in."""
    if cfg.model_cfg is not None:
        return "custom", dict(cfg.model_cfg)
    local = MODEL_CONFIG_DIR / f"{cfg.arch}.json"
    if local.is_file():
        return cfg.arch, json.loads(local.read_text())
    if cfg.arch.endswith(".json"):
        return Path(cfg.arch).stem, json.loads(storage.read_bytes(cfg.arch))
    return cfg.arch, None


@lru_cache(maxsize=64)
def _register(name: str, resolved_json: str) -> str:
    """Register a resolved config with open_clip's registry under a content-hashed name."""
    import open_clip

    safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in name)  # 'hf-hub:org/repo' -> a file name
    key = f"pd-{safe}-{hashlib.sha256(resolved_json.encode()).hexdigest()[:10]}"
    folder = Path(tempfile.gettempdir()) / f"persona-distill-model-configs-{os.getuid()}"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{key}.json"
    if not path.exists():
        tmp = folder / f".{key}.{os.getpid()}.tmp"
        tmp.write_text(resolved_json)
        os.replace(tmp, path)
    open_clip.factory.add_model_config(path)
    return key


def _open_clip_name(name: str, raw: dict[str, Any] | None) -> str:
    if raw is None:
        return name
    return _register(name, json.dumps(_resolve_placeholders(raw), sort_keys=True))


def state_dict_hash(state_dict: dict[str, torch.Tensor]) -> str:
    """sha256 over (name, dtype, shape, bytes) of every tensor, in name order."""
    h = hashlib.sha256()
    for name in sorted(state_dict):
        t = state_dict[name].detach().cpu().contiguous()
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def decode_images(images: list[bytes], preprocess) -> torch.Tensor:
    """(B, 3, H, W) float tensor: the shared decode (``distill.images``: the judge's pixels) +
    open_clip's own preprocess transform."""
    from distill.images import prepare_image

    tensors = [preprocess(prepare_image(data)) for data in images]
    return torch.stack(tensors) if tensors else torch.zeros(0)


class Student:
    """An open_clip model with the student's encode / score / save / load surface.

    ``model`` is the plain open_clip module (wrap it in DDP for training). ``preprocess`` is
    open_clip's inference transform, ``preprocess_train`` its training transform,
    ``tokenizer`` open_clip's tokenizer for the architecture.
    """

    def __init__(self, cfg: StudentConfig, model: torch.nn.Module, preprocess, preprocess_train, tokenizer,
                 arch_name: str, raw_cfg: dict[str, Any] | None):
        """``raw_cfg``: the unresolved open_clip model config (None for an open_clip built-in name)."""
        self.cfg = cfg
        self.model = model
        self.preprocess = preprocess
        self.preprocess_train = preprocess_train
        self.tokenizer = tokenizer
        self.arch_name = arch_name
        self.raw_cfg = raw_cfg
        self.device = torch.device(cfg.device)
        self.set_train_towers(cfg.train_towers)

    # ---- towers -------------------------------------------------------------------------
    @staticmethod
    def is_image_param(name: str) -> bool:
        return name.startswith("visual.")

    def set_train_towers(self, towers: str) -> None:
        """Freeze the tower(s) that do not train; ``logit_scale`` trains with either."""
        for name, p in self.model.named_parameters():
            if name in ("logit_scale", "logit_bias"):
                p.requires_grad = True
            elif self.is_image_param(name):
                p.requires_grad = towers in ("image", "both")
            else:
                p.requires_grad = towers in ("text", "both")
        self.cfg = self.cfg.model_copy(update={"train_towers": towers})

    def train_mode(self, model: torch.nn.Module | None = None) -> None:
        """Training mode for the towers that train, eval mode (no dropout) for frozen ones."""
        model = model or self.model
        towers = self.cfg.train_towers
        model.train(towers == "both" or towers == "text")
        if towers == "image":
            model.visual.train()
        elif towers == "text":
            model.visual.eval()

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    # ---- encoding -----------------------------------------------------------------------
    def image_tensor(self, images: list[bytes]) -> torch.Tensor:
        return decode_images(images, self.preprocess)

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        return self.tokenizer(list(texts))

    @torch.no_grad()
    def encode_image_tensor(self, pixels: torch.Tensor, batch_size: int = 256) -> np.ndarray:
        was_training = self.model.training
        self.model.eval()
        out = []
        for s in range(0, pixels.shape[0], batch_size):
            out.append(self.model.encode_image(pixels[s:s + batch_size].to(self.device), normalize=True)
                       .float().cpu().numpy())
        self.model.train(was_training)
        return np.concatenate(out) if out else np.zeros((0, self.embed_dim), np.float32)

    def encode_images(self, images: list[bytes], batch_size: int = 256) -> np.ndarray:
        """(N, D) float32 L2-normalised image embeddings of encoded image bytes."""
        out = [self.encode_image_tensor(self.image_tensor(images[s:s + batch_size]), batch_size)
               for s in range(0, len(images), batch_size)]
        return np.concatenate(out) if out else np.zeros((0, self.embed_dim), np.float32)

    def trim_padding(self, tokens: torch.Tensor) -> torch.Tensor:
        """Drop the pad columns every row has, for Hugging Face text towers.

        open_clip pads every text to ``context_length``; an HF tower masks pads out of attention and
        pooling, so cutting trailing all-pad columns gives the same embeddings for a fraction of the
        compute (a 12-token persona padded to 32 costs ~2x). open_clip's own causal tower is left as is.
        """
        pad_id = getattr(getattr(getattr(self.model, "text", None), "config", None), "pad_token_id", None)
        if pad_id is None or tokens.ndim != 2 or tokens.shape[1] == 0:
            return tokens
        used = (tokens != pad_id).any(dim=0).nonzero()
        return tokens[:, : int(used.max()) + 1] if used.numel() else tokens[:, :1]

    @torch.no_grad()
    def encode_texts(self, texts: list[str], batch_size: int = 256) -> np.ndarray:
        """(N, D) float32 L2-normalised text embeddings."""
        was_training = self.model.training
        self.model.eval()
        out = []
        for s in range(0, len(texts), batch_size):
            tokens = self.trim_padding(self.tokenize(texts[s:s + batch_size])).to(self.device)
            out.append(self.model.encode_text(tokens, normalize=True).float().cpu().numpy())
        self.model.train(was_training)
        return np.concatenate(out) if out else np.zeros((0, self.embed_dim), np.float32)

    @property
    def embed_dim(self) -> int:
        return int(getattr(self.model, "embed_dim", 0) or self.model.visual.output_dim)

    # ---- checkpoints --------------------------------------------------------------------
    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu() for k, v in self.model.state_dict().items()}

    @property
    def checkpoint_id(self) -> str:
        """sha256 content hash of the current weights."""
        return state_dict_hash(self.state_dict())

    def save(self, uri: str, extra: dict[str, Any] | None = None) -> str:
        """Write ``model.pt`` then ``student.json`` (last, so its presence means complete); returns the id."""
        sd = self.state_dict()
        ckpt_id = state_dict_hash(sd)
        buf = io.BytesIO()
        torch.save(sd, buf)
        storage.write_bytes_atomic(buf.getvalue(), storage.join(uri, WEIGHTS_FILE))
        meta = {
            "arch": self.arch_name,
            "model_cfg": self.raw_cfg,
            # the image transform the weights were trained with (a tag or hub repo may set its own)
            "preprocess_cfg": dict(getattr(self.model.visual, "preprocess_cfg", {}) or {}),
            "train_towers": self.cfg.train_towers,
            "checkpoint_id": ckpt_id,
            "extra": extra or {},
        }
        storage.write_json_atomic(meta, storage.join(uri, STUDENT_JSON))
        return ckpt_id

    @classmethod
    def load(cls, uri: str, **overrides: Any) -> "Student":
        """A student from a checkpoint directory; ``overrides`` set StudentConfig fields (e.g. device)."""
        meta = read_checkpoint_meta(uri)
        fields = {"arch": meta["arch"], "model_cfg": meta.get("model_cfg"), "pretrained": uri,
                  "train_towers": meta.get("train_towers", "image")}
        fields.update(overrides)
        return build_student(StudentConfig(**fields))


def read_checkpoint_meta(uri: str) -> dict[str, Any]:
    return storage.read_json(storage.join(uri, STUDENT_JSON))


def _is_student_checkpoint(uri: str) -> bool:
    return storage.exists(storage.join(uri, STUDENT_JSON))


def _hub_model_cfg(arch: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(model_cfg, preprocess_cfg) of an ``hf-hub:`` architecture, from the repository's
    ``open_clip_config.json`` (the file open_clip itself reads; cached in HF_HOME after the first load)."""
    from huggingface_hub import hf_hub_download

    path = hf_hub_download(arch[len("hf-hub:"):], "open_clip_config.json")
    config = json.loads(Path(path).read_text())
    return config["model_cfg"], config.get("preprocess_cfg", {})


def _local_weights(uri: str, stack: ExitStack) -> str:
    """A local file path of a student checkpoint's weights (remote URIs are copied to a temp file)."""
    weights = storage.join(uri, WEIGHTS_FILE)
    if "://" not in weights or weights.startswith("file://"):
        return weights.removeprefix("file://")
    tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="student-"))
    path = os.path.join(tmp, WEIGHTS_FILE)
    Path(path).write_bytes(storage.read_bytes(weights))
    return path


def _preprocess_kwargs(preprocess_cfg: dict[str, Any]) -> dict[str, Any]:
    """create_model_and_transforms' image_* arguments that reproduce a recorded preprocess config."""
    keys = {"mean": "image_mean", "std": "image_std", "interpolation": "image_interpolation",
            "resize_mode": "image_resize_mode"}
    return {arg: (tuple(preprocess_cfg[k]) if isinstance(preprocess_cfg[k], list) else preprocess_cfg[k])
            for k, arg in keys.items() if preprocess_cfg.get(k) is not None}


def build_student(cfg: StudentConfig) -> Student:
    """The open_clip model, transforms and tokenizer for ``cfg``, with frozen towers set.

    Weights load through open_clip's own ``pretrained=`` path (a tag downloads through the hub,
    a student checkpoint's ``model.pt`` is a local file), so open_clip logs a random
    initialisation only when there really are no weights."""
    import open_clip

    name, raw = raw_model_cfg(cfg)
    student_ckpt = cfg.pretrained if cfg.pretrained and _is_student_checkpoint(cfg.pretrained) else None
    preprocess_cfg: dict[str, Any] = {}
    if student_ckpt:
        meta = read_checkpoint_meta(student_ckpt)
        if cfg.model_cfg is None and meta.get("model_cfg") is not None and name != meta["arch"]:
            raise ValueError(f"checkpoint {student_ckpt!r} is arch {meta['arch']!r}, config asks {name!r}")
        preprocess_cfg = meta.get("preprocess_cfg") or {}
        if raw is None and name.startswith("hf-hub:"):  # an older checkpoint without its config
            raw, preprocess_cfg = _hub_model_cfg(name)[0], preprocess_cfg or _hub_model_cfg(name)[1]
    oc_name = _open_clip_name(name, raw)
    with ExitStack() as stack:
        pretrained = _local_weights(student_ckpt, stack) if student_ckpt else cfg.pretrained
        model, preprocess_train, preprocess = open_clip.create_model_and_transforms(
            oc_name,
            pretrained=pretrained,
            precision=cfg.precision,
            device=cfg.device,
            # a full checkpoint overwrites the text tower anyway: do not load the HF weights twice
            pretrained_text=cfg.pretrained_text and not student_ckpt,
            **_preprocess_kwargs(preprocess_cfg),
        )
    tokenizer = open_clip.get_tokenizer(oc_name)
    if raw is None and name.startswith("hf-hub:"):
        # record the repository's config so a checkpoint of this student loads without the hub
        raw = _hub_model_cfg(name)[0]
    return Student(cfg, model, preprocess, preprocess_train, tokenizer, name, raw)
