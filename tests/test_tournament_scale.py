"""The tournament on a catalog larger than Ray's object store: the catalog stays in its Parquet parts.

A subprocess starts its own local Ray with a 100 MB object store and runs the tournament job on
a dataset root holding 300 MB of image bytes, with a judge that reads every candidate's image
(as a VLM does). The job must finish with the right winners, and the driver must never hold the
catalog's images: its peak RSS grows by far less than the catalog's bytes.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from distill import datasets, storage
from tests.fixtures.ray_head import job_env
from tests.plugin_judges import image_key

REPO = Path(__file__).resolve().parents[1]
ITEMS, PARTS, IMAGE_BYTES = 300, 6, 1 << 20  # 300 MB of images in 6 parts
STORE = 100 * 1000 * 1000

DRIVER = f"""
import json, resource, sys
sys.path.insert(0, {str(REPO)!r})
import ray
from distill.config import build_config
from distill.tournament.job import TournamentJobConfig, run_job
ray.init(address="local", num_cpus=2, object_store_memory={STORE}, include_dashboard=False,
         runtime_env={{"env_vars": {{"PYTHONPATH": {str(REPO)!r}}}}})
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
cfg = build_config(TournamentJobConfig, None, sys.argv[1:])
rep = run_job(cfg)
store = ray.cluster_resources()["object_store_memory"]
print(json.dumps(dict(before=before, peak=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      store=store, winners={{w.tournament_id: w.winner_title for w in rep.winners}})))
"""


def write_root(root: Path) -> pa.Table:
    rng = np.random.default_rng(0)
    ids = [f"img-{i:04d}" for i in range(ITEMS)]
    per = ITEMS // PARTS
    for p in range(PARTS):
        rows = range(p * per, (p + 1) * per)
        datasets.write_catalog_part(pa.table({
            "item_id": [ids[i] for i in rows], "title": [f"product {i}" for i in rows],
            "image": pa.array([rng.bytes(IMAGE_BYTES) for _ in rows], pa.binary()),
            "split": ["test"] * per, "attributes": pa.array([None] * per, pa.map_(pa.string(), pa.string())),
        }), str(root), f"test-{p:05d}")
    datasets.write_personas(pa.table({"persona_id": ["p0", "p1"], "text": ["a collector", "a gift for a friend"],
                                      "split": ["test", "test"]}), str(root))
    storage.write_json_atomic({"kind": "ingest"}, datasets.manifest_path(str(root)))
    return datasets.read_catalog(str(root), columns=["item_id", "title"])


@pytest.mark.slow
def test_a_catalog_larger_than_the_object_store(tmp_path) -> None:
    root, out = tmp_path / "root", tmp_path / "run"
    titles = write_root(root)
    catalog_bytes = sum(f.stat().st_size for f in (root / "catalog").glob("*.parquet"))
    assert catalog_bytes > 3 * STORE * 0.95
    args = [f"data.root={root}", "data.max_personas=2", "data.max_candidates=60", "tournament.k=5",
            "judge.kind=plugin", "judge.target=tests.plugin_judges:ImageBytesJudge", "pool.batch_size=4",
            "pool.max_actors=1", f"output={out}", "progress=false"]
    proc = subprocess.run([sys.executable, "-c", DRIVER, *args], cwd=tmp_path, env=job_env(),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["store"] <= STORE * 1.05, "the run really had a small object store"

    summary = json.loads((out / "summary.json").read_text())
    assert summary["tournaments"] == 2 and summary["failed_matches"] == 0
    assert summary["matches"] == 2 * 15  # ceil(59 / 4) per persona
    # each tournament's winner is the candidate whose image bytes the judge likes best: the
    # judge saw the right bytes for every candidate
    tournaments = pq.read_table(out / "tournaments.parquet")
    matches = pq.read_table(sorted((out / "rounds").glob("round-*.parquet")))
    wanted = set(pc_flatten(matches["candidate_ids"]))
    images = datasets.read_catalog(str(root), columns=["item_id", "image"]).to_pydict()
    key = {i: image_key(b) for i, b in zip(images["item_id"], images["image"]) if i in wanted}
    assert len(key) == 60
    for winner in tournaments["winner_id"].to_pylist():
        assert winner == max(key, key=key.get)
    title_of = dict(zip(titles["item_id"].to_pylist(), titles["title"].to_pylist()))
    assert set(got["winners"].values()) == {title_of[w] for w in tournaments["winner_id"].to_pylist()}
    # the driver never held the images: it grew by far less than the 300 MB catalog
    assert got["peak"] - got["before"] < 100, got


def pc_flatten(col) -> list[str]:
    import pyarrow.compute as pc

    return pc.list_flatten(col).to_pylist()
