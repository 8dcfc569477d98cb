"""Train the student on teacher judgements with Ray Train (DDP: gloo on CPU, NCCL on GPU).

Pipeline:

1. ``examples_table``: judged matches (persona text, k candidate ids, teacher scores) joined with
   the candidates' encoded image bytes -> one row per match (``PREF_EXAMPLE_SCHEMA``).
2. ``preference_dataset``: a Ray Data dataset over those rows whose ``map_batches`` decodes and
   preprocesses the images with open_clip's transform and tokenizes the persona on CPU workers.
3. ``train_preferences``: a ``TorchTrainer`` whose workers read their shard with
   ``get_dataset_shard("train").iter_torch_batches`` (optionally a seeded local shuffle every
   epoch: ``epoch_batches``), wrap student + loss with ``prepare_model`` (DDP), and
   ``ray.train.report`` metrics with a checkpoint every epoch (or N steps). Rerunning with the
   same ``run_name`` and ``storage_path`` resumes from the last checkpoint (step count, optimiser
   state, metric history); ``FailureConfig(max_failures)`` restarts crashed workers.

The final checkpoint directory holds ``student/`` (a ``Student.save`` checkpoint with its
``checkpoint_id``) and ``state.pt`` (optimiser, step, history).
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pyarrow as pa
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from distill import storage
from distill.losses import LossKind, PreferenceLoss, anchor_penalty
from distill.student import Student, StudentConfig, build_student

if TYPE_CHECKING:
    import ray.data
    import ray.train

PREF_EXAMPLE_SCHEMA = pa.schema(
    [
        pa.field("persona_text", pa.string(), nullable=False),
        pa.field("images", pa.list_(pa.binary()), nullable=False),
        pa.field("teacher", pa.list_(pa.float32()), nullable=False),
    ],
    metadata={"persona_distill.table": "pref_examples", "persona_distill.version": "1"},
)


class TrainConfig(BaseModel):
    """How one training stage runs: loss, optimiser, scale-out, checkpoints."""

    model_config = ConfigDict(extra="forbid")
    # how the work is spread, not what is learnt: a run may resume with other values of these
    EXECUTION_FIELDS: ClassVar[frozenset[str]] = frozenset({
        "num_workers", "use_gpu", "accelerator_type", "amp", "cpus_per_worker", "data_cpus", "max_failures",
        "torch_threads", "report_every_steps"})

    loss: LossKind = Field("listwise_kl", description="bt (PAD) | listwise_kl | plackett_luce")
    init_scale: float = Field(20.0, gt=0, description="initial inverse temperature on cosine scores (1.0 = PAD's raw cosines)")
    learn_scale: bool = Field(True, description="learn the inverse temperature")
    anchor_weight: float = Field(0.0, ge=0, description="weight of sum ||theta - theta_0||^2 (keeps the student near its start)")
    lr: float = Field(3e-4, gt=0, description="AdamW learning rate")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay")
    grad_clip: float | None = Field(1.0, description="max grad norm (PAD: 1.0); empty = no clipping")
    epochs: int = Field(2, ge=1, description="passes over the examples")
    batch_size: int = Field(32, ge=1, description="global batch (matches per optimiser step), split over workers")
    shuffle_buffer: int | None = Field(None, ge=2, description=(
        "examples each worker shuffles its shard through, in a new seeded order every epoch (Ray Data's local "
        "shuffle; each buffered example holds k preprocessed images, ~250 kB at 64 px, k = 5); empty = the stored "
        "order. The distill presets use 1024: the stored order cost the demo default about a point"))
    report_every_steps: int | None = Field(None, ge=1, description="report + checkpoint every N steps as well as each epoch")
    num_workers: int = Field(2, ge=1, description="Ray Train workers (DDP ranks)")
    use_gpu: bool = Field(False, description="one GPU per worker; backend becomes NCCL")
    accelerator_type: str | None = Field(None, description=(
        "Ray accelerator type of the workers' GPUs, e.g. 'H100' (with use_gpu): on a cluster whose GPU groups "
        "run different images it keeps the workers on the group with CUDA torch; null = any GPU"))
    amp: bool = Field(False, description="bf16 autocast on GPU workers (ignored on CPU)")
    cpus_per_worker: float = Field(0.5, gt=0, description=(
        "CPUs Ray reserves per training worker (0.5 leaves room for Ray Data preprocessing on a 2-core box; "
        "use whole CPUs on a cluster)"))
    data_cpus: float = Field(0.25, gt=0, description="CPUs Ray reserves per Ray Data preprocessing task")
    max_failures: int = Field(1, ge=-1, description="worker-group restarts Ray Train may do (-1 = unlimited)")
    seed: int = Field(0, description="torch seed on every worker")
    torch_threads: int = Field(1, ge=1, description="torch intra-op threads per worker")


def examples_table(matches: pa.Table, persona_text: dict[str, str], images: dict[str, bytes]) -> pa.Table:
    """Judged matches (MATCH_SCHEMA columns persona_id, candidate_ids, scores) -> training rows.

    Matches without scores (failed judgements) are dropped: nothing is guessed.
    """
    rows = {"persona_text": [], "images": [], "teacher": []}
    for pid, cands, scores in zip(matches["persona_id"].to_pylist(), matches["candidate_ids"].to_pylist(),
                                  matches["scores"].to_pylist()):
        if scores is None or len(scores) != len(cands):
            continue
        rows["persona_text"].append(persona_text[pid])
        rows["images"].append([images[c] for c in cands])
        rows["teacher"].append([float(s) for s in scores])
    return pa.table(rows, schema=PREF_EXAMPLE_SCHEMA)


def preprocess_batch(batch: dict[str, np.ndarray], preprocess, tokenizer, k: int) -> dict[str, np.ndarray]:
    """Ray Data batch function: decode + open_clip preprocess images, tokenize personas (CPU).

    Output columns: pixels (B, k, 3, H, W) float32, tokens (B, L), teacher (B, k), mask (B, k);
    matches with fewer than k candidates are zero-padded and masked.
    """
    from distill.student import decode_images

    torch.set_num_threads(1)
    n = len(batch["persona_text"])
    pixels, teacher, mask = [], np.zeros((n, k), np.float32), np.zeros((n, k), bool)
    for i in range(n):
        imgs = list(batch["images"][i])
        t = decode_images([bytes(b) for b in imgs], preprocess)
        pad = k - t.shape[0]
        if pad:
            t = torch.cat([t, torch.zeros(pad, *t.shape[1:])])
        pixels.append(t.numpy())
        teacher[i, :len(imgs)] = np.asarray(batch["teacher"][i], np.float32)
        mask[i, :len(imgs)] = True
    tokens = tokenizer([str(s) for s in batch["persona_text"]]).numpy()
    return {"pixels": np.stack(pixels).astype(np.float32), "tokens": tokens, "teacher": teacher, "mask": mask}


def preference_dataset(table: pa.Table, student: Student, k: int | None = None, batch_size: int = 16,
                       num_cpus: float = 0.25, cache: bool = True):
    """A Ray Data dataset of preprocessed training examples (decode/preprocess in Ray Data CPU tasks).

    ``cache`` materialises the preprocessed tensors in the object store once, so later epochs do
    not decode again (``3*H*W*4*k`` bytes per match: ~250 kB at 64 px, k = 5); turn it off for
    example sets larger than the object store, and the pipeline streams every epoch instead.
    """
    import ray.data

    from distill.ray_utils import init_ray, light_task_slots

    init_ray()
    import pyarrow.compute as pc

    # the longest match, counted in Arrow (to_pylist would copy every image's bytes into Python)
    k = k or int(pc.max(pc.list_value_length(table["images"])).as_py() or 1)  # an empty table: max is null
    n_blocks = max(1, min(64, table.num_rows // max(1, batch_size)))
    # At most one task per cluster CPU in flight: a fractional-CPU task would otherwise let Ray run
    # 1/num_cpus tasks per core, each in a fresh worker that imports torch and open_clip (~5 s of
    # CPU) to unpickle the transform and tokenizer for a batch that takes 0.05 s to preprocess.
    ds = ray.data.from_arrow(table).repartition(n_blocks).map_batches(
        preprocess_batch, fn_kwargs={"preprocess": student.preprocess, "tokenizer": student.tokenizer, "k": k},
        batch_size=batch_size, batch_format="numpy", num_cpus=num_cpus,
        compute=ray.data.TaskPoolStrategy(size=min(n_blocks, light_task_slots())))
    # Blocks keep the table's order (Ray Data otherwise emits them as tasks finish), so a seeded
    # run sees its examples in the same order every time and reproduces its weights.
    ds.context.execution_options.preserve_order = True
    return ds.materialize() if cache else ds


def ordered_ingest() -> "ray.train.DataConfig":
    """Ray Train's default ingest options with ``preserve_order``: each worker's shard arrives in
    the dataset's order, not in the order its blocks happen to be fetched (see preference_dataset)."""
    import ray.train

    options = ray.train.DataConfig.default_ingest_options()
    options.preserve_order = True
    return ray.train.DataConfig(execution_options=options)


class PreferenceModule(nn.Module):
    """Student model + loss as one module, so DDP all-reduces the loss's learnable scale too."""

    def __init__(self, model: nn.Module, loss: PreferenceLoss):
        super().__init__()
        self.model = model
        self.loss = loss

    def scores(self, pixels: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        b, k = pixels.shape[:2]
        img, txt = self.model(pixels.flatten(0, 1), tokens)[:2]  # open_clip forward: normalised features
        return torch.einsum("bkd,bd->bk", img.view(b, k, -1), txt)

    def forward(self, pixels, tokens, teacher, mask):
        s = self.scores(pixels, tokens)
        return self.loss(s.float(), teacher, mask), s.detach()


def _save_state(path: str, student: Student, module: PreferenceModule, opt, step: int, epoch: int,
                history: list[dict[str, float]]) -> None:
    student.save(os.path.join(path, "student"), extra={"step": step, "epoch": epoch})
    torch.save({"loss": module.loss.state_dict(), "optimizer": opt.state_dict(), "step": step, "epoch": epoch,
                "history": history}, os.path.join(path, "state.pt"))


def _resume(ckpt: "ray.train.Checkpoint | None", student_cfg: StudentConfig) -> tuple[Student, dict[str, Any] | None]:
    """The student to train and the saved loop state: fresh from config, or rebuilt from a checkpoint.

    `as_directory` (not `to_directory`) so a resumed run reads the checkpoint in place instead of
    leaving a copy under /tmp for every restart.
    """
    if ckpt is None:
        return build_student(student_cfg), None
    with ckpt.as_directory() as local:
        student = build_student(student_cfg.model_copy(update={"pretrained": os.path.join(local, "student")}))
        state = torch.load(os.path.join(local, "state.pt"), map_location="cpu", weights_only=False)
    return student, state


def _train_loop(config: dict[str, Any]) -> None:
    import ray.train
    import ray.train.torch

    cfg = TrainConfig(**config["train"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.set_num_threads(cfg.torch_threads)
    torch.manual_seed(cfg.seed)

    student, state = _resume(ray.train.get_checkpoint(), StudentConfig(**config["student"]))
    student.model.logit_scale.requires_grad = False  # contrastive-only parameter
    module = PreferenceModule(student.model, PreferenceLoss(cfg.loss, cfg.init_scale, cfg.learn_scale))
    if state is not None:
        module.loss.load_state_dict(state["loss"])
    anchors = [p.detach().clone() for p in student.trainable_parameters()] if cfg.anchor_weight else None
    ddp = ray.train.torch.prepare_model(module)
    params = [p for p in module.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if state is not None:
        opt.load_state_dict(state["optimizer"])
    step = state["step"] if state else 0
    start_epoch = state["epoch"] if state else 0
    history: list[dict[str, float]] = state["history"] if state else []
    device = next(module.parameters()).device
    local_bs = max(1, cfg.batch_size // world)
    shard = ray.train.get_dataset_shard("train")

    def report(epoch: int, loss_sum: float, n: int, final_of_epoch: bool) -> None:
        t = torch.tensor([loss_sum, n], dtype=torch.float64, device=device)
        if world > 1:
            torch.distributed.all_reduce(t)
        seconds = time.perf_counter() - epoch_t0
        metrics = {"step": step, "epoch": epoch + (1 if final_of_epoch else 0), "loss": float(t[0] / max(t[1], 1)),
                   "scale": float(module.loss.scale.detach()), "examples": int(t[1]),
                   "seconds": seconds, "samples_per_s": float(t[1]) / max(seconds, 1e-9), "workers": world}
        history.append(metrics)
        with tempfile.TemporaryDirectory() as tmp:
            checkpoint = None
            if rank == 0:
                _save_state(tmp, student, module, opt, step, metrics["epoch"], history)
                checkpoint = ray.train.Checkpoint.from_directory(tmp)
            ray.train.report(dict(metrics), checkpoint=checkpoint)

    for epoch in range(start_epoch, cfg.epochs):
        student.train_mode(student.model)
        loss_sum, n = 0.0, 0
        epoch_t0 = time.perf_counter()
        for batch in epoch_batches(shard, cfg, epoch, local_bs, device):
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cfg.amp and cfg.use_gpu):
                loss, _ = ddp(batch["pixels"], batch["tokens"], batch["teacher"], batch["mask"])
            total = loss
            if anchors is not None:
                total = total + cfg.anchor_weight * anchor_penalty(student.trainable_parameters(), anchors)
            opt.zero_grad(set_to_none=True)
            total.backward()
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            opt.step()
            step += 1
            bsz = batch["teacher"].shape[0]
            loss_sum += float(loss.detach()) * bsz
            n += bsz
            if cfg.report_every_steps and step % cfg.report_every_steps == 0:
                report(epoch, loss_sum, n, final_of_epoch=False)
        report(epoch, loss_sum, n, final_of_epoch=True)


def epoch_batches(shard: ray.data.DataIterator, cfg: TrainConfig, epoch: int, batch_size: int,
                  device: torch.device | str = "cpu"):
    """One epoch of a worker's shard as torch batches: the stored order, or (with ``shuffle_buffer``)
    Ray Data's local shuffle with a seed per epoch, so every epoch sees another order. (The seed
    formula is kept as the README's runs used it; any per-epoch seed would do.)"""
    shuffle = {"local_shuffle_buffer_size": cfg.shuffle_buffer,
               "local_shuffle_seed": cfg.seed * 100_003 + epoch} if cfg.shuffle_buffer else {}
    return shard.iter_torch_batches(batch_size=batch_size, device=device, **shuffle)


@dataclass
class TrainResult:
    checkpoint: str            # the last checkpoint directory (URI)
    student_checkpoint: str    # its student/ sub-directory: what Student.load and serving take
    checkpoint_id: str
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0


def train_preferences(dataset, student_cfg: StudentConfig, cfg: TrainConfig, run_name: str,
                      storage_path: str) -> TrainResult:
    """Fit on ``dataset`` (from ``preference_dataset``); resumes ``run_name`` under ``storage_path``."""
    import ray.train
    from ray.train.torch import TorchConfig

    from distill.ray_utils import init_ray, torch_trainer_class
    from distill.student import read_checkpoint_meta

    init_ray()
    t0 = time.time()
    storage.makedirs(storage_path)
    trainer = torch_trainer_class()(
        _train_loop,
        train_loop_config={"train": cfg.model_dump(), "student": student_cfg.model_dump()},
        torch_config=TorchConfig(backend="nccl" if cfg.use_gpu else "gloo"),
        scaling_config=ray.train.ScalingConfig(num_workers=cfg.num_workers, use_gpu=cfg.use_gpu,
                                               resources_per_worker={"CPU": cfg.cpus_per_worker},
                                               accelerator_type=cfg.accelerator_type),
        run_config=ray.train.RunConfig(
            name=run_name, storage_path=storage_path if "://" in storage_path else os.path.abspath(storage_path),
            failure_config=ray.train.FailureConfig(max_failures=cfg.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2)),
        datasets={"train": dataset},
        dataset_config=ordered_ingest(),
    )
    result = trainer.fit()
    if result.checkpoint is None:
        raise RuntimeError(f"training run {run_name!r} reported no checkpoint")
    ckpt_path = result.checkpoint.path
    if "://" not in ckpt_path and storage_path and "://" in storage_path:
        ckpt_path = f"{storage_path.split('://')[0]}://{ckpt_path}"
    with result.checkpoint.as_directory() as local:
        state = torch.load(os.path.join(local, "state.pt"), map_location="cpu", weights_only=False)
        ckpt_id = read_checkpoint_meta(os.path.join(local, "student"))["checkpoint_id"]
    return TrainResult(checkpoint=ckpt_path, student_checkpoint=storage.join(ckpt_path, "student"),
                       checkpoint_id=ckpt_id, history=state["history"], seconds=time.time() - t0)
