"""The whole distillation run from one config: pretrain (cached), validation and test tournaments,
the ``pad`` and ``default`` presets' cycles side by side, and the evaluation table + report.

``jobs/distill.py`` (run) and ``jobs/evaluate.py`` (evaluate finished checkpoints) are thin
wrappers around this module.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from distill import datasets, storage
from distill.config import deep_merge
from distill.cycles import CycleConfig, run_cycles
from distill.judges.config import JudgeConfig, TextOracleConfig
from distill.pretrain import PretrainConfig, with_demo_captions
from distill.tournament import JudgePoolConfig, TournamentConfig
from distill.train import TrainConfig
from distill.world import WorldConfig

PresetName = Literal["pad", "default"]


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


class EvalConfig(BaseModel):
    """Held-out personas x held-out catalog (test) and the validation set the cycles report on."""

    model_config = ConfigDict(extra="forbid")
    test_personas: int | None = Field(256, ge=1, description=(
        "test personas evaluated (seeded sample; the demo has 240, so all); empty = all. Each costs one "
        "k-way knockout over the test catalog: (N-1)/(k-1) teacher calls"))
    test_max_candidates: int | None = Field(None, ge=2, description="test catalog subsample; empty = the whole test catalog")
    val_personas: int | None = Field(200, ge=1, description=(
        "validation personas for the per-cycle learning curve and the early stop (32 hid a +1.2 pp gain in a demo run)"))
    val_max_candidates: int | None = Field(2048, ge=2, description="validation catalog subsample")
    tournament: TournamentConfig = Field(default_factory=TournamentConfig, description="the knockout that labels eval winners")


class DistillJobConfig(BaseModel):
    """jobs/distill.py: caption-pretrained student -> PAD preset and our default, evaluated side by side."""

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
    presets: list[PresetName] = Field(["pad", "default"], description="which recipes run (side by side)")
    pad: CycleConfig = Field(default_factory=pad_preset, description="the `pad` preset")
    default: CycleConfig = Field(default_factory=default_preset, description="our `default` preset")
    eval: EvalConfig = Field(default_factory=EvalConfig)
    progress: bool = Field(True, description="print progress")

    @model_validator(mode="before")
    @classmethod
    def _presets_are_the_base(cls, data):
        """``pad.cycles=5`` changes one field of the PAD preset; the rest stays PAD's (not CycleConfig's defaults)."""
        if isinstance(data, dict):
            for name, preset in PRESETS.items():
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
        if self.output:
            return self.output
        from distill.runs import dataset_name, run_folder

        return run_folder("distill", dataset_name(self.root, self.world.name), self)


def require_checkpoint(uri: str, setting: str) -> None:
    """A student checkpoint the config names must exist before any work starts (a user error)."""
    from distill.errors import MissingInputError

    if not storage.exists(storage.join(uri, "student.json")):
        raise MissingInputError(f"{setting}={uri!r} is not a student checkpoint (no student.json)")


def preflight(cfg: DistillJobConfig, root: str) -> None:
    """Everything a run reads, checked before the first tournament: the splits (train for the cycles
    and caption pretraining, val for the learning curve, test for the evaluation) and the start."""
    datasets.require_splits(root, "distill", catalog=("train", "val", "test"), personas=("train", "val", "test"))
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


def run(cfg: DistillJobConfig) -> dict:
    from distill.evaluate import (CEILING_ROW, HIT_KS, add_paired_deltas, build_eval_set, evaluate_scores,
                                  evaluate_student, format_table, plot_report, side_by_side,
                                  teacher_ceiling_scores)
    from distill.metrics import eval_set_size

    root, demo = resolve_root(cfg)
    preflight(cfg, root)
    out = cfg.output_uri()
    start = ensure_pretrained(cfg, root)
    ev = cfg.eval
    val = build_eval_set(root, "val", "val", ev.val_personas, ev.val_max_candidates, cfg.judge, cfg.pool,
                         ev.tournament, storage.join(out, "eval", "val-tournaments"), demo, progress=cfg.progress)
    results = {}
    for name in cfg.presets:
        preset: CycleConfig = getattr(cfg, name)
        results[name] = run_cycles(preset, root, start, storage.join(out, "presets", name), cfg.judge, cfg.pool,
                                   val=val, progress=cfg.progress, label=name)
    test = build_eval_set(root, "test", "test", ev.test_personas, ev.test_max_candidates, cfg.judge, cfg.pool,
                          ev.tournament, storage.join(out, "eval", "test-tournaments"), demo, progress=cfg.progress)
    rows = [evaluate_student(START_ROW, start, test) | {"teacher_calls": 0}]
    ceiling = evaluate_scores(CEILING_ROW, teacher_ceiling_scores(test), test)
    rows.append(ceiling | {"teacher_calls": 0})
    for name, res in results.items():
        rows.append(evaluate_student(name, res.checkpoint, test) | {"teacher_calls": res.teacher_calls})
    add_paired_deltas(rows)
    verdict = side_by_side(rows, "default", "pad", start=START_ROW, ceiling=CEILING_ROW)
    curves = {name: [h["val"]["mpr"] for h in res.history if h.get("val")] for name, res in results.items()}
    plots = plot_report(rows, curves, storage.join(out, "eval"))
    report = {"rows": rows, "curves": curves, "plots": plots, "start_checkpoint": start,
              "checkpoints": {n: r.checkpoint for n, r in results.items()},
              "eval_teacher_calls": {"test": test.teacher_calls, "val": val.teacher_calls},
              "table": format_table(rows), "output": out,
              "eval_set": eval_set_size(len(test.persona_ids), len(test.item_ids), HIT_KS),
              "side_by_side": verdict.model_dump(mode="json") if verdict else None}
    storage.write_json_atomic(report, storage.join(out, "eval", "report.json"))
    return report
