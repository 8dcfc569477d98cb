"""How far can teacher matches move the caption-pretrained demo student? An in-process probe.

    python bench/distill_signal.py                          # ~7 min on 2 cores
    python bench/distill_signal.py --matches 256,768 --losses listwise_kl --json out.json
    python bench/distill_signal.py --start <student checkpoint> --matches ""   # probe another start
    python bench/distill_signal.py --smoke     # every step at toy size on a small world (CI)

This is the reproducible form of the findings under "Where the result stands" in the README. It
skips Ray (tournaments, Ray Train, Ray Data): labels come straight from the demo teacher, and one
process trains, so a grid of budgets and losses runs in minutes. The shipped path
(``jobs/distill.py``) does the same steps at scale. Prints, on a validation set of held-out
personas x a validation catalog, with the teacher's whole-catalog pick as each persona's winner:

* MPR of the caption-pretrained student and of the teacher itself (the ceiling);
* a *privileged* bound: the student's image embeddings mapped linearly onto the teacher's title
  embeddings by ridge regression on train items (it reads titles, which distillation never
  sees; it says how much a better read-out of the same image features could give);
* the personas the start student serves worst: the teacher's pick against the student's top
  titles (on the demo world they show what the image features miss);
* for each loss and match budget: the student after one pass over that many fresh,
  preference-aligned (PAD-sampled) teacher matches, from the same start.

The last line is machine-readable (``distill_signal: key=value ...``). ``--smoke`` runs every
step at toy size on a small demo world with a few-step caption pretraining of its own (its
numbers mean nothing; CI runs it so the bench cannot break unnoticed).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from distill.sampling import SamplerConfig  # noqa: E402
from distill.seeding import sample_indices, sample_rows  # noqa: E402

if TYPE_CHECKING:
    from distill.judges.base import Judge
    from distill.student import Student

LOSS_SCALES = {"listwise_kl": 5.0, "plackett_luce": 5.0, "bt": 1.0}  # bt: PAD's raw cosine, no temperature
# --smoke: every step at toy size on a small world (CI runs it; the numbers mean nothing)
SMOKE = dict(matches="16", losses="listwise_kl,bt", val_personas=8, val_items=64, train_items=128, batch_size=8,
             show_worst=1, world_products=600, world_personas=100, pretrain_steps=3, pretrain_batch_size=32)


def mpr(scores: np.ndarray, winners: np.ndarray) -> float:
    from distill.metrics import winner_metrics

    return 100 * winner_metrics(scores, winners)["mpr"]


def linear_readout_bound(train_emb: np.ndarray, train_titles: np.ndarray, val_emb: np.ndarray,
                         personas: np.ndarray, winners: np.ndarray, ridge: float = 1e-2) -> float:
    """Val MPR when image embeddings are first mapped onto title embeddings (fit on train items)."""
    d = train_emb.shape[1]
    m = np.linalg.solve(train_emb.T @ train_emb + ridge * np.eye(d), train_emb.T @ train_titles)
    return mpr(personas @ (val_emb @ m).T, winners)


def show_worst(scores: np.ndarray, winners: np.ndarray, personas: list[str], titles: list[str], n: int) -> None:
    from distill.metrics import percentiles

    pct = percentiles(scores, winners)
    for i in np.argsort(pct)[:n]:
        top = [titles[j] for j in np.argsort(-scores[i])[:3]]
        print(f"  worst: {personas[i][:70]!r}\n    teacher's pick {titles[winners[i]]!r} at percentile "
              f"{100 * pct[i]:.0f} of the student; student's top 3: {top}", flush=True)


def one_pass(start: str, teacher_judge: "Judge", loss: str, n_matches: int, pool_pixels: torch.Tensor,
             pool_emb: np.ndarray, pool_titles: list[str], persona_texts: list[str], lr: float, batch_size: int,
             seed: int, towers: str = "image", epochs: int = 1,
             sampler: SamplerConfig | None = None) -> tuple["Student", dict]:
    """A fresh copy of the start student, trained once over ``n_matches`` new matches that
    ``teacher_judge`` labels, sampled from its scores (``pool_emb``: the start's embeddings of the
    pool, shared by every run)."""
    from distill.judges.base import Candidate, MatchView
    from distill.losses import PreferenceLoss
    from distill.sampling import sample_candidates
    from distill.student import Student
    from distill.train import PreferenceModule

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    student = Student.load(start, train_towers=towers)
    who = rng.choice(len(persona_texts), n_matches, replace=n_matches > len(persona_texts))
    texts = [persona_texts[i] for i in who]
    scores = student.encode_texts(texts) @ pool_emb.T
    cands = np.stack([sample_candidates(row, rng, sampler) for row in scores])  # PAD's bins (and draws unless given)
    views = [MatchView(t, tuple(Candidate(str(i), title=pool_titles[i]) for i in c), seed=n)
             for n, (t, c) in enumerate(zip(texts, cands))]
    teacher = torch.tensor(np.stack([j.scores for j in teacher_judge.judge(views)]), dtype=torch.float32)

    module = PreferenceModule(student.model, PreferenceLoss(loss, LOSS_SCALES[loss], learn_scale=False))
    opt = torch.optim.AdamW(student.trainable_parameters(), lr=lr, weight_decay=0.01)
    student.train_mode()
    losses, agree = [], []
    for lo in [lo for _ in range(epochs) for lo in range(0, n_matches, batch_size)]:
        sl = slice(lo, lo + batch_size)
        pixels = pool_pixels[torch.from_numpy(cands[sl])].float()
        value, s = module(pixels, student.tokenize(texts[sl]), teacher[sl], None)
        opt.zero_grad()
        value.backward()
        torch.nn.utils.clip_grad_norm_(student.trainable_parameters(), 1.0)
        opt.step()
        losses.append(value.item())
        agree.append(float((s.argmax(1) == teacher[sl].argmax(1)).float().mean()))
    student.model.eval()
    return student, {"loss": float(np.mean(losses)), "top1_agreement_in_match": float(np.mean(agree))}


def summary_line(rows: list[dict]) -> str:
    """The machine-readable last line: ``distill_signal: key=value ...`` (MPR in %, gains in pp)."""
    start, ceiling, readout, *trained = rows
    best = max(trained, key=lambda r: r["val_mpr"]) if trained else None
    fig = {"start_val_mpr": start["val_mpr"], "ceiling_val_mpr": ceiling["val_mpr"],
           "readout_val_mpr": readout["val_mpr"], "runs": len(trained),
           "best_val_mpr": best["val_mpr"] if best else None,
           "best_gain_pp": best["val_mpr"] - start["val_mpr"] if best else None,
           "best_teacher_calls": best["teacher_calls"] if best else None,
           "mean_top1_agreement": float(np.mean([r["top1_agreement_in_match"] for r in trained])) if trained else None}
    return "distill_signal: " + " ".join(f"{key}={value:.4g}" for key, value in fig.items() if value is not None)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--matches", default="256,768,3072", help="match budgets (teacher calls), comma list")
    ap.add_argument("--losses", default="listwise_kl,bt", help="losses, comma list (listwise_kl, bt, plackett_luce)")
    ap.add_argument("--val-personas", type=int, default=200)
    ap.add_argument("--val-items", type=int, default=2048)
    ap.add_argument("--train-items", type=int, default=4096, help="train catalog items the sampler draws from")
    ap.add_argument("--lr", type=float, help="AdamW lr; default: the `default` preset's (jobs/distill.py)")
    ap.add_argument("--epochs", type=int, default=1, help="passes over each budget's matches")
    ap.add_argument("--towers", default="image", choices=["image", "text", "both"], help="which student towers train")
    ap.add_argument("--draws", default="1,1,1,2",
                    help="candidates drawn per PAD score bin, comma list; k = their sum (one teacher call each)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--start", help="start checkpoint; default the caption-pretrained one jobs/distill.py uses")
    ap.add_argument("--show-worst", type=int, default=4, help="worst-served personas to print")
    ap.add_argument("--world-products", type=int, help="a demo world of this many products (default: the built-in one)")
    ap.add_argument("--world-personas", type=int, help="personas of that world")
    ap.add_argument("--pretrain-steps", type=int, help="caption-pretraining steps of the start (default: the job's)")
    ap.add_argument("--pretrain-batch-size", type=int, help="caption-pretraining batch (default: the job's)")
    ap.add_argument("--smoke", action="store_true", help="for CI, every step at toy size: %s" %
                    ", ".join(f"{k}={v}" for k, v in SMOKE.items()))
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args(argv)
    if args.smoke:
        for key, value in SMOKE.items():
            setattr(args, key, value)
    torch.set_num_threads(args.threads)

    from distill import datasets
    from distill.distill_job import DistillJobConfig, ensure_pretrained, resolve_root
    from distill.student import Student
    from distill.text_encoder import shared_encoder

    t0 = time.time()
    overrides: dict = {}
    if args.world_products or args.world_personas:
        overrides["world"] = {"name": f"bench-{args.world_products}-{args.world_personas}",
                              **({"n_products": args.world_products} if args.world_products else {}),
                              **({"n_personas": args.world_personas} if args.world_personas else {})}
    if args.pretrain_steps or args.pretrain_batch_size:
        base = DistillJobConfig().pretrain
        steps = args.pretrain_steps or base.steps
        overrides["pretrain"] = {"steps": steps, "warmup_steps": min(steps - 1, base.warmup_steps),
                                 "batch_size": args.pretrain_batch_size or base.batch_size}
    cfg = DistillJobConfig.model_validate(overrides)
    args.lr = args.lr or cfg.default.train.lr
    root, _ = resolve_root(cfg)
    start = args.start or ensure_pretrained(cfg, root)  # default: the same cached start as jobs/distill.py
    enc = shared_encoder()
    student = Student.load(start)

    train = datasets.read_catalog(root, split="train", columns=["item_id", "title", "image"])
    train = sample_rows(train, args.train_items, np.random.default_rng(args.seed))
    train_titles = train["title"].to_pylist()
    val = datasets.read_catalog(root, split="val", columns=["item_id", "title", "image"])
    val = sample_rows(val, args.val_items, np.random.default_rng(args.seed))
    val_personas = datasets.read_personas(root, split="val")["text"].to_pylist()
    val_personas = [val_personas[i] for i in
                    sample_indices(len(val_personas), args.val_personas, np.random.default_rng(args.seed))]
    train_personas = datasets.read_personas(root, split="train")["text"].to_pylist()
    print(f"train pool {train.num_rows} items, {len(train_personas)} personas; "
          f"val {len(val_personas)} personas x {val.num_rows} items", flush=True)

    pool_pixels = student.image_tensor(train["image"].to_pylist()).half()  # decoded once, shared by every run
    val_pixels = student.image_tensor(val["image"].to_pylist())
    persona_emb = enc.encode(val_personas)
    teacher_scores = persona_emb @ enc.encode(val["title"].to_pylist()).T
    winners = np.argmax(teacher_scores, axis=1)  # the teacher's own pick over the whole val catalog

    start_val_emb = student.encode_image_tensor(val_pixels)
    start_pool_emb = student.encode_image_tensor(pool_pixels.float())
    start_scores = student.encode_texts(val_personas) @ start_val_emb.T
    start_mpr = mpr(start_scores, winners)
    rows = [{"model": "caption-pretrained student (start)", "teacher_calls": 0, "val_mpr": start_mpr},
            {"model": "teacher ceiling (text oracle on titles)", "teacher_calls": None,
             "val_mpr": mpr(teacher_scores, winners)},
            {"model": "privileged linear read-out of the start's image embeddings", "teacher_calls": 0,
             "val_mpr": linear_readout_bound(start_pool_emb, enc.encode(train_titles),
                                             start_val_emb, persona_emb, winners)}]
    for row in rows:
        print(f"{row['model']:<62} val MPR {row['val_mpr']:6.2f}", flush=True)
    show_worst(start_scores, winners, val_personas, val["title"].to_pylist(), args.show_worst)

    sampler = SamplerConfig(draws=[int(d) for d in args.draws.split(",")])
    teacher_judge = cfg.judge.build()  # the teacher jobs/distill.py uses (its default: the text oracle)
    for loss in filter(None, args.losses.split(",")):
        for n in (int(x) for x in filter(None, args.matches.split(","))):
            t1 = time.time()
            trained, stats = one_pass(start, teacher_judge, loss, n, pool_pixels, start_pool_emb, train_titles,
                                      train_personas, args.lr, args.batch_size, args.seed, args.towers, args.epochs,
                                      sampler)
            value = mpr(trained.encode_texts(val_personas) @ trained.encode_image_tensor(val_pixels).T, winners)
            passes = "one pass" if args.epochs == 1 else f"{args.epochs} passes"
            rows.append({"model": f"{loss}, {passes}", "towers": args.towers, "k": sampler.k, "teacher_calls": n,
                         "val_mpr": value, **stats, "seconds": round(time.time() - t1, 1)})
            what = f"{loss}, {passes} over {n} fresh {sampler.k}-way matches"
            print(f"{what:<62} val MPR {value:6.2f} "
                  f"({value - start_mpr:+.2f}; in-match top-1 agreement {stats['top1_agreement_in_match']:.2f}, "
                  f"{time.time() - t1:.0f} s)", flush=True)

    out = {"config": vars(args), "rows": rows, "minutes": round((time.time() - t0) / 60, 1)}
    print(f"done in {out['minutes']} min")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    print(summary_line(rows))


if __name__ == "__main__":
    main()
