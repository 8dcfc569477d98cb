"""The whole distillation run from one config: pretrain (cached), validation tournaments, every
arm's cycles under several training seeds, the student ceiling, and the evaluation table + report.

The protocol (docs/experiments.md): ``jobs/sweep.py`` tunes each preset's learning rate and one
more knob on validation with the same grid for both; this job applies the chosen values
(``tuned``), trains every arm under ``seeds`` seeds derived from one ``seed``, and reports on
validation. Only ``eval.final=true`` reads the test split (the lockbox, ``distill.lockbox``), and
every such opening is counted. The headline is the pooled verdict of ``default`` vs ``pad`` with
an interval over seeds and personas, and each arm's share of the start -> student-ceiling gap.

``jobs/distill.py`` (run), ``jobs/sweep.py`` (the validation sweep) and ``jobs/evaluate.py``
(evaluate finished checkpoints) are thin wrappers around this module and ``distill.sweep``.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from distill import datasets, storage
from distill.config import deep_merge
from distill.cycles import CycleConfig, run_cycles, shared_embeddings_dir
from distill.judges.config import JudgeConfig, TextOracleConfig
from distill.pretrain import PretrainConfig, with_demo_captions
from distill.sampling import SamplerConfig
from distill.seeding import seed_for
from distill.sweep import SweepConfig
from distill.tournament import JudgePoolConfig, TournamentConfig
from distill.train import TrainConfig
from distill.world import WorldConfig

PresetName = Literal["pad", "default"]
# The arms of the side-by-side: the two presets, and two that separate their effects.
ArmName = Literal["pad", "default", "default@pad-budget", "pad-loss@default"]
ARMS: tuple[str, ...] = ("pad", "default", "default@pad-budget", "pad-loss@default")


def pad_preset() -> CycleConfig:
    """PAD's recipe: BT on raw cosine differences, image tower, PAD's bins, new rankings only, one pass,
    lr x 0.95^cycle, best validation cycle kept. PAD's lr is 1e-6 for a pretrained ViT-B/32; the demo's
    small, briefly pretrained ViT needs 1e-5 (1e-4 wrecked it in an exploration run: validation MPR 86.5 -> 73.7 in 3 cycles)."""
    return CycleConfig(cycles=3, matches_per_cycle=1024, replay=False, lr_decay=0.95, train_towers="image",
                       train=TrainConfig(loss="bt", init_scale=1.0, learn_scale=False, lr=1e-5, epochs=1,
                                         batch_size=32, grad_clip=1.0, shuffle_buffer=1024))


def default_preset() -> CycleConfig:
    """Ours: a quarter of PAD's teacher calls; listwise KL to the teacher's soft scores with a learnt
    temperature, one pass over each cycle's new matches at 10x PAD's demo lr, in batches of 32.
    Replaying earlier judgements at that lr overfits them (an exploration run lost validation MPR);
    at 1e-5 a quarter of the calls moves the student too little to show; batches of 16 made the
    cycles erratic (validation 76.8 -> 76.3 -> 73.9 -> 75.3 in one run, +1.0 in another)."""
    return CycleConfig(cycles=3, matches_per_cycle=256, replay=False, lr_decay=1.0, train_towers="image",
                       train=TrainConfig(loss="listwise_kl", init_scale=20.0, learn_scale=True, lr=1e-4, epochs=1,
                                         batch_size=32, grad_clip=1.0, shuffle_buffer=1024))


PRESETS = {"pad": pad_preset, "default": default_preset}
START_ROW = "caption-pretrained"  # the start student's evaluation row; the side-by-side verdict looks it up


def ceiling_preset() -> CycleConfig:
    """The student ceiling: the same student and trainer with a teacher budget far beyond the arms'.
    Every cycle the teacher scores 8-image sets drawn across the student's whole score range over
    the *whole* train catalog (2 per PAD bin; 8 is the VLM judge's default max_k), 4,096 of them
    (16x the default's calls, 4x PAD's, each with 8 images instead of 5), trained on once with
    listwise KL to the teacher's soft scores.

    Why not larger: on the 2-core demo box (shared with another run) training ran at ~28
    five-image matches/s, so this ceiling's 12,288 matches cost ~12 min of training (35 min for
    the whole run, beside the sweep); the earlier 8,192 per cycle, replayed for 2 epochs, would
    have cost ~95 min of training, longer than all twelve arm runs together. New labels rather than
    replayed ones: at the arms' learning rate, replaying earlier judgements overfit them."""
    return CycleConfig(cycles=3, matches_per_cycle=4096, sampler=SamplerConfig(draws=[2, 2, 2, 2]),
                       train_catalog_max_items=None, replay=False, lr_decay=1.0, train_towers="image",
                       train=TrainConfig(loss="listwise_kl", init_scale=20.0, learn_scale=True, lr=1e-4, epochs=1,
                                         batch_size=32, grad_clip=1.0, shuffle_buffer=1024))


def arm_config(arm: str, pad: CycleConfig, default: CycleConfig) -> CycleConfig:
    """One arm from the (tuned) presets. ``default@pad-budget``: our recipe with PAD's matches and
    cycles (is the gain the budget's?); ``pad-loss@default``: PAD's loss (BT on raw cosines) with
    everything else ours, budget and learning rate included (is the gain the loss's?)."""
    if arm == "pad":
        return pad
    if arm == "default":
        return default
    if arm == "default@pad-budget":
        return default.model_copy(update={"matches_per_cycle": pad.matches_per_cycle, "cycles": pad.cycles})
    if arm == "pad-loss@default":
        loss = {k: getattr(pad.train, k) for k in ("loss", "init_scale", "learn_scale")}
        return default.model_copy(update={"train": default.train.model_copy(update=loss)})
    raise ValueError(f"unknown arm {arm!r} (known: {list(ARMS)})")


def replicate_seeds(seed: int, n: int) -> list[int]:
    """``n`` training seeds from one: the first is ``seed`` itself, the rest derived from it."""
    return [seed] + [seed_for(seed, "replicate", r) % (1 << 31) for r in range(1, n)]


def seeded(cfg: CycleConfig, seed: int) -> CycleConfig:
    """The arm under one training seed: match sampling and the trainer's torch seed."""
    return cfg.model_copy(update={"seed": seed, "train": cfg.train.model_copy(update={"seed": seed})})


class EvalConfig(BaseModel):
    """Validation (what every run reports on) and the lockbox (test, read only for the final verdict)."""

    model_config = ConfigDict(extra="forbid")
    # how the finished runs are read, not what they are: the final read reuses the validation runs' folder
    EXECUTION_FIELDS: ClassVar[frozenset[str]] = frozenset({"final"})
    final: bool = Field(False, description=(
        "read the lockbox: evaluate on the test split (held-out personas x catalog) for the final verdict. "
        "Every opening is counted in <runs folder>/lockbox/<setting>.json and the report says how many times "
        "this test set has been opened. Without it the job reports on validation only"))
    test_personas: int | None = Field(256, ge=1, description=(
        "test personas evaluated (seeded sample; the demo has 240, so all); empty = all. Each costs one "
        "k-way knockout over the test catalog: (N-1)/(k-1) teacher calls"))
    test_max_candidates: int | None = Field(None, ge=2, description="test catalog subsample; empty = the whole test catalog")
    val_personas: int | None = Field(200, ge=1, description=(
        "validation personas for the per-cycle learning curve, the early stop, the sweep and the non-final report"))
    val_max_candidates: int | None = Field(2048, ge=2, description="validation catalog subsample")
    student_ceiling: bool = Field(True, description="train and report the student ceiling (the `ceiling` preset)")
    tournament: TournamentConfig = Field(default_factory=TournamentConfig, description="the knockout that labels eval winners")


class DistillJobConfig(BaseModel):
    """jobs/distill.py: caption-pretrained student -> every arm under several seeds, the student ceiling, the verdict."""

    model_config = ConfigDict(extra="forbid")
    EXECUTION_FIELDS: ClassVar[frozenset[str]] = frozenset({"pool", "output", "progress"})
    root: str | None = Field(None, description="dataset root URI; empty = the built-in demo world")
    world: WorldConfig = Field(default_factory=WorldConfig, description="demo world used when root is empty")
    output: str | None = Field(None, description="run output URI; empty = $PERSONA_DISTILL_HOME/runs/distill-<config hash> (rerun resumes)")
    start_checkpoint: str | None = Field(None, description="student checkpoint to distil from; empty = caption-pretrain one (cached)")
    pretrain: PretrainConfig = Field(default_factory=PretrainConfig, description="used when start_checkpoint is empty")
    judge: JudgeConfig = Field(default_factory=TextOracleConfig, description="the teacher, selected by `kind`")
    pool: JudgePoolConfig = Field(default_factory=lambda: JudgePoolConfig(min_actors=1, max_actors=1),
                                  description="the judge actor pool (one text-oracle actor is plenty on 2 cores)")
    presets: list[ArmName] = Field(list(ARMS), description=(
        "arms run side by side: pad, default, default@pad-budget (ours at PAD's budget), pad-loss@default "
        "(PAD's loss at our budget and lr)"))
    seed: int = Field(0, description="the one seed override: every arm trains under `seeds` seeds derived from it (the first is this one)")
    seeds: int = Field(3, ge=1, le=32, description="training seeds per arm (match sampling + torch); the verdict's interval covers them")
    tuned: bool = Field(True, description=(
        "apply the values jobs/sweep.py chose on validation (<output>/sweep/sweep.json) to each preset when that record exists"))
    pad: CycleConfig = Field(default_factory=pad_preset, description="the `pad` preset")
    default: CycleConfig = Field(default_factory=default_preset, description="our `default` preset")
    ceiling: CycleConfig = Field(default_factory=ceiling_preset, description="the student ceiling: the same student with a teacher budget far beyond the arms'")
    sweep: SweepConfig = Field(default_factory=SweepConfig, description="jobs/sweep.py: the validation sweep of each preset")
    eval: EvalConfig = Field(default_factory=EvalConfig)
    progress: bool = Field(True, description="print progress")

    @field_validator("presets")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("an arm is listed twice")
        return v

    @model_validator(mode="before")
    @classmethod
    def _presets_are_the_base(cls, data):
        """``pad.cycles=5`` changes one field of the PAD preset; the rest stays PAD's (not CycleConfig's defaults)."""
        if isinstance(data, dict):
            for name, preset in {**PRESETS, "ceiling": ceiling_preset}.items():
                if isinstance(data.get(name), dict):
                    data = {**data, name: deep_merge(preset().model_dump(), data[name])}
        return data

    @model_validator(mode="before")
    @classmethod
    def _demo_captions(cls, data):
        """Without a dataset root the job runs on the demo world and pretrains on its colour-free captions."""
        if isinstance(data, dict) and not data.get("root"):
            data = {**data, "pretrain": with_demo_captions(data.get("pretrain"))}
        return data

    def output_uri(self) -> str:
        """The run folder. Reading modes (eval.final, progress) are not part of its identity: the
        final read of a run lands in the same folder as its validation runs and reuses them."""
        if self.output:
            return self.output
        from distill.runs import dataset_name, run_folder

        return run_folder("distill", dataset_name(self.root, self.world.name), self)

    def lockbox_setting(self) -> dict:
        """What identifies the lockbox (test set) this run would open: data, test sample, labels."""
        from distill.lockbox import test_setting

        return test_setting(self.root, self.world, self.eval, self.judge)


def require_checkpoint(uri: str, setting: str) -> None:
    """A student checkpoint the config names must exist before any work starts (a user error)."""
    from distill.errors import MissingInputError

    if not storage.exists(storage.join(uri, "student.json")):
        raise MissingInputError(f"{setting}={uri!r} is not a student checkpoint (no student.json)")


def preflight(cfg: DistillJobConfig, root: str) -> None:
    """Everything a run reads, checked before the first tournament: the splits (train for the cycles
    and caption pretraining, val for the learning curve and the report, test only for the final
    read) and the start."""
    splits = ("train", "val", "test") if cfg.eval.final else ("train", "val")
    datasets.require_splits(root, "distill", catalog=splits, personas=splits)
    if cfg.start_checkpoint:
        require_checkpoint(cfg.start_checkpoint, "start_checkpoint")


def resolve_root(cfg: DistillJobConfig) -> tuple[str, bool]:
    return datasets.resolve_root(cfg.root, cfg.world, "distill")  # preflight checks the splits


def ensure_pretrained(cfg: DistillJobConfig, root: str) -> str:
    """The start checkpoint: given, or caption-pretrained once under the run output."""
    if cfg.start_checkpoint:
        return cfg.start_checkpoint
    from distill.pretrain import caption_pretrain
    from distill.student import STUDENT_JSON

    out = storage.join(cfg.output_uri(), "pretrained")
    if not storage.exists(storage.join(out, "pretrain_report.json")) or not storage.exists(storage.join(out, STUDENT_JSON)):
        caption_pretrain(cfg.pretrain, root, out, progress=cfg.progress)
    return out


def build_val(cfg: DistillJobConfig, root: str, demo: bool):
    from distill.eval_sets import build_eval_set

    ev = cfg.eval
    return build_eval_set(root, "val", "val", ev.val_personas, ev.val_max_candidates, cfg.judge, cfg.pool,
                          ev.tournament, storage.join(cfg.output_uri(), "eval", "val-tournaments"), demo,
                          progress=cfg.progress)


def tuned_presets(cfg: DistillJobConfig, start: str | None = None) -> tuple[CycleConfig, CycleConfig, dict | None]:
    """``pad`` and ``default`` with the sweep's chosen values applied (when ``tuned`` and recorded),
    and the sweep record itself; with ``start``, the record must have been tuned from that checkpoint."""
    from distill.student import read_checkpoint_meta
    from distill.sweep import apply_choice, check_start, read_sweep

    record = read_sweep(cfg.output_uri()) if cfg.tuned else None
    if not record:
        return cfg.pad, cfg.default, None
    if start is not None:
        check_start(record, cfg.output_uri(), read_checkpoint_meta(start)["checkpoint_id"])
    chosen = record["chosen"]
    pad = apply_choice(cfg.pad, chosen["pad"]) if "pad" in chosen else cfg.pad
    default = apply_choice(cfg.default, chosen["default"]) if "default" in chosen else cfg.default
    return pad, default, record


def arm_output(out: str, name: str, seed: int, record: dict | None) -> str:
    """An arm's run folder under one seed: the sweep's run when it trained exactly this (the tuned
    ``pad`` or ``default`` at a sweep seed, ``distill.sweep.tuned_run``), else ``presets/<arm>/seed-<s>``."""
    from distill.sweep import tuned_run

    return tuned_run(out, record, name, seed) or storage.join(out, "presets", name, f"seed-{seed}")


def run(cfg: DistillJobConfig) -> dict:
    from distill.eval_sets import build_eval_set, evaluate_scores, evaluate_student, teacher_ceiling_scores
    from distill.metrics import HIT_KS, eval_set_size
    from distill.report import (CEILING_ROW, STUDENT_CEILING_ROW, add_gap_shares, add_paired_deltas, format_table,
                                plot_report, pool_seeds, side_by_side)
    from distill.label_quality import LabelMassSummary
    from distill.lockbox import open_lockbox

    root, demo = resolve_root(cfg)
    preflight(cfg, root)
    out = cfg.output_uri()
    start = ensure_pretrained(cfg, root)
    pad, default, sweep_record = tuned_presets(cfg, start)  # before any tournament: a record for another start stops here
    val = build_val(cfg, root, demo)
    seeds = replicate_seeds(cfg.seed, cfg.seeds)
    results: dict[str, list] = {}
    for name in cfg.presets:
        arm = arm_config(name, pad, default)
        results[name] = [run_cycles(seeded(arm, s), root, start, arm_output(out, name, s, sweep_record),
                                    cfg.judge, cfg.pool, val=val, progress=cfg.progress, label=f"{name}/seed {s}",
                                    embeddings_cache=shared_embeddings_dir(out))
                         for s in seeds]
    ceiling = None
    if cfg.eval.student_ceiling:
        ceiling = run_cycles(cfg.ceiling, root, start, storage.join(out, "presets", "student-ceiling"), cfg.judge,
                             cfg.pool, val=val, progress=cfg.progress, label="student ceiling",
                             embeddings_cache=shared_embeddings_dir(out))

    ev = cfg.eval
    lockbox = None
    if ev.final:  # the only place the test split is read
        lockbox = open_lockbox(out, cfg.lockbox_setting(), run={"arms": list(cfg.presets), "seeds": seeds})
        es = build_eval_set(root, "test", "test", ev.test_personas, ev.test_max_candidates, cfg.judge, cfg.pool,
                            ev.tournament, storage.join(out, "eval", "test-tournaments"), demo, progress=cfg.progress)
    else:
        es = val
    rows = [evaluate_student(START_ROW, start, es) | {"teacher_calls": 0}]
    if cfg.judge.kind == "text_oracle":  # its own ranking of the catalog is a ceiling only for this teacher
        rows.append(evaluate_scores(CEILING_ROW, teacher_ceiling_scores(es), es) | {"teacher_calls": 0})
    if ceiling is not None:
        rows.append(evaluate_student(STUDENT_CEILING_ROW, ceiling.checkpoint, es) | {"teacher_calls": ceiling.teacher_calls})
    for name, runs in results.items():
        per_seed = [evaluate_student(name, r.checkpoint, es) for r in runs]
        rows.append(pool_seeds(name, per_seed, teacher_calls=runs[0].teacher_calls))
    add_paired_deltas(rows)
    add_gap_shares(rows, START_ROW)
    ceiling_name = STUDENT_CEILING_ROW if ceiling is not None else None
    comparisons = [("default", "pad"), ("default@pad-budget", "pad"), ("default", "default@pad-budget"),
                   ("pad-loss@default", "default")]
    verdicts = [v for ch, base in comparisons
                if (v := side_by_side(rows, ch, base, start=START_ROW, ceiling=ceiling_name or "",
                                      max_calls_ratio=0.25 if (ch, base) == ("default", "pad") else 1.0))]
    headline = verdicts[0] if verdicts and (verdicts[0].challenger, verdicts[0].baseline) == ("default", "pad") else None
    curves = {f"{name}/seed {s}": [h["val"]["mpr"] for h in r.history if h.get("val")]
              for name, runs in results.items() for s, r in zip(seeds, runs)}
    plots = plot_report(rows, curves, storage.join(out, "eval"))
    quality = [h["label_quality"] for runs in results.values() for r in runs for h in r.history[1:]
               if h.get("label_quality")]
    report = {"split": "test" if ev.final else "val", "lockbox": lockbox.model_dump() if lockbox else None,
              "rows": rows, "curves": curves, "plots": plots, "start_checkpoint": start, "seeds": seeds,
              "tuned": sweep_record["chosen"] if sweep_record else None, "reference": reference_note(cfg, ceiling is not None),
              "checkpoints": {n: [r.checkpoint for r in runs] for n, runs in results.items()},
              "eval_teacher_calls": {"eval": es.teacher_calls, "val": val.teacher_calls},
              "label_quality": _pool_quality(quality, LabelMassSummary), "table": format_table(rows), "output": out,
              "eval_set": eval_set_size(len(es.persona_ids), len(es.item_ids), HIT_KS),
              "side_by_side": headline.model_dump(mode="json") if headline else None,
              "effects": [v.model_dump(mode="json") for v in verdicts]}
    storage.write_json_atomic(report, storage.join(out, "eval", "report.json" if ev.final else "report-val.json"))
    return report


def reference_note(cfg: DistillJobConfig, student_ceiling: bool) -> str:
    """What the report's gains are measured against, in words."""
    parts = []
    if student_ceiling:
        parts.append(f"'{'student ceiling'}' is this student trained on the teacher with a budget far beyond the arms' (the "
                     "`ceiling` preset); each arm's gap share is (arm - start) / (ceiling - start)")
    if cfg.judge.kind == "text_oracle":
        parts.append("'teacher ceiling (titles)' ranks the catalog by the text oracle's own title similarity: the "
                     "function the demo teacher computes, so it is near 100 by construction, not a target")
    else:
        parts.append(f"the teacher ({cfg.judge.kind}) has no whole-catalog ranking of its own: the reference is its "
                     "tournament winners, and a perfect score (100) is the only fixed point above the student ceiling")
    return "; ".join(parts)


def _pool_quality(entries: list[dict], model) -> dict | None:
    """The training labels' label-mass summaries of every cycle, added up (means weighted by views)."""
    if not entries:
        return None
    views = sum(e["views"] for e in entries)
    with_mass = sum(e["views_with_mass"] for e in entries)
    means = [(e["mean"], e["views_with_mass"]) for e in entries if e.get("mean") is not None]
    return model(views=views, views_with_mass=with_mass, min_label_mass=entries[0]["min_label_mass"],
                 flagged_views=sum(e["flagged_views"] for e in entries),
                 mean=sum(m * n for m, n in means) / with_mass if with_mass else None,
                 min=min((e["min"] for e in entries if e.get("min") is not None), default=None),
                 matches_without_training_label=sum(e["matches_without_training_label"] for e in entries)).model_dump()
