"""Embed a catalog with the student and build the sharded FAISS index the endpoint serves.

    python jobs/index.py [--config configs/index.yaml] [index.n_shards=2 checkpoint=<uri> ...]
    ray job submit --working-dir . -- python jobs/index.py --config configs/index.yaml

Prints the index root and version; ``serve run configs/serve.yaml`` (index_root set to it)
serves it. With no arguments it indexes the demo world with the untrained demo student.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from distill.config import run_job  # noqa: E402
from serving.pipeline import IndexJobConfig, index_root, run_index_job  # noqa: E402


def _run(cfg: IndexJobConfig):
    manifest = run_index_job(cfg)
    print(f"index_root: {index_root(cfg)}")
    print(f"version: {manifest.version}  checkpoint: {manifest.checkpoint_uri}")
    return manifest


def main(argv: list[str] | None = None):
    return run_job(IndexJobConfig, _run, argv, name="index")


if __name__ == "__main__":
    main()
