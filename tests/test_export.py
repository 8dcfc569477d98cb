"""distill.export: the student as a plain open_clip checkpoint and as an ONNX text tower."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from distill.export import export_open_clip, export_text_onnx, read_export_meta
from distill.student import StudentConfig, build_student

TEXTS = ["a gift for a mother who loves gardening", "a reserved yet passionate mechanic who rebuilds "
         "old motorbikes and restores vintage radios on weekends", "cat"]


def _images(n: int = 3) -> list[bytes]:
    import io

    from PIL import Image

    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(buf, format="PNG")
        out.append(buf.getvalue())
    return out


@pytest.fixture(scope="module", params=["tiny-test", "demo-minilm-vit"])
def student(request):
    torch.manual_seed(3)
    s = build_student(StudentConfig(arch=request.param))
    with torch.no_grad():  # weights unlike any fresh init, so equality cannot come from a re-init
        for p in s.model.visual.parameters():
            p.add_(0.01 * torch.randn_like(p))
    return s


def test_open_clip_loads_the_export_with_identical_embeddings(student, tmp_path):
    import open_clip

    paths = export_open_clip(student, str(tmp_path))
    meta = read_export_meta(str(tmp_path))
    assert meta["checkpoint_id"] == student.checkpoint_id and meta["arch"] == student.arch_name
    open_clip.add_model_config(paths["model_config"])
    # the plain call a user of open_clip makes
    model, _, preprocess = open_clip.create_model_and_transforms(student.arch_name, pretrained=paths["weights"])
    tokenizer = open_clip.get_tokenizer(student.arch_name)
    model.eval()
    with torch.no_grad():
        text = model.encode_text(tokenizer(TEXTS), normalize=True).numpy()
        from distill.student import decode_images

        image = model.encode_image(decode_images(_images(), preprocess), normalize=True).numpy()
    # torch picks another attention kernel when no parameter requires grad (the student's frozen
    # text tower), which moves the last float bit; the same weights give the same numbers:
    np.testing.assert_allclose(text, student.encode_texts(TEXTS), atol=1e-6)
    np.testing.assert_allclose(image, student.encode_images(_images()), atol=1e-6)
    sd = model.state_dict()
    assert sorted(sd) == sorted(student.state_dict()) and all(
        torch.equal(sd[k], v) for k, v in student.state_dict().items())
    grads = dict(student.model.named_parameters())
    for name, p in model.named_parameters():
        p.requires_grad_(grads[name].requires_grad)
    with torch.no_grad():
        # (the student cuts all-pad columns, which HF towers mask anyway)
        tokens = student.trim_padding(tokenizer(TEXTS))
        np.testing.assert_array_equal(model.encode_text(tokens, normalize=True).numpy(), student.encode_texts(TEXTS))
        np.testing.assert_array_equal(model.encode_image(decode_images(_images(), preprocess), normalize=True).numpy(),
                                      student.encode_images(_images()))
    # and open_clip's own local-dir layout loads config and weights together
    model2, _, _ = open_clip.create_model_and_transforms(f"local-dir:{tmp_path}")
    model2.eval()
    with torch.no_grad():
        np.testing.assert_allclose(model2.encode_text(tokenizer(TEXTS), normalize=True).numpy(),
                                   student.encode_texts(TEXTS), atol=1e-6)


def test_onnx_text_tower_equals_torch(student, tmp_path):
    from serving.encoders import OnnxTextEncoder

    path = export_text_onnx(student, str(tmp_path))
    enc = OnnxTextEncoder(str(tmp_path), student.tokenizer, threads=1)
    assert enc.checkpoint_hash == student.checkpoint_id and enc.dim == student.embed_dim
    for texts in (TEXTS, TEXTS[:1], TEXTS * 7):  # other batch sizes and padded lengths than traced
        got = enc.encode_texts(texts)
        np.testing.assert_allclose(got, student.encode_texts(texts), atol=1e-4)
    assert path.endswith("text_tower.onnx")


def test_export_cli_user_error(tmp_path, capsys):
    from distill.export import main

    assert main([str(tmp_path / "nope"), str(tmp_path / "out")]) == 2
    assert "not a student checkpoint" in capsys.readouterr().err
