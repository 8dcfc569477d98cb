"""Export a student to what other tools load: a plain open_clip checkpoint and an ONNX text tower.

    python -m distill.export <student checkpoint dir> <out dir> [--no-onnx]

``export_open_clip`` writes, into one directory:

    open_clip_config.json            {"model_cfg": ..., "preprocess_cfg": ...}: open_clip's own
                                     ``local-dir:`` layout, so ``create_model_and_transforms(
                                     "local-dir:<dir>")`` loads config and weights together
    <arch>.json                      the same model config alone, for ``open_clip.add_model_config``
    open_clip_pytorch_model.bin      the state_dict (``torch.save``), the file ``pretrained=`` takes
    export.json                      the student's checkpoint id (sha256 over its weights) and arch

so ``open_clip.add_model_config("<dir>/<arch>.json")`` then
``open_clip.create_model_and_transforms("<arch>", pretrained="<dir>/open_clip_pytorch_model.bin")``
builds the same model with the same embeddings (built-in archs such as ``ViT-B-32`` need no
``add_model_config``). A config whose text tower is a local Hugging Face model (the demo
student's MiniLM) records that model's absolute path: the export loads where that path exists.

``export_text_onnx`` traces the text tower (token ids -> L2-normalised embedding) to ONNX with
dynamic batch and, for Hugging Face towers (which mask pads), dynamic sequence length. The
serving query path runs it with ONNX Runtime (``serving.encoders.OnnxTextEncoder``), which on
these small CPUs encodes personas faster than eager torch with the same numbers (tested within
1e-4). ``export.json`` beside it ties the file to the student's checkpoint id, which the endpoint
checks against the index manifest like any other encoder.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
from typing import Any

import torch

from distill import storage

OPEN_CLIP_WEIGHTS = "open_clip_pytorch_model.bin"
OPEN_CLIP_CONFIG = "open_clip_config.json"
ONNX_TEXT = "text_tower.onnx"
EXPORT_JSON = "export.json"
ONNX_OPSET = 17


def _resolved_cfg(student) -> dict[str, Any]:
    """The open_clip model config of a loaded student, placeholders ($MINILM) resolved."""
    import open_clip

    from distill.student import _resolve_placeholders

    if student.raw_cfg is not None:
        return _resolve_placeholders(student.raw_cfg)
    cfg = open_clip.get_model_config(student.arch_name)
    if cfg is None:
        raise ValueError(f"open_clip has no config for arch {student.arch_name!r}")
    return cfg


def _write_meta(out_dir: str, student, **extra: Any) -> dict:
    path = storage.join(out_dir, EXPORT_JSON)
    meta = storage.read_json(path) if storage.exists(path) else {}
    meta.update({"arch": student.arch_name, "checkpoint_id": student.checkpoint_id,
                 "embed_dim": student.embed_dim, **extra})
    storage.write_json_atomic(meta, path)
    return meta


def _load(student_or_uri):
    from distill.student import Student

    if isinstance(student_or_uri, str):
        return Student.load(student_or_uri)
    return student_or_uri


def export_open_clip(student_or_uri, out_dir: str) -> dict[str, str]:
    """Write the student as a plain open_clip checkpoint (see the module docstring); returns the paths."""
    student = _load(student_or_uri)
    cfg = _resolved_cfg(student)
    buf = io.BytesIO()
    torch.save(student.state_dict(), buf)
    weights = storage.join(out_dir, OPEN_CLIP_WEIGHTS)
    storage.write_bytes_atomic(buf.getvalue(), weights)
    from open_clip.model import get_model_preprocess_cfg

    preprocess = get_model_preprocess_cfg(student.model)
    storage.write_json_atomic({"model_cfg": cfg, "preprocess_cfg": preprocess}, storage.join(out_dir, OPEN_CLIP_CONFIG))
    model_json = storage.join(out_dir, f"{student.arch_name}.json")
    storage.write_json_atomic(cfg, model_json)
    _write_meta(out_dir, student, open_clip_weights=OPEN_CLIP_WEIGHTS, open_clip_config=OPEN_CLIP_CONFIG)
    return {"weights": weights, "model_config": model_json, "dir": out_dir}


class _TextTower(torch.nn.Module):
    """token ids -> L2-normalised text embedding (what the query path needs, nothing else)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model.encode_text(input_ids, normalize=True)


def is_hf_text(student) -> bool:
    return getattr(getattr(getattr(student.model, "text", None), "config", None), "pad_token_id", None) is not None


def trace_to_onnx(module: torch.nn.Module, inputs: tuple, out_uri: str, input_names: list[str],
                  dynamic_axes: dict[str, dict[int, str]]) -> None:
    """Trace ``module`` on ``inputs`` into one ONNX graph with the output ``embedding``, written
    atomically to ``out_uri``. Shared by the student's text tower (below) and the demo's sentence
    encoder (``distill.text_encoder``): two different networks, one way of exporting them.

    TorchScript tracing (``dynamo=False``) at opset ``ONNX_OPSET``: it handles Hugging Face towers
    without onnxscript, and the traced graphs are tested against eager torch."""
    import tempfile
    import warnings

    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript tracer's notes about HF's Python branches
        path = os.path.join(tmp, "graph.onnx")
        torch.onnx.export(module.eval(), inputs, path, dynamo=False, input_names=input_names,
                          output_names=["embedding"], dynamic_axes=dynamic_axes, opset_version=ONNX_OPSET)
        with open(path, "rb") as f:
            storage.write_bytes_atomic(f.read(), out_uri)


def export_text_onnx(student_or_uri, out_dir: str) -> str:
    """Trace the text tower to ``<out_dir>/text_tower.onnx`` (atomic); returns its path."""
    student = _load(student_or_uri)
    model = student.model.eval()
    sample = student.trim_padding(student.tokenize(["a gift for a mother who loves gardening", "a cat lover"]))
    dynamic = {"input_ids": {0: "batch"}, "embedding": {0: "batch"}}
    if is_hf_text(student):  # HF towers mask pads, so the padded length may vary per batch
        dynamic["input_ids"][1] = "seq"
    out = storage.join(out_dir, ONNX_TEXT)
    trace_to_onnx(_TextTower(model), (sample,), out, ["input_ids"], dynamic)
    pad = model.text.config.pad_token_id if is_hf_text(student) else None
    _write_meta(out_dir, student, onnx_text=ONNX_TEXT, onnx_pad_token_id=pad, onnx_opset=ONNX_OPSET)
    return out


def read_export_meta(out_dir: str) -> dict:
    return storage.read_json(storage.join(out_dir, EXPORT_JSON))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m distill.export", description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint", help="student checkpoint directory (Student.save)")
    ap.add_argument("out", help="output directory")
    ap.add_argument("--no-onnx", action="store_true", help="skip the ONNX text tower")
    args = ap.parse_args(argv)
    from distill.student import STUDENT_JSON

    if not storage.exists(storage.join(args.checkpoint, STUDENT_JSON)):
        print(f"export failed: {args.checkpoint!r} is not a student checkpoint (no {STUDENT_JSON})", file=sys.stderr)
        return 2
    from distill.student import Student

    student = Student.load(args.checkpoint)
    paths = export_open_clip(student, args.out)
    print(f"open_clip checkpoint: {paths['weights']} (model config {paths['model_config']})")
    if not args.no_onnx:
        print(f"ONNX text tower: {export_text_onnx(student, args.out)}")
    print(json.dumps(read_export_meta(args.out)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
