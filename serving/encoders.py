"""The student as the index and the endpoint see it: dimension, checkpoint identity, two towers.

``load_encoder(checkpoint_uri)`` wraps a :class:`distill.student.Student` checkpoint in
:class:`StudentEncoder`, which satisfies ``serving.index.TextEncoder`` / ``ImageEncoder``.
The checkpoint hash is the student's own content id (sha256 over its weights), computed once
at load: the index manifest records it and the endpoint refuses an encoder that differs.

Query encoding is the endpoint's main CPU cost, so it has two cheaper forms, chosen in the serve
config (``query_encoder``): :class:`OnnxTextEncoder` runs the text tower exported by
``distill.export`` under ONNX Runtime (same embeddings within 1e-4, faster than eager torch on
small CPUs), and :class:`CachedTextEncoder` keeps a bounded LRU of persona -> embedding, since
shoppers and front-ends repeat the same personas.
"""

from __future__ import annotations

import os
from collections import OrderedDict

import numpy as np


class StudentEncoder:
    """A loaded student checkpoint with the identity fields an index is checked against."""

    def __init__(self, student, checkpoint_uri: str | None = None):
        self.student = student
        self.checkpoint_hash: str = student.checkpoint_id
        self.checkpoint_id: str = checkpoint_uri or f"{student.arch_name}@{self.checkpoint_hash[:12]}"
        self.checkpoint_uri = checkpoint_uri
        self.dim: int = int(student.embed_dim)

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        return np.ascontiguousarray(self.student.encode_texts(list(texts)), dtype=np.float32)

    def encode_images(self, images: list[bytes]) -> np.ndarray:
        return np.ascontiguousarray(self.student.encode_images(list(images)), dtype=np.float32)


def load_encoder(checkpoint_uri: str, device: str = "cpu", torch_threads: int | None = None) -> StudentEncoder:
    """A student checkpoint directory (``Student.save``) as an encoder, in eval mode."""
    import torch

    from distill.student import Student

    if torch_threads:
        torch.set_num_threads(torch_threads)
    student = Student.load(checkpoint_uri, device=device)
    student.model.eval()
    return StudentEncoder(student, checkpoint_uri)


class OnnxTextEncoder:
    """The text tower exported by ``distill.export.export_text_onnx``, under ONNX Runtime.

    ``tokenizer`` is the student's open_clip tokenizer (token ids are the ONNX input); trailing
    all-pad columns are cut for Hugging Face towers, exactly as ``Student.trim_padding`` does.
    """

    def __init__(self, export_dir: str, tokenizer, threads: int = 1, checkpoint_id: str | None = None):
        import onnxruntime as ort

        from distill import storage
        from distill.export import ONNX_TEXT, read_export_meta

        meta = read_export_meta(export_dir)
        if not meta.get("onnx_text"):
            raise FileNotFoundError(f"{export_dir!r} holds no ONNX text tower (run python -m distill.export)")
        self.tokenizer = tokenizer
        self.pad_id = meta.get("onnx_pad_token_id")
        self.checkpoint_hash: str = meta["checkpoint_id"]
        self.checkpoint_id: str = checkpoint_id or f"{meta['arch']}@{self.checkpoint_hash[:12]}"
        self.dim: int = int(meta["embed_dim"])
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(storage.read_bytes(storage.join(export_dir, ONNX_TEXT)), opts,
                                            providers=["CPUExecutionProvider"])

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        ids = self.tokenizer(list(texts)).numpy().astype(np.int64)
        if self.pad_id is not None:
            used = np.flatnonzero((ids != self.pad_id).any(axis=0))
            ids = ids[:, : int(used.max()) + 1 if used.size else 1]
        out = self.session.run(None, {"input_ids": np.ascontiguousarray(ids)})[0]
        return np.ascontiguousarray(out, dtype=np.float32)


class CachedTextEncoder:
    """A bounded LRU of text -> embedding in front of any text encoder (``size`` 0 = no cache)."""

    def __init__(self, inner, size: int = 10_000):
        self.inner, self.size = inner, size
        self.dim, self.checkpoint_id, self.checkpoint_hash = inner.dim, inner.checkpoint_id, inner.checkpoint_hash
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self.hits = self.misses = 0
        self.last_encoded = 0  # texts actually encoded by the last call (the encoder batch size)

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        if self.size <= 0:
            self.last_encoded = len(texts)
            return self.inner.encode_texts(texts)
        missing = [t for t in dict.fromkeys(texts) if t not in self._cache]
        self.last_encoded = len(missing)
        self.misses += len(missing)
        self.hits += len(texts) - len(missing)
        if missing:
            for t, v in zip(missing, self.inner.encode_texts(missing)):
                self._cache[t] = v
        out = np.empty((len(texts), self.dim), np.float32)
        for i, t in enumerate(texts):
            out[i] = self._cache[t]
            self._cache.move_to_end(t)
        while len(self._cache) > self.size:
            self._cache.popitem(last=False)
        return out


def tokenizer_for(checkpoint_uri: str):
    """The open_clip tokenizer of a student checkpoint's arch, without loading its weights."""
    import open_clip

    from distill.student import StudentConfig, _open_clip_name, raw_model_cfg, read_checkpoint_meta

    meta = read_checkpoint_meta(checkpoint_uri)
    cfg = StudentConfig(arch=meta["arch"], model_cfg=meta["model_cfg"]) if meta.get("model_cfg") is not None \
        else StudentConfig(arch=meta["arch"])
    name, raw = raw_model_cfg(cfg)
    return open_clip.get_tokenizer(_open_clip_name(name, raw))


def default_export_dir(checkpoint_hash: str) -> str:
    """Where a replica exports a checkpoint's ONNX text tower when the config names no export."""
    import tempfile

    return os.path.join(tempfile.gettempdir(), f"persona-distill-exports-{os.getuid()}", checkpoint_hash[:16])


def onnx_text_encoder(student_encoder: StudentEncoder, export_dir: str | None, threads: int = 1) -> OnnxTextEncoder:
    """An ONNX text encoder for a loaded student: from ``export_dir`` (or the default cache
    directory), exporting it there first when that directory holds no export of this checkpoint."""
    from distill import storage
    from distill.export import EXPORT_JSON, export_text_onnx, read_export_meta

    path = export_dir or default_export_dir(student_encoder.checkpoint_hash)
    meta_uri = storage.join(path, EXPORT_JSON)
    fresh = storage.exists(meta_uri) and read_export_meta(path).get("onnx_text") \
        and read_export_meta(path).get("checkpoint_id") == student_encoder.checkpoint_hash
    if not fresh:
        if export_dir:  # a named export of another checkpoint is the user's mistake, not to overwrite
            if storage.exists(meta_uri):
                return OnnxTextEncoder(path, student_encoder.student.tokenizer, threads,
                                       student_encoder.checkpoint_id)  # the identity check refuses it
        export_text_onnx(student_encoder.student, path)
    return OnnxTextEncoder(path, student_encoder.student.tokenizer, threads, student_encoder.checkpoint_id)
