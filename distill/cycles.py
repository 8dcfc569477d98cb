"""The distillation cycle: embed the catalog, sample, judge, train, evaluate; repeat.

Nothing here holds the train catalog: the current student embeds it through the one embedding
pipeline (``distill.embed``: Parquet parts -> actor pool -> Parquet), PAD's bins are sampled by
chunked Ray tasks over those embeddings (``distill.scoring.sample_matches``: per persona min/max,
then a few draws per bin), and only the candidates' rows (a match's k images) are read back, for
the teacher and for training.

Each cycle writes under ``<output>/cycle-NNN/``:

* ``embeddings/`` the cycle's student's embeddings of the (sampled) train catalog; with an
  ``embeddings_cache`` (the distill job and the sweep pass ``<output>/train-embeddings``) they live
  there instead, named by checkpoint and selection, so arms, seeds and sweep variants that start
  from one student over one subsample embed it once (at 10 M images, once instead of once per
  arm and seed);
* ``judge/``   the teacher's single-match tournaments (the tournament engine's round store), so a
               rerun reuses every judgement already paid for;
* training checkpoints under ``<output>/train/cycle-NNN`` (Ray Train; a rerun resumes);
* ``done.json`` written last: the cycle's student checkpoint, validation metrics, teacher calls.

A rerun skips finished cycles and continues the first unfinished one.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import ClassVar

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

from distill import datasets, storage
from distill.embed import EmbedConfig, embed_catalog, selection_key
from distill.errors import DataError
from distill.eval_sets import EvalSet, evaluate_student
from distill.label_quality import mass_summary, training_labels
from distill.sampling import SamplerConfig
from distill.scoring import sample_matches
from distill.seeding import rng_for, seed_for
from distill.student import STUDENT_JSON, Student, StudentConfig, read_checkpoint_meta
from distill.train import TrainConfig, examples_table, preference_dataset, train_preferences


class CycleConfig(BaseModel):
    """PAD-style cycles of preference-aligned sampling, teacher judging and training."""

    model_config = ConfigDict(extra="forbid")
    # Not part of a run's identity: a rerun with more cycles resumes the finished ones and goes on;
    # the embedding pool only spreads the work.
    EXECUTION_FIELDS: ClassVar[frozenset[str]] = frozenset({"cycles", "embed"})
    cycles: int = Field(3, ge=1, description="number of cycles (PAD: ~30)")
    matches_per_cycle: int = Field(256, ge=1, description="new teacher-judged k-way matches per cycle (PAD: ~1,050)")
    sampler: SamplerConfig = Field(default_factory=SamplerConfig, description="score bins and draws (k = sum of draws)")
    n_views: int = Field(1, ge=1, le=16, description=(
        "orders the teacher judges each training match under, averaged (position debiasing: rotations, then "
        "random orders); every view is a teacher call. The VLM recipes use 2"))
    min_label_mass: float = Field(0.5, ge=0, le=1, description=(
        "views whose judge put less raw probability than this on the k option labels are flagged and kept out "
        "of the training labels (judges that report no mass, like the text oracle, are unaffected); 0 = keep all"))
    train_catalog_max_items: int | None = Field(4096, ge=5, description="seeded subsample of the train catalog the student scores each cycle; empty = all (PAD)")
    replay: bool = Field(True, description="train each cycle on every judgement so far (False: only the new ones, as PAD)")
    lr_decay: float = Field(1.0, gt=0, le=1, description="learning rate x lr_decay^cycle (PAD: 0.95)")
    train: TrainConfig = Field(default_factory=TrainConfig, description="the training stage run each cycle")
    train_towers: str = Field("image", description="image (PAD) | text | both")
    seed: int = Field(0, description="persona / candidate sampling seed")
    keep_best: bool = Field(True, description=(
        "PAD's early stop on validation MPR: the result is the best-validating checkpoint of cycles 0..N "
        "(0 = the start), not simply the last; needs a validation set"))
    embed: EmbedConfig = Field(default_factory=EmbedConfig, description=(
        "the embedding actor pool that embeds the train and validation catalogs each cycle"))


@dataclass
class CycleResult:
    checkpoint: str                                     # the result: best-validating (keep_best) or last
    history: list[dict] = field(default_factory=list)  # one entry per cycle (index 0 = start checkpoint)
    teacher_calls: int = 0                              # every cycle's calls, whichever checkpoint is kept
    best_cycle: int | None = None                       # the cycle whose checkpoint is the result


def best_cycle(history: list[dict]) -> int | None:
    """Index of the highest validation MPR in ``history`` (earliest on ties); None without validation."""
    scored = [(h["val"]["mpr"], -i) for i, h in enumerate(history) if h.get("val") and h["val"].get("mpr") is not None]
    return -max(scored)[1] if scored else None


def _val(checkpoint: str, val: EvalSet | None, embed: EmbedConfig | None = None) -> dict | None:
    if val is None:
        return None
    row = evaluate_student("val", checkpoint, val, embed)
    out = {k: row[k] for k in ("n", "mpr", "median_percentile") + tuple(k for k in row if k.startswith("hit@"))}
    # On the demo world, validation personas whose winner has a held-out motif (never in train) are
    # kept apart: a cycle can only teach the seen motifs directly, and a small validation set's
    # mean moves with how many held-out winners it happens to hold.
    for part in ("seen_motif", "heldout_motif"):
        if part in row:
            out[part] = {"n": row[part]["n"], "mpr": row[part]["mpr"]}
    return out


def _val_line(v: dict) -> str:
    """'val MPR 56.39%' plus the seen / held-out motif split when the validation set has one."""
    def pct(part: dict) -> str:
        return f"{100 * part['mpr']:.2f}%" if part["n"] else "-"

    line = f"val MPR {pct(v)}"
    if "seen_motif" in v and "heldout_motif" in v:
        seen, held = v["seen_motif"], v["heldout_motif"]
        line += f" (seen motifs {pct(seen)} over {seen['n']}, held-out motifs {pct(held)} over {held['n']})"
    return line


def recipe(cfg: CycleConfig) -> dict:
    """The preset as it decides results (cycles may grow: a resume can add cycles to a finished run)."""
    from distill.runs import identity

    return identity(cfg)


def start_checkpoint_id(checkpoint: str) -> str:
    """The start's content id (a copied checkpoint is the same start)."""
    return storage.read_json(storage.join(checkpoint, STUDENT_JSON))["checkpoint_id"]


def check_resumable(start: dict, cfg: CycleConfig, start_checkpoint: str, output: str) -> None:
    """Refuse to resume ``output`` with another recipe or start: its saved cycles would be mixed
    into a result they were not made for. (Runs from before the recipe was recorded pass.)"""
    start_id = start_checkpoint_id(start_checkpoint)
    if start.get("start_id", start_id) != start_id:
        raise DataError(f"{output} was started from another checkpoint ({start.get('checkpoint')}) than "
                         f"{start_checkpoint}; use another output to distil from a different start")
    saved, now = start.get("recipe"), recipe(cfg)
    if saved is not None and saved != now:
        diff = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
        raise DataError(f"{output} holds cycles of another recipe (differs in {diff}); "
                         "use another output, or the recipe it was run with")


def cycle_tournament(cfg: CycleConfig, c: int):
    """How cycle ``c``'s matches are judged: one k-way match each, under ``n_views`` orders."""
    from distill.tournament import TournamentConfig

    return TournamentConfig(k=cfg.sampler.k, n_views=cfg.n_views, seed=cfg.seed + c)


def _images_of(root: str, matches: pa.Table) -> dict[str, bytes]:
    """Image bytes of the judged matches' candidates (what training needs), read by id from the parts."""
    ids = sorted({i for cands in matches["candidate_ids"].to_pylist() for i in cands})
    rows = datasets.read_catalog_items(root, ids, ["item_id", "image"])
    return dict(zip(rows["item_id"].to_pylist(), rows["image"].to_pylist()))


def shared_embeddings_dir(output: str) -> str:
    """The train-embeddings cache of a distill job's (or sweep's) output, shared by its runs."""
    return storage.join(output, "train-embeddings")


def train_embeddings_uri(cache: str | None, cycle_dir: str, checkpoint_hash: str, item_ids) -> str:
    """Where a cycle's train-catalog embeddings go: its own ``embeddings/``, or the shared cache
    under a name that says which student (its checkpoint id) embedded which selection."""
    if cache is None:
        return storage.join(cycle_dir, "embeddings")
    return storage.join(cache, f"train-{checkpoint_hash[:16]}-{selection_key(item_ids) or 'whole-split'}")


def run_cycles(cfg: CycleConfig, root: str, start_checkpoint: str, output: str, judge, pool,
               val: EvalSet | None = None, progress: bool = True, label: str = "",
               embeddings_cache: str | None = None) -> CycleResult:
    from distill.tournament import TournamentSpec, run_tournaments

    log = (lambda msg: print(f"[{label or 'distill'}] {msg}", flush=True)) if progress else (lambda msg: None)
    # the train catalog by id only: a seeded subsample's ids (None = the whole split), never its images
    item_ids = datasets.sample_catalog_ids(root, "train", cfg.train_catalog_max_items,
                                           rng_for(cfg.seed, "train-catalog"))
    personas = datasets.read_personas(root, split="train")
    p_ids, p_texts = personas["persona_id"].to_pylist(), personas["text"].to_pylist()
    text_of = dict(zip(p_ids, p_texts))

    start_meta = storage.join(output, "start.json")
    if storage.exists(start_meta):
        history = [storage.read_json(start_meta)]
        check_resumable(history[0], cfg, start_checkpoint, output)
    else:
        history = [{"cycle": 0, "checkpoint": start_checkpoint, "val": _val(start_checkpoint, val, cfg.embed),
                    "teacher_calls": 0, "recipe": recipe(cfg), "start_id": start_checkpoint_id(start_checkpoint)}]
        storage.write_json_atomic(history[0], start_meta)
    if history[0]["val"]:
        log(f"start: {_val_line(history[0]['val'])}")
    ckpt = start_checkpoint
    all_matches: list[pa.Table] = []
    calls = 0
    for c in range(1, cfg.cycles + 1):
        cdir = storage.join(output, f"cycle-{c:03d}")
        done = storage.join(cdir, "done.json")
        judged = storage.join(cdir, "matches.parquet")
        if storage.exists(done):
            entry = storage.read_json(done)
            history.append(entry)
            ckpt, calls = entry["checkpoint"], entry["teacher_calls_total"]
            all_matches.append(storage.read_table(judged))
            continue
        t0 = time.time()
        student = Student.load(ckpt)
        # 1. embed the catalog with the current student (the pipeline); 2. one k-way match per persona,
        # drawn from the score bins by chunked tasks over the embeddings
        ckpt_hash = read_checkpoint_meta(ckpt)["checkpoint_id"]
        emb_uri = train_embeddings_uri(embeddings_cache, cdir, ckpt_hash, item_ids)
        # runs sharing the cache on one machine embed it once; a cycle's own folder needs no lock
        with storage.build_lock(emb_uri) if embeddings_cache else contextlib.nullcontext():
            emb = embed_catalog(root, ckpt, emb_uri, cfg.embed, split="train", item_ids=item_ids,
                                checkpoint_hash=ckpt_hash)
        rng = rng_for(cfg.seed, "cycle", c)
        chosen = rng.choice(len(p_ids), cfg.matches_per_cycle, replace=cfg.matches_per_cycle > len(p_ids))
        tids = [f"c{c:03d}-{n:05d}" for n in range(len(chosen))]
        drawn = sample_matches(emb_uri, student.encode_texts([p_texts[i] for i in chosen]),
                               [seed_for(cfg.seed, "cycle", c, t) for t in tids], cfg.sampler)
        specs = [TournamentSpec(tournament_id=t, persona_id=p_ids[pi], persona_text=p_texts[pi], candidate_ids=cand)
                 for t, pi, cand in zip(tids, chosen, drawn.candidates)]
        log(f"cycle {c}: embedded {emb.n_items} items, sampled {len(specs)} matches ({time.time() - t0:.0f} s)")
        # 3. the teacher judges each sample as one k-way match (resumable round store); it gets the
        # candidates' rows only
        payload = datasets.read_catalog_items(root, sorted({i for s in specs for i in s.candidate_ids}),
                                              ["item_id", "title", "image"])
        res = run_tournaments(specs, payload, cycle_tournament(cfg, c), judge, pool,
                              storage.join(cdir, "judge"), progress=progress)
        matches = res.matches
        storage.write_table_atomic(matches, judged)
        calls += int(res.summary.teacher_calls)
        all_matches.append(matches)
        # 4. train on the judgements (all so far with replay)
        train_on = pa.concat_tables(all_matches) if cfg.replay else matches
        table = examples_table(training_labels(train_on, cfg.min_label_mass), text_of, _images_of(root, train_on))
        quality = mass_summary(matches, cfg.min_label_mass)
        if quality.flagged_views:
            log(f"cycle {c}: {quality.flagged_views} of {quality.views} views put < {cfg.min_label_mass:g} of the "
                f"teacher's probability on the labels: kept out of training")
        tcfg = cfg.train.model_copy(update={"lr": cfg.train.lr * cfg.lr_decay ** (c - 1)})
        scfg = StudentConfig(arch=student.cfg.arch, model_cfg=student.cfg.model_cfg, pretrained=ckpt,
                             train_towers=cfg.train_towers)
        log(f"cycle {c}: training on {table.num_rows} judged matches ({calls} teacher calls so far)")
        tr = train_preferences(preference_dataset(table, student, num_cpus=tcfg.data_cpus), scfg, tcfg,
                               run_name=f"cycle-{c:03d}", storage_path=storage.join(output, "train"))
        ckpt = tr.student_checkpoint
        # 5. evaluate
        v = _val(ckpt, val, cfg.embed)
        entry = {"cycle": c, "checkpoint": ckpt, "checkpoint_id": tr.checkpoint_id, "val": v,
                 "teacher_calls": int(res.summary.teacher_calls), "teacher_calls_total": calls,
                 "label_quality": quality.model_dump(),
                 "train_loss": [h["loss"] for h in tr.history], "seconds": time.time() - t0}
        storage.write_json_atomic(entry, done)
        history.append(entry)
        log(f"cycle {c}: {_val_line(v)}" if v else f"cycle {c}: done")
    best = best_cycle(history) if cfg.keep_best else None
    if best is not None:
        ckpt = history[best]["checkpoint"]
        log(f"result: cycle {best} (best validation MPR {100 * history[best]['val']['mpr']:.2f}%)")
    return CycleResult(checkpoint=ckpt, history=history, teacher_calls=calls, best_cycle=best)
