"""Caption pretraining: the demo's baseline student, trained on image-title pairs of the train catalog.

FashionCLIP was CLIP fine-tuned on product captions; the demo student gets the same treatment
so that distillation starts from an honest baseline. The loss is open_clip's own
``ClipLoss`` (symmetric InfoNCE with the model's learnable ``logit_scale``). When the text tower
is frozen (the demo: MiniLM), title embeddings are computed once and only the image tower runs
per step.
"""

from __future__ import annotations

import collections
import math
import time
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from distill import datasets, storage
from distill.errors import DataError
from distill.seeding import sample_rows
from distill.schemas import Split
from distill.student import Student, StudentConfig, build_student
from distill.world.build import WorldConfig


class PretrainConfig(BaseModel):
    """Contrastive image-title pretraining of the student (single process; minutes on 2 CPU cores)."""

    model_config = ConfigDict(extra="forbid")

    student: StudentConfig = Field(default_factory=StudentConfig, description="the student to pretrain (its start weights)")
    split: Split = Field("train", description="catalog split whose image-title pairs are used")
    caption_template: str | None = Field(None, description=(
        "caption per item instead of its title: a str.format template over `title` and the item's "
        "attributes, e.g. '{article} with a {motif} print' (the demo world's titles without the colour); "
        "empty = the title"))
    max_items: int | None = Field(4096, ge=2, description="seeded subsample of the split (pixels are cached in memory); empty = all")
    steps: int = Field(100, ge=1, description="optimiser steps")
    batch_size: int = Field(128, ge=2, description="pairs per step (in-batch negatives)")
    lr: float = Field(1e-3, gt=0, description="AdamW peak learning rate (linear warmup, cosine decay)")
    warmup_steps: int = Field(20, ge=0, description="linear warmup steps")
    weight_decay: float = Field(0.05, ge=0, description="AdamW weight decay")
    seed: int = Field(0, description="subsample, init and batch order seed")
    threads: int = Field(2, ge=1, description="torch intra-op threads")
    log_every: int = Field(25, ge=1, description="print the loss every N steps")

    @field_validator("caption_template")
    @classmethod
    def _named_fields_only(cls, template: str | None) -> str | None:
        """Refuse a malformed template or a positional field ('{}', '{0}') before any work starts;
        an empty template means the title, as the description says."""
        if not template:
            return None
        try:  # a dry fill: str.format itself rejects positional fields, bad conversions and specs
            template.format_map(collections.defaultdict(str))
        except ValueError as err:
            raise ValueError(f"caption_template {template!r} is not a str.format template over named "
                             f"fields: {err}") from None
        except (IndexError, AttributeError, TypeError):
            pass  # '{article[0]}' parses; whether the items' values allow it is captions()' question
        return template


def with_demo_captions(pretrain: Any) -> Any:
    """A config's raw ``pretrain`` section with the demo world's caption template filled in where
    it names none: a job without a dataset root pretrains on the demo world, whose captions leave
    out the colour (``DEMO_CAPTION_TEMPLATE``). ``caption_template=''`` still means the titles.
    A validated PretrainConfig passes unchanged: it was built deliberately."""
    from distill.world.catalog import DEMO_CAPTION_TEMPLATE

    if pretrain is None:
        return {"caption_template": DEMO_CAPTION_TEMPLATE}
    if isinstance(pretrain, dict) and "caption_template" not in pretrain:
        return {**pretrain, "caption_template": DEMO_CAPTION_TEMPLATE}
    return pretrain


def captions(catalog: pa.Table, template: str | None) -> list[str]:
    """The text side of each image-caption pair: the title, or ``template`` filled per item.

    Why a template: a catalog's titles may say everything a teacher reads, leaving distillation
    nothing to add; captions built from fewer fields emulate literal captions that leave out
    what a VLM teacher sees in the image.
    """
    titles = catalog["title"].to_pylist()
    if template is None:
        return titles
    attrs = catalog["attributes"].to_pylist() if "attributes" in catalog.column_names else [None] * len(titles)
    out = []
    for title, pairs in zip(titles, attrs):
        fields = {"title": title, **dict(pairs or [])}
        try:
            out.append(template.format(**fields))
        except KeyError as err:
            raise DataError(f"caption_template {template!r} names {err.args[0]!r}, a field the item does not have; "
                             f"it has {sorted(fields)}") from None
        except (IndexError, AttributeError, TypeError) as err:
            raise DataError(f"caption_template {template!r} does not fit item {fields}: {err}") from None
    return out


def _pixels(student: Student, images: list[bytes], chunk: int = 512) -> torch.Tensor:
    out = [student.image_tensor(images[s:s + chunk]).to(torch.float16) for s in range(0, len(images), chunk)]
    return torch.cat(out)


def caption_pretrain(cfg: PretrainConfig, root: str, output: str, progress: bool = True) -> dict:
    """Pretrain, save a student checkpoint at ``output``, return a small report."""
    datasets.require_splits(root, "pretrain", catalog=(cfg.split,))
    t0 = time.time()
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    student = build_student(cfg.student)
    columns = ["item_id", "title", "image"] + (["attributes"] if cfg.caption_template else [])
    catalog = datasets.read_catalog(root, split=cfg.split, columns=columns)
    rng = np.random.default_rng(cfg.seed)
    catalog = sample_rows(catalog, cfg.max_items, rng)
    texts = captions(catalog, cfg.caption_template)
    pixels = _pixels(student, catalog["image"].to_pylist())
    text_frozen = student.cfg.train_towers == "image"
    text_feats = torch.from_numpy(student.encode_texts(texts)) if text_frozen else None
    tokens = None if text_frozen else student.tokenize(texts)

    import open_clip

    loss_fn = open_clip.ClipLoss()
    params = student.trainable_parameters()
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)

    def lr_at(step: int) -> float:
        if step < cfg.warmup_steps:
            return cfg.lr * (step + 1) / cfg.warmup_steps
        frac = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
        return cfg.lr * 0.5 * (1 + math.cos(math.pi * frac))

    n = pixels.shape[0]
    order = rng.permutation(n)
    pos = 0
    losses = []
    student.train_mode()
    model = student.model
    for step in range(cfg.steps):
        if pos + cfg.batch_size > n:
            order, pos = rng.permutation(n), 0
        idx = torch.from_numpy(order[pos:pos + cfg.batch_size])
        pos += cfg.batch_size
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        img = model.encode_image(pixels[idx].float(), normalize=True)
        txt = text_feats[idx] if text_frozen else model.encode_text(tokens[idx], normalize=True)
        loss = loss_fn(img, txt, model.logit_scale.exp())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        losses.append(float(loss.detach()))
        if progress and (step % cfg.log_every == 0 or step == cfg.steps - 1):
            print(f"pretrain step {step + 1}/{cfg.steps} loss {np.mean(losses[-cfg.log_every:]):.4f} "
                  f"scale {model.logit_scale.exp().item():.1f} ({time.time() - t0:.0f} s)", flush=True)
    ckpt_id = student.save(output, extra={"pretrain": cfg.model_dump(mode="json"), "final_loss": losses[-1]})
    report = {"checkpoint": output, "checkpoint_id": ckpt_id, "items": n, "steps": cfg.steps,
              "caption_examples": texts[:3],
              "first_loss": losses[0], "final_loss": float(np.mean(losses[-10:])), "seconds": time.time() - t0}
    storage.write_json_atomic(report, storage.join(output, "pretrain_report.json"))
    return report


class PretrainJobConfig(PretrainConfig):
    """jobs/pretrain.py: contrastive image-title pretraining of the student."""

    model_config = ConfigDict(extra="forbid")
    EXECUTION_FIELDS: ClassVar[frozenset[str]] = frozenset({"output", "log_every"})
    root: str | None = Field(None, description="dataset root URI; empty = the built-in demo world")
    world: WorldConfig = Field(default_factory=WorldConfig, description="demo world used when root is empty")
    output: str | None = Field(None, description="checkpoint URI; empty = $PERSONA_DISTILL_HOME/runs/pretrain-<data>-<hash of the config>")

    @model_validator(mode="before")
    @classmethod
    def _demo_captions(cls, data):
        """Without a dataset root: the demo world and its colour-free captions (as jobs/distill.py)."""
        return with_demo_captions(data) if isinstance(data, dict) and not data.get("root") else data


def default_output(cfg: PretrainJobConfig) -> str:
    """Where a pretrain run writes when no output is given: keyed by what decides the weights."""
    from distill.runs import dataset_name, run_folder

    return run_folder("pretrain", dataset_name(cfg.root, cfg.world.name), cfg)
