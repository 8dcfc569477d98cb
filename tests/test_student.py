"""The open_clip student factory: configs, towers, encodings, checkpoints with a content hash."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from distill.student import Student, StudentConfig, build_student, read_checkpoint_meta


def _png(colour: str, size: int = 40) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def tiny() -> Student:
    torch.manual_seed(0)
    return build_student(StudentConfig(arch="tiny-test"))


def test_tiny_encodes_normalised(tiny):
    imgs = tiny.encode_images([_png("red"), _png("blue"), _png("green")])
    txts = tiny.encode_texts(["a cat", "a dog"])
    assert imgs.shape == (3, 32) and txts.shape == (2, 32)
    assert imgs.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(imgs, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(txts, axis=1), 1.0, atol=1e-5)
    # the tokenizer and preprocess are open_clip's own objects
    import open_clip

    assert isinstance(tiny.tokenizer, open_clip.tokenizer.SimpleTokenizer)
    assert tiny.image_tensor([_png("red")]).shape == (1, 3, 32, 32)


def test_train_towers_freeze(tiny):
    def trainable(prefix_visual: bool) -> int:
        return sum(p.numel() for n, p in tiny.model.named_parameters()
                   if p.requires_grad and n.startswith("visual.") == prefix_visual and n != "logit_scale")

    tiny.set_train_towers("image")
    assert trainable(True) > 0 and trainable(False) == 0
    tiny.set_train_towers("text")
    assert trainable(True) == 0 and trainable(False) > 0
    tiny.set_train_towers("both")
    assert trainable(True) > 0 and trainable(False) > 0
    tiny.set_train_towers("image")


def test_save_load_roundtrip_hash(tiny, tmp_path):
    uri = str(tmp_path / "ckpt")
    ckpt_id = tiny.save(uri, extra={"step": 3})
    assert ckpt_id == tiny.checkpoint_id and len(ckpt_id) == 64
    meta = read_checkpoint_meta(uri)
    assert meta["checkpoint_id"] == ckpt_id and meta["extra"] == {"step": 3}
    loaded = Student.load(uri)
    assert loaded.checkpoint_id == ckpt_id
    imgs = [_png("red"), _png("yellow")]
    np.testing.assert_allclose(loaded.encode_images(imgs), tiny.encode_images(imgs), atol=1e-6)
    # changing one weight changes the id
    with torch.no_grad():
        next(loaded.model.parameters()).add_(1e-3)
    assert loaded.checkpoint_id != ckpt_id
    # a student config with pretrained=<checkpoint dir> is the same as Student.load
    again = build_student(StudentConfig(arch="tiny-test", pretrained=uri))
    assert again.checkpoint_id == ckpt_id


def test_custom_json_and_open_clip_checkpoint_file(tiny, tmp_path):
    """An architecture from a JSON path / inline dict, weights from a plain open_clip state_dict file."""
    from distill.student import MODEL_CONFIG_DIR

    cfg = json.loads((MODEL_CONFIG_DIR / "tiny-test.json").read_text())
    path = tmp_path / "my-arch.json"
    path.write_text(json.dumps(cfg))
    weights = tmp_path / "weights.pt"
    torch.save(tiny.model.state_dict(), weights)
    from_path = build_student(StudentConfig(arch=str(path), pretrained=str(weights)))
    inline = build_student(StudentConfig(model_cfg=cfg, pretrained=str(weights)))
    assert from_path.checkpoint_id == tiny.checkpoint_id == inline.checkpoint_id


def test_demo_student_text_tower_is_frozen_minilm():
    from distill.text_encoder import shared_encoder

    demo = build_student(StudentConfig())  # defaults: demo-minilm-vit, image tower trains
    texts = ["a gift for a mother who loves gardening", "green tote bag with a sunflower print"]
    ours = demo.encode_texts(texts)
    ref = shared_encoder().encode(texts)
    np.testing.assert_allclose((ours * ref).sum(1), 1.0, atol=1e-4)
    import open_clip

    assert isinstance(demo.tokenizer, open_clip.tokenizer.HFTokenizer)
    assert not any(p.requires_grad for n, p in demo.model.named_parameters() if n.startswith("text."))
    assert all(p.requires_grad for n, p in demo.model.named_parameters() if n.startswith("visual."))
    assert demo.encode_images([_png("red", 112)]).shape == (1, 384)

    # pad columns are cut for the HF tower (compute), with the same embeddings as the padded batch
    tokens = demo.tokenize(texts)
    trimmed = demo.trim_padding(tokens)
    assert trimmed.shape[1] == int((tokens != 0).sum(1).max()) < tokens.shape[1] == 32
    demo.model.eval()
    with torch.no_grad():
        padded = demo.model.encode_text(tokens, normalize=True).numpy()
    np.testing.assert_allclose(ours, padded, atol=1e-5)


def test_trim_padding_leaves_open_clip_causal_tower_alone(tiny):
    tokens = tiny.tokenize(["a cat"])
    assert tiny.trim_padding(tokens).shape == tokens.shape


@pytest.mark.slow
def test_named_architecture_from_local_checkpoint(tmp_path):
    """The production path: ViT-B-32 with pretrained weights from a local open_clip checkpoint."""
    import open_clip

    torch.manual_seed(1)
    reference = open_clip.create_model("ViT-B-32", pretrained=None)
    weights = tmp_path / "vit-b-32.pt"
    torch.save({"state_dict": reference.state_dict()}, weights)
    student = build_student(StudentConfig(arch="ViT-B-32", pretrained=str(weights)))
    from distill.student import state_dict_hash

    assert student.checkpoint_id == state_dict_hash(reference.state_dict())
    emb = student.encode_images([_png("red", 224)])
    assert emb.shape == (1, 512)
