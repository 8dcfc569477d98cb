"""jobs/index.py end to end: a small catalog embedded by the student on a Ray Data actor pool,
embeddings Parquet written and reused, shards built, vectors equal to in-process encoding."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from distill import datasets, storage

REPO = Path(__file__).resolve().parents[1]


def _catalog(root: Path, n: int = 48) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    images = []
    for _ in range(n):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(buf, format="PNG")
        images.append(buf.getvalue())
    attrs = [[("image_uri", f"s3://bucket/img/{i}.png")] if i % 2 else None for i in range(n)]
    table = pa.table({"item_id": [f"p{i:03d}" for i in range(n)], "title": [f"thing {i}" for i in range(n)],
                      "image": images, "split": ["test"] * n,
                      "attributes": pa.array(attrs, type=pa.map_(pa.string(), pa.string()))})
    datasets.write_catalog_part(table.slice(0, n // 2), str(root), "test-00000")
    datasets.write_catalog_part(table.slice(n // 2), str(root), "test-00001")
    storage.write_json_atomic({"kind": "test"}, datasets.manifest_path(str(root)))  # complete root: manifest last


@pytest.mark.slow
def test_index_job_embeds_builds_and_reuses(ray_local, tmp_path):
    from distill.config import build_config
    from distill.embed import read_embeddings
    from serving.encoders import load_encoder
    from serving.index import ShardedIndex, read_manifest
    from serving.pipeline import IndexJobConfig, run_index_job

    from distill.ray_utils import light_task_slots

    def footer_readers() -> int:
        # the GCS's own actor table: Ray's public State API (ray.util.state) is served by the
        # dashboard, which the tests' local Ray does not start
        return sum(a["ActorClassName"] == "FooterReader" for a in ray_local._private.state.actors().values())

    _catalog(tmp_path / "ds")
    cfg = build_config(IndexJobConfig, None, [f"dataset={tmp_path / 'ds'}", f"output={tmp_path / 'idx'}",
                                              "student.arch=tiny-test", "index.n_shards=2", "embed.batch_size=16",
                                              "embed.max_actors=1"])
    before = footer_readers()
    m = run_index_job(cfg, progress=False)
    # the catalog (two parts) was read once, through one Parquet footer reader (Ray Data's own
    # default is 32 actors per read): distill.ray_utils.footer_readers_for
    assert footer_readers() - before == 1 < light_task_slots()
    assert m.n_items == 48 and m.n_shards == 2 and m.dim == 32 and m.checkpoint_uri
    assert read_manifest(str(tmp_path / "idx")).version == m.version
    enc = load_encoder(m.checkpoint_uri)
    assert enc.checkpoint_hash == m.checkpoint_hash == m.checkpoint_id  # the content id, as in distill/, never a URI
    emb = read_embeddings(m.embeddings_uri).sort_by("item_id")
    vecs = np.stack(emb.column("vector").to_numpy(zero_copy_only=False))
    images = datasets.read_catalog(str(tmp_path / "ds")).sort_by("item_id").column("image").to_pylist()
    np.testing.assert_allclose(vecs, enc.encode_images(images), atol=1e-5)
    index = ShardedIndex(str(tmp_path / "idx"))
    scores, _ = index.search(vecs[:5], 1)
    np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-4)  # every item finds itself (or a twin)
    assert index.item("p001")["image_uri"] == "s3://bucket/img/1.png"
    assert index.item("p002")["image_uri"] == "/v1/items/p002/image"
    from serving.app import _read_image  # what GET /v1/items/{id}/image serves

    assert _read_image(m.dataset_root, "p002") == images[2] and _read_image(m.dataset_root, "nope") is None

    # a second run reuses the embeddings and the saved untrained student, and adds a version
    m2 = run_index_job(cfg.model_copy(update={"index": cfg.index.model_copy(update={"factory": "HNSW8"})}),
                       progress=False)
    assert m2.embeddings_uri == m.embeddings_uri and m2.checkpoint_hash == m.checkpoint_hash
    assert m2.version != m.version and read_manifest(str(tmp_path / "idx")).factory == "HNSW8"


def test_index_job_prints_config():
    out = subprocess.run([sys.executable, str(REPO / "jobs" / "index.py"), "--config", str(REPO / "configs" / "index.yaml"),
                          "index.n_shards=3", "--print-config"], capture_output=True, text=True, check=True)
    assert "n_shards: 3" in out.stdout and "factory: Flat" in out.stdout
