"""Sharded FAISS index: exact merge across shards, atomic versions, refusal of bad state."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from distill import storage
from serving.index import (
    IndexBuildConfig,
    IndexRefusedError,
    ShardedIndex,
    build_index,
    check_encoder,
    embeddings_table,
    exact_search,
    merge_topk,
    normalize,
    read_manifest,
    resolve_version,
    shard_of,
)


def _data(n=600, dim=16, seed=0):
    rng = np.random.default_rng(seed)
    vecs = normalize(rng.standard_normal((n, dim)).astype(np.float32))
    ids = [f"item-{i:05d}" for i in range(n)]
    return ids, vecs, embeddings_table(ids, vecs, titles=[f"title {i}" for i in range(n)],
                                       image_uris=[f"mem://{i}" for i in range(n)])


class _Enc:
    def __init__(self, dim, h="ckpt-hash", cid="ckpt"):
        self.dim, self.checkpoint_hash, self.checkpoint_id = dim, h, cid


@pytest.mark.parametrize("n_shards", [1, 2, 3])
def test_flat_shards_merge_exactly(tmp_path, n_shards):
    ids, vecs, table = _data()
    m = build_index(table, str(tmp_path), "ckpt", "ckpt-hash", IndexBuildConfig(n_shards=n_shards), progress=False)
    assert m.n_items == len(ids) and sum(s.n_items for s in m.shards) == len(ids)
    assert all(s.n_items > 0 for s in m.shards)
    index = ShardedIndex(str(tmp_path))
    q = normalize(np.random.default_rng(1).standard_normal((20, 16)).astype(np.float32))
    for k in (1, 10, 250, len(ids) + 5):  # k beyond a shard's size, and beyond the catalog
        got_s, got_i = index.search(q, k)
        want_s, want_i = exact_search(vecs, ids, q, k)
        assert got_i == want_i
        np.testing.assert_allclose(got_s[:, :want_s.shape[1]], want_s, atol=1e-5)
    assert index.item("item-00007") == {"item_id": "item-00007", "title": "title 7", "image_uri": "mem://7"}
    assert index.item("nope") is None


def test_merge_topk_ties_and_padding():
    a = (np.array([[0.9, 0.5, -np.inf]], np.float32), [["b", "d", None]])
    b = (np.array([[0.9, 0.7]], np.float32), [["a", "c"]])
    s, i = merge_topk([a, b], 3)
    assert i == [["a", "b", "c"]]
    np.testing.assert_allclose(s, [[0.9, 0.9, 0.7]])
    assert merge_topk([b, a], 3)[1] == i  # independent of shard order


@pytest.mark.parametrize("factory,params", [("IVF16,Flat", "nprobe=16"), ("HNSW16", "efSearch=256"),
                                            ("IVF8,PQ4x4,RFlat", "nprobe=8,k_factor_rf=64")])
def test_ann_factories_train_once_and_recall(tmp_path, factory, params):
    ids, vecs, table = _data(n=2000)
    cfg = IndexBuildConfig(factory=factory, n_shards=2, train_sample=1500, search_params=params)
    m = build_index(table, str(tmp_path), "ckpt", "ckpt-hash", cfg, progress=False)
    assert m.factory == factory and m.search_params == params
    q = normalize(np.random.default_rng(2).standard_normal((30, 16)).astype(np.float32))
    _, got = ShardedIndex(str(tmp_path)).search(q, 10)
    _, want = exact_search(vecs, ids, q, 10)
    recall = np.mean([len(set(g) & set(w)) / 10 for g, w in zip(got, want)])
    assert recall >= 0.95, recall


def test_versions_and_current_pointer(tmp_path):
    ids, vecs, table = _data(n=100)
    root = str(tmp_path / "idx")
    with pytest.raises(IndexRefusedError, match="no index"):
        read_manifest(root)
    m1 = build_index(table, root, "a", "ha", IndexBuildConfig(version="v1"), progress=False)
    m2 = build_index(table, root, "b", "hb", IndexBuildConfig(version="v2", make_current=False), progress=False)
    assert resolve_version(root) == "v1" and m1.version == "v1" and m2.version == "v2"
    assert read_manifest(root, "v2").checkpoint_id == "b"
    with pytest.raises(ValueError, match="already exists"):
        build_index(table, root, "b", "hb", IndexBuildConfig(version="v2"), progress=False)
    # a version without its manifest (a build killed half-way) is never readable
    os.remove(os.path.join(root, "versions", "v2", "manifest.json"))
    with pytest.raises(IndexRefusedError, match="incomplete"):
        read_manifest(root, "v2")
    assert ShardedIndex(root).version == "v1"
    # no stray temp files
    assert not [f for f in os.listdir(os.path.join(root, "versions", "v1")) if ".tmp-" in f]


def test_checksum_mismatch_refused(tmp_path):
    ids, vecs, table = _data(n=200)
    m = build_index(table, str(tmp_path), "ckpt", "h", IndexBuildConfig(n_shards=2), progress=False)
    path = os.path.join(str(tmp_path), "versions", m.version, m.shards[1].index_file)
    data = bytearray(open(path, "rb").read())
    data[-1] ^= 0xFF
    open(path, "wb").write(bytes(data))
    with pytest.raises(IndexRefusedError, match="checksum mismatch.*shard-00001.faiss"):
        ShardedIndex(str(tmp_path))


def test_encoder_mismatch_refused(tmp_path):
    ids, vecs, table = _data(n=50)
    m = build_index(table, str(tmp_path), "student-a", "hash-a", progress=False)
    check_encoder(m, _Enc(16, "hash-a", "student-a"))
    with pytest.raises(IndexRefusedError, match="dimension: index has 16, encoder produces 32"):
        check_encoder(m, _Enc(32, "hash-a"))
    with pytest.raises(IndexRefusedError, match="checkpoint hash.*student-a.*student-b"):
        check_encoder(m, _Enc(16, "hash-b", "student-b"))


def test_reads_embeddings_parquet_uri_and_any_filesystem(tmp_path):
    ids, vecs, table = _data(n=120)
    emb = str(tmp_path / "emb" / "part-0.parquet")
    storage.write_table_atomic(table, emb)
    # a pyarrow URI (file://) for both the embeddings and the index root
    m = build_index("file://" + str(tmp_path / "emb"), "file://" + str(tmp_path / "idx"), "c", "h",
                    IndexBuildConfig(n_shards=2), progress=False)
    assert m.n_items == 120
    assert json.load(open(tmp_path / "idx" / "versions" / m.version / "manifest.json"))["dim"] == 16
    _, got = ShardedIndex("file://" + str(tmp_path / "idx")).search(vecs[:3], 1)
    assert got == [[ids[0]], [ids[1]], [ids[2]]]
    assert {shard_of(i, 2) for i in ids} == {0, 1}


def test_bad_embeddings_rejected(tmp_path):
    ids, vecs, table = _data(n=10)
    with pytest.raises(ValueError, match="duplicate"):
        build_index(embeddings_table(ids + ids[:1], np.vstack([vecs, vecs[:1]])), str(tmp_path), "c", "h",
                    progress=False)
    with pytest.raises(ValueError, match="empty"):
        build_index(table.slice(0, 0), str(tmp_path), "c", "h", progress=False)


def test_build_task_options_ask_for_gpus_and_the_faiss_gpu_resource_only_when_configured():
    """The training and shard tasks' ray.remote options: valid Ray task options, and on the cluster
    configs (num_gpus 1, resources {faiss_gpu: 1}) a request only the gpu-index group can host."""
    from ray._common.utils import resources_from_ray_options
    from ray._common.ray_option_utils import validate_task_options

    from serving.index import build_task_options

    assert build_task_options(IndexBuildConfig()) == {"num_cpus": 1, "max_calls": 1}
    cfg = IndexBuildConfig(num_gpus=1, resources={"faiss_gpu": 1})
    opts = build_task_options(cfg)
    assert opts == {"num_cpus": 1, "max_calls": 1, "num_gpus": 1.0, "resources": {"faiss_gpu": 1.0}}
    validate_task_options(opts, in_options=False)
    assert resources_from_ray_options(opts) == {"CPU": 1.0, "GPU": 1.0, "faiss_gpu": 1.0}
    opts["resources"]["faiss_gpu"] = 2.0
    assert cfg.resources == {"faiss_gpu": 1.0}, "the options are a copy, not the config's own dict"


def test_index_build_resources_are_custom_resources_only():
    from pydantic import ValidationError

    from distill.config import ConfigError, build_config
    from serving.pipeline import IndexJobConfig

    for reserved in ("GPU", "CPU", "memory"):
        with pytest.raises(ValidationError, match=f"'{reserved}': Ray's own resources.*num_gpus"):
            IndexBuildConfig(resources={reserved: 1})
    with pytest.raises(ValidationError, match="'faiss_gpu': a request must be > 0"):
        IndexBuildConfig(resources={"faiss_gpu": 0})
    with pytest.raises(ConfigError, match=r"index\.resources: .*'GPU': Ray's own resources"):
        build_config(IndexJobConfig, "index: {num_gpus: 1, resources: {GPU: 1}}")
    assert build_config(IndexJobConfig, "index: {num_gpus: 1, resources: {faiss_gpu: 1}}").index.resources == \
        {"faiss_gpu": 1.0}


@pytest.mark.slow
def test_parallel_build_equals_the_in_process_build(ray_local, tmp_path):
    """jobs/index.py's build: one training task, one task per shard reading the embedding files in
    slices; the same shards, the same answers as the in-process build, and each shard's bytes,
    memory need and task peak RSS in the manifest. (This machine has no GPU: the CPU branch.)"""
    from serving.index import build_index_parallel, gpu_count

    ids, vecs, table = _data(n=900)
    emb = tmp_path / "emb"
    for f, lo in enumerate(range(0, 900, 300)):
        storage.write_table_atomic(table.slice(lo, 300), str(emb / f"part-{f}.parquet"))
    cfg = IndexBuildConfig(factory="IVF16,Flat", n_shards=3, train_sample=600, search_params="nprobe=16",
                           read_rows=128)
    rep = build_index_parallel(str(emb), str(tmp_path / "par"), "c", "h", cfg, progress=False)
    ref = build_index(table, str(tmp_path / "ref"), "c", "h", cfg, progress=False)
    m = rep.manifest
    assert m.n_items == 900 and m.train_sample == 600 and rep.train["sample"] == 600
    assert gpu_count() == 0 and rep.train["gpus"] == 0
    assert [s.n_items for s in m.shards] == [s.n_items for s in ref.shards]
    for s in m.shards:
        assert s.index_bytes > 0 and s.memory_bytes > s.index_bytes and s.build_peak_rss_bytes > 0
    assert rep.max_shard_peak_rss_bytes == max(s.build_peak_rss_bytes for s in m.shards)
    q = normalize(np.random.default_rng(4).standard_normal((25, 16)).astype(np.float32))
    got_s, got = ShardedIndex(str(tmp_path / "par")).search(q, 10)
    _, want = ShardedIndex(str(tmp_path / "ref")).search(q, 10)
    assert got == want == exact_search(vecs, ids, q, 10)[1]  # nprobe = every cell: exact
    with pytest.raises(ValueError, match="duplicate"):
        storage.write_table_atomic(table.slice(0, 5), str(emb / "part-9.parquet"))
        build_index_parallel(str(emb), str(tmp_path / "dup"), "c", "h", cfg, progress=False)
