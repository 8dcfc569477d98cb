"""Catalog embedding: the one pipeline (Ray Data reader -> student actor pool -> Parquet writer)
against a single-process loop with 2 torch threads doing the same work, side by side in one run.

    python bench/embed.py                 # 8,192 images, the demo student
    python bench/embed.py --smoke         # 512 images, the tiny student: checks the code path
    python bench/embed.py --actors 2 --cpus 0.5 --block-rows 1024   # both cores of a 2-CPU node busy

Both sides read the same catalog Parquet parts, decode + preprocess + encode every image with the
same student checkpoint and write an embeddings Parquet; both are timed end to end (the pipeline
including its actor start, the loop including its model load), Ray itself already running. The
vectors are checked equal. The machine is shared: read the ratio, and the load average printed
with it. Last line: ``embed: ratio_vs_loop=<x> pipeline_img_per_s=<y> loop_img_per_s=<z> ...``.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402


def make_catalog(root: str, n: int, side: int, parts: int, seed: int = 0) -> int:
    """A dataset root of ``n`` distinct JPEG product images (smooth colour fields plus noise, so each
    decodes like a photo and none repeats); returns the image bytes written."""
    from PIL import Image

    from distill import datasets

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:side, 0:side] / side
    total = 0
    for p, idx in enumerate(np.array_split(np.arange(n), parts)):
        images = []
        for i in idx:
            a, b, c = rng.uniform(0, 255, 3)
            base = np.stack([a * xx, b * yy, c * (1 - xx * yy)], axis=-1)
            pix = np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)
            buf = io.BytesIO()
            Image.fromarray(pix).save(buf, format="JPEG", quality=90)
            images.append(buf.getvalue())
        total += sum(len(x) for x in images)
        table = pa.table({"item_id": [f"item-{i:07d}" for i in idx], "title": [f"product {i}" for i in idx],
                          "image": images, "split": ["train"] * len(idx),
                          "attributes": pa.nulls(len(idx), pa.map_(pa.string(), pa.string()))})
        datasets.write_catalog_part(table, root, f"train-{p:05d}")
    return total


def loop_embed(root: str, checkpoint: str, out: str, batch_size: int, threads: int) -> np.ndarray:
    """The baseline: one process, ``threads`` torch threads, read parts -> encode -> write Parquet."""
    import torch

    from distill import datasets, storage
    from distill.embed import EMBEDDING_SCHEMA, embeddings_table
    from distill.student import Student

    torch.set_num_threads(threads)
    student = Student.load(checkpoint)
    student.model.eval()
    vecs = []
    for f, batch in enumerate(datasets._scan_catalog(root, ["item_id", "title", "image"], batch_rows=batch_size)):
        v = student.encode_images(batch.column("image").to_pylist(), batch_size=batch_size)
        ids = batch.column("item_id").to_pylist()
        storage.write_table_atomic(embeddings_table(ids, v, batch.column("title").to_pylist()),
                                   storage.join(out, f"part-{f:05d}.parquet"), EMBEDDING_SCHEMA)
        vecs.append(v)
    return np.concatenate(vecs)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=8192)
    ap.add_argument("--side", type=int, default=96, help="image side in pixels")
    ap.add_argument("--parts", type=int, default=8, help="catalog Parquet parts")
    ap.add_argument("--arch", default="demo-minilm-vit")
    ap.add_argument("--batch-size", type=int, default=None, help="pipeline batch (default: EmbedConfig's)")
    ap.add_argument("--actors", type=int, default=None,
                    help="a fixed pool of this many actors (min = max; default: EmbedConfig's autoscaling pool). "
                         "Leave CPU for the read tasks: on a 2-CPU node --actors 2 (1 CPU each) stalls")
    ap.add_argument("--threads", type=int, default=None, help="torch threads per actor (default: EmbedConfig's)")
    ap.add_argument("--cpus", type=float, default=None,
                    help="CPUs reserved per actor (default: EmbedConfig's 1). Two actors on a 2-CPU node need "
                         "0.5 each: Ray Data neither starts nor scales to a second 1-CPU actor there")
    ap.add_argument("--block-rows", type=int, default=None,
                    help="EmbedConfig.block_rows: split the read into blocks of this many rows, so every actor "
                         "gets work (the 8 parts are read as one block)")
    ap.add_argument("--smoke", action="store_true", help="512 images, tiny student: a quick check of the path")
    args = ap.parse_args(argv)
    if args.smoke:
        args.images, args.arch, args.parts = 512, "tiny-test", 4

    from distill.embed import EmbedConfig, embed_catalog, read_embeddings, vectors_of
    from distill.ray_utils import init_ray
    from distill.student import StudentConfig, build_student

    tmp = tempfile.mkdtemp(prefix="bench-embed-")
    try:
        root = os.path.join(tmp, "ds")
        nbytes = make_catalog(root, args.images, args.side, args.parts)
        import torch

        torch.manual_seed(0)
        ckpt = os.path.join(tmp, "student")
        build_student(StudentConfig(arch=args.arch)).save(ckpt)
        overrides = {"batch_size": args.batch_size} if args.batch_size else {}
        if args.actors:
            overrides.update(min_actors=args.actors, max_actors=args.actors)
        if args.threads:
            overrides.update(torch_threads=args.threads)
        if args.cpus:
            overrides.update(num_cpus=args.cpus)
        if args.block_rows:
            overrides.update(block_rows=args.block_rows)
        cfg = EmbedConfig(**overrides)
        init_ray()
        # warm the page cache and the loop's imports on a few images; the pipeline cannot be warmed: Ray Data
        # starts a fresh actor pool every pass, so its actors' start-up is part of what is measured
        loop_embed(root, ckpt, os.path.join(tmp, "warm"), 64, 2)

        t0 = time.perf_counter()
        want = loop_embed(root, ckpt, os.path.join(tmp, "loop"), cfg.batch_size, threads=2)
        loop_s = time.perf_counter() - t0

        t0 = time.perf_counter()
        rec = embed_catalog(root, ckpt, os.path.join(tmp, "pipeline"), cfg, split="train", reuse=False)
        pipe_s = time.perf_counter() - t0

        got = read_embeddings(os.path.join(tmp, "pipeline")).sort_by("item_id")
        assert rec.n_items == args.images == got.num_rows
        np.testing.assert_allclose(vectors_of(got), want, atol=1e-4)  # loop rows are in id order already
        load = open("/proc/loadavg").read().split()[:3] if os.path.exists("/proc/loadavg") else ["?"] * 3
        out = {"images": args.images, "mb": round(nbytes / 1e6, 1), "arch": args.arch, "batch_size": cfg.batch_size,
               "actors": cfg.max_actors, "files": rec.n_files, "loop_img_per_s": args.images / loop_s,
               "pipeline_img_per_s": args.images / pipe_s, "ratio_vs_loop": loop_s / pipe_s,
               "loadavg": "/".join(load)}
        print(f"{args.images} images ({out['mb']} MB of JPEG, {args.side}px), student {args.arch}:")
        print(f"  single process, 2 torch threads: {loop_s:6.1f} s  {out['loop_img_per_s']:7.0f} img/s")
        pool = f"{cfg.max_actors}" if cfg.min_actors == cfg.max_actors else f"{cfg.min_actors}-{cfg.max_actors}"
        print(f"  pipeline ({pool} actors x {cfg.torch_threads} thread x {cfg.num_cpus:g} CPU, batch {cfg.batch_size}, "
              f"blocks of {cfg.block_rows or 'the read'} rows, incl. actor start): {pipe_s:6.1f} s  "
              f"{out['pipeline_img_per_s']:7.0f} img/s")
        print(f"embed: ratio_vs_loop={out['ratio_vs_loop']:.2f} pipeline_img_per_s={out['pipeline_img_per_s']:.0f} "
              f"loop_img_per_s={out['loop_img_per_s']:.0f} images={args.images} files={rec.n_files} "
              f"loadavg={out['loadavg']}")
        return out
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
