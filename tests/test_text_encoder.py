"""The sentence encoder (ONNX Runtime over a one-time export) gives sentence-transformers' embeddings."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

from distill.text_encoder import SentenceEncoder, exported_onnx, minilm_path, model_settings

TEXTS = [
    "a gift for a mother who loves gardening",
    "someone who collects vintage cameras",
    "ceramic mug with a cat",
    "Tote bag: rocket ship, navy",
    "",
    "émoji ☕ coffee lover & tea drinker!",
    "a teenager into chess, skateboarding and late-night physics videos " * 30,  # over 256 tokens: truncated
] + [f"t-shirt with a {w} print, size {s}" for w in ("guitar", "tennis", "octopus", "cactus") for s in "SML"]


def test_onnx_embeddings_equal_sentence_transformers():
    from sentence_transformers import SentenceTransformer

    ref = SentenceTransformer(minilm_path(), device="cpu", local_files_only=True).encode(
        TEXTS, convert_to_numpy=True, normalize_embeddings=True, show_progress_bar=False)
    enc = SentenceEncoder(batch_size=4)  # batches pad to different lengths than sentence-transformers'
    got = enc.encode(TEXTS)
    assert got.shape == ref.shape == (len(TEXTS), 384) and got.dtype == np.float32
    assert np.abs(got - ref).max() < 1e-5
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    # what the text oracle and the hidden utility use: the ranking of titles for a persona
    assert ((got @ got.T).argsort(1) == (ref @ ref.T).argsort(1))[:, -5:].all()
    assert np.array_equal(enc.encode(TEXTS[:3]), got[:3])  # cached rows come back unchanged


def test_the_export_is_made_once_and_follows_the_model_files(tmp_path, monkeypatch):
    monkeypatch.setenv("PERSONA_DISTILL_HOME", str(tmp_path / "home"))
    model = tmp_path / "model"
    shutil.copytree(minilm_path(), model)
    first = exported_onnx(str(model))
    assert first.startswith(str(tmp_path / "home" / "models"))
    made = os.stat(first).st_mtime_ns
    assert exported_onnx(str(model)) == first and os.stat(first).st_mtime_ns == made  # reused
    cfg = model / "sentence_bert_config.json"
    cfg.write_text(json.dumps({**json.loads(cfg.read_text()), "max_seq_length": 128}))
    assert exported_onnx(str(model)) != first  # a changed model directory gets its own export
    assert model_settings(str(model)) == {"pooling": "mean", "max_seq_length": 128}


def test_a_directory_it_cannot_reproduce_is_refused_naming_the_file(tmp_path):
    with pytest.raises(ValueError, match=r"modules\.json: not found"):
        model_settings(str(tmp_path))
    shutil.copytree(minilm_path(), tmp_path / "m")
    pooling = tmp_path / "m" / "1_Pooling" / "config.json"
    pooling.write_text(json.dumps({**json.loads(pooling.read_text()), "pooling_mode_max_tokens": True}))
    with pytest.raises(ValueError, match=r"1_Pooling/config\.json: pooling .* not one of mean or CLS"):
        model_settings(str(tmp_path / "m"))
