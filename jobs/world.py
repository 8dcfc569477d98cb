"""Build (or reuse) the demo world: ``python jobs/world.py [--config cfg.yaml] [world.seed=1 ...]``.

Thin by design: the config model and one call into ``distill.world``; everything else lives
in the library so notebooks and tests build worlds the same way.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from distill.config import run_job  # noqa: E402
from distill.world import WorldJobConfig, ensure_world, read_manifest  # noqa: E402


def _run(cfg: WorldJobConfig) -> str:
    started = time.perf_counter()
    root = ensure_world(cfg.world, cfg.root, use_ray=cfg.use_ray)
    manifest = read_manifest(root)
    assert manifest is not None, f"no world manifest at {root}"
    seconds = time.perf_counter() - started
    print(f"world {manifest.config.name!r} (hash {manifest.config_hash}) at {root}")
    for split in ("train", "val", "test"):
        print(f"  {split:5s}: {manifest.catalog_counts[split]:6d} products, {manifest.persona_counts[split]:5d} personas")
    print(f"  held-out motifs ({len(manifest.heldout_motifs)} of {manifest.n_motifs}, never in train; "
          f"{len(manifest.heldout_motifs_by_split.get('val', []))} in val, the rest in test): "
          + ", ".join(manifest.heldout_motifs[:12]) + (" ..." if len(manifest.heldout_motifs) > 12 else ""))
    print(f"  {seconds:.1f} s this run (the build itself took {manifest.build_seconds:.1f} s)")
    return root


def main(argv: list[str] | None = None) -> str:
    return run_job(WorldJobConfig, _run, argv, name="world")


if __name__ == "__main__":
    main()
