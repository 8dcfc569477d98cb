"""Distillation throughput, measured side by side in one run (machines here are noisy: read ratios).

    python bench/distill.py                      # demo student, demo world images
    python bench/distill.py --examples 256 --catalog 2048 --json out.json

Prints:
* training samples/s (k-way matches per second, steady-state epoch) with 1 and with 2 DDP
  workers (Ray Train, gloo on CPU) on the same data and global batch, and their ratio;
* catalog embedding images/s: a Ray Data actor pool vs a single-process open_clip loop.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--examples", type=int, default=192, help="k-way matches per training epoch")
    ap.add_argument("--epochs", type=int, default=3, help="epochs; the last one is timed (the first warms up)")
    ap.add_argument("--batch-size", type=int, default=32, help="global batch")
    ap.add_argument("--catalog", type=int, default=1024, help="images embedded in the embedding comparison")
    ap.add_argument("--arch", default="demo-minilm-vit", help="student architecture")
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args()

    from distill import datasets
    from distill.evaluate import embed_catalog, embed_catalog_ray
    from distill.ray_utils import init_ray
    from distill.student import StudentConfig, build_student
    from distill.train import PREF_EXAMPLE_SCHEMA, TrainConfig, preference_dataset, train_preferences
    from distill.world import ensure_world

    root = ensure_world()
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

    sub = cat.slice(0, min(args.catalog, cat.num_rows))
    warm = sub.slice(0, 64)
    embed_catalog(student, warm["image"].to_pylist())
    t0 = time.perf_counter()
    local = embed_catalog(student, sub["image"].to_pylist())
    single = sub.num_rows / (time.perf_counter() - t0)
    embed_catalog_ray(start, warm)  # warm-up: actor start and model load are not throughput
    t0 = time.perf_counter()
    _, remote = embed_catalog_ray(start, sub)
    ray_rate = sub.num_rows / (time.perf_counter() - t0)
    assert np.allclose(local, remote, atol=1e-4), "Ray Data and in-process embeddings differ"
    out.update({"embed_images_per_s_single_process": single, "embed_images_per_s_ray_data": ray_rate,
                "embed_ratio_ray_over_single": ray_rate / single, "embed_images": sub.num_rows})
    print(f"catalog embedding: single process {single:.0f} img/s, Ray Data (2 actors, incl. actor start) "
          f"{ray_rate:.0f} img/s, ratio {ray_rate / single:.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
