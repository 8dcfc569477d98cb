"""Distillation throughput, measured side by side in one run (machines here are noisy: read ratios).

    python bench/distill.py                      # demo student, demo world images
    python bench/distill.py --examples 256 --json out.json
    python bench/distill.py --smoke              # every step at toy size on a small world (CI)

Prints:
* training samples/s (k-way matches per second, steady-state epoch) with 1 and with 2 DDP
  workers (Ray Train, gloo on CPU) on the same data and global batch, and their ratio.

Catalog embedding throughput (the pipeline vs a single-process loop) is ``bench/embed.py``.

The last line is machine-readable (``distill: key=value ...``); ``--smoke`` runs every step at
toy size on a small demo world of its own (its numbers mean nothing; CI runs it).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402


# --smoke: every step at toy size on a small world (CI runs it; the numbers mean nothing)
SMOKE = dict(examples=32, epochs=2, batch_size=16, world_products=600, world_personas=100)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--examples", type=int, default=192, help="k-way matches per training epoch")
    ap.add_argument("--epochs", type=int, default=3, help="epochs; the last one is timed (the first warms up)")
    ap.add_argument("--batch-size", type=int, default=32, help="global batch")
    ap.add_argument("--arch", default="demo-minilm-vit", help="student architecture")
    ap.add_argument("--world-products", type=int, help="a demo world of this many products (default: the built-in one)")
    ap.add_argument("--world-personas", type=int, help="personas of that world")
    ap.add_argument("--smoke", action="store_true", help="for CI, every step at toy size: %s" %
                    ", ".join(f"{k}={v}" for k, v in SMOKE.items()))
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args(argv)
    if args.smoke:
        for key, value in SMOKE.items():
            setattr(args, key, value)
    sys.stdout.reconfigure(line_buffering=True)

    from distill import datasets
    from distill.ray_utils import init_ray
    from distill.student import StudentConfig, build_student
    from distill.train import PREF_EXAMPLE_SCHEMA, TrainConfig, preference_dataset, train_preferences
    from distill.world import WorldConfig, ensure_world

    world = WorldConfig()
    if args.world_products or args.world_personas:
        world = WorldConfig(name=f"bench-{args.world_products}-{args.world_personas}",
                            n_products=args.world_products or world.n_products,
                            n_personas=args.world_personas or world.n_personas)
    root = ensure_world(world, progress=False)
    init_ray()
    cat = datasets.read_catalog(root, split="train", columns=["item_id", "image"])
    rng = np.random.default_rng(0)
    images = cat["image"].to_pylist()
    k = 5
    table = pa.table({
        "persona_text": [f"a gift for someone who loves thing number {i}" for i in range(args.examples)],
        "images": [[images[j] for j in rng.choice(len(images), k, replace=False)] for _ in range(args.examples)],
        "teacher": [list(rng.dirichlet(np.ones(k)).astype(np.float32)) for _ in range(args.examples)],
    }, schema=PREF_EXAMPLE_SCHEMA)
    tmp = tempfile.mkdtemp(prefix="bench-distill-")
    student = build_student(StudentConfig(arch=args.arch))
    start = os.path.join(tmp, "start")
    student.save(start)
    scfg = StudentConfig(arch=args.arch, pretrained=start)
    out: dict = {"examples": args.examples, "batch_size": args.batch_size, "k": k, "arch": args.arch,
                 "cpus": os.cpu_count()}
    for workers in (1, 2):
        cfg = TrainConfig(num_workers=workers, epochs=args.epochs, batch_size=args.batch_size, max_failures=0)
        res = train_preferences(preference_dataset(table, student), scfg, cfg, f"bench-{workers}", os.path.join(tmp, "runs"))
        last = res.history[-1]
        out[f"train_samples_per_s_{workers}w"] = last["samples_per_s"]
        print(f"training, {workers} DDP worker(s): {last['samples_per_s']:.1f} samples/s "
              f"(last epoch {last['seconds']:.1f} s; run {res.seconds:.0f} s incl. start-up)", flush=True)
    out["ddp_ratio_2w_over_1w"] = out["train_samples_per_s_2w"] / out["train_samples_per_s_1w"]
    print(f"DDP ratio 2 workers / 1 worker: {out['ddp_ratio_2w_over_1w']:.2f}x")

    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    shutil.rmtree(tmp, ignore_errors=True)
    import ray

    ray.shutdown()  # no worker log line may arrive after the summary line
    print("distill: " + " ".join(f"{key}={out[key]:.4g}" for key in (
        "train_samples_per_s_1w", "train_samples_per_s_2w", "ddp_ratio_2w_over_1w", "examples")))


if __name__ == "__main__":
    main()
