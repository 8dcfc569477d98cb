"""The validation sweep: each preset's learning rate and one more knob, chosen with equal effort.

A side-by-side is fair only when both recipes were tuned the same way. So each preset gets the
*same* grid, relative to its own values: learning rate x ``lr_factors``, times ``knob`` (a
dotted CycleConfig field, ``train.epochs`` by default) over ``knob_values``, each point trained
under ``seeds`` seeds from the start checkpoint and scored on the validation set (the run's
best-validating cycle, as the presets keep it). Nothing here reads the test split.

Recorded in the run folder: ``sweep/sweep.json`` (grid, every point's validation MPR per seed,
the chosen values per preset) and ``sweep/sweep.parquet`` (the same rows as a table). The
distillation job applies the chosen values to the presets when it finds the record
(``tuned=true``); the derived arms (default@pad-budget, pad-loss@default) follow the tuned ones.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, field_validator

from distill import storage
from distill.cycles import CycleConfig

SWEEP_DIR = "sweep"


class SweepConfig(BaseModel):
    """The same grid for every preset, relative to the preset's own values."""

    model_config = ConfigDict(extra="forbid")
    presets: list[str] = Field(["pad", "default"], description="presets tuned (each gets the identical grid)")
    lr_factors: list[float] = Field([0.3, 1.0, 3.0], min_length=1, description="learning rates tried: the preset's train.lr x each factor")
    knob: str = Field("train.epochs", description="the second knob: a dotted CycleConfig field (e.g. train.epochs, train.batch_size, replay)")
    knob_values: list[Any] = Field([1, 2], min_length=1, description="values tried for the knob")
    seeds: int = Field(1, ge=1, le=8, description="training seeds per grid point (derived from the job's seed)")

    @field_validator("lr_factors")
    @classmethod
    def _positive(cls, v: list[float]) -> list[float]:
        if any(f <= 0 for f in v):
            raise ValueError("lr factors must be > 0")
        return v


def set_dotted(cfg: CycleConfig, changes: dict[str, Any]) -> CycleConfig:
    """``cfg`` with dotted fields replaced (``{"train.lr": 3e-5}``), validated again."""
    data = cfg.model_dump()
    for dotted, value in changes.items():
        node = data
        keys = dotted.split(".")
        for key in keys[:-1]:
            if not isinstance(node.get(key), dict):
                raise ValueError(f"sweep knob {dotted!r}: {key!r} is not a section of the preset")
            node = node[key]
        if keys[-1] not in node:
            raise ValueError(f"sweep knob {dotted!r}: no field {keys[-1]!r} in the preset")
        node[keys[-1]] = value
    return CycleConfig.model_validate(data)


def apply_choice(cfg: CycleConfig, choice: dict[str, Any]) -> CycleConfig:
    """A preset with the sweep's chosen values (``{"train.lr": ..., "<knob>": ...}``)."""
    return set_dotted(cfg, choice)


def grid(cfg: SweepConfig, preset: CycleConfig) -> list[dict[str, Any]]:
    """The grid points for one preset as dotted changes (identical in shape for every preset)."""
    return [{"train.lr": float(preset.train.lr * f), cfg.knob: v} for f in cfg.lr_factors for v in cfg.knob_values]


def point_name(point: dict[str, Any]) -> str:
    return ",".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in point.items())


def sweep_path(output: str, name: str = "sweep.json") -> str:
    return storage.join(output, SWEEP_DIR, name)


def run_dir(output: str, preset_name: str, point: str, seed: int) -> str:
    """Where the sweep trains one grid point (by its ``point_name``) of one preset under one seed."""
    return storage.join(output, SWEEP_DIR, preset_name, point, f"seed-{seed}")


def tuned_run(output: str, record: dict | None, preset_name: str, seed: int) -> str | None:
    """The sweep's run of ``preset_name``'s chosen point under ``seed``, when the sweep trained it here.

    Why: the tuned preset under that seed *is* that run (the same recipe, start and seed, and
    seeded training is reproducible), so the distillation job resumes it instead of training it
    again: on the demo that saves the seed-0 runs of ``pad`` and ``default``, ~11 min of 2 cores.
    ``run_cycles`` still checks the folder's recorded recipe and start before using it."""
    if not record or preset_name not in record.get("chosen", {}):
        return None
    chosen = record["chosen"][preset_name]
    # the row names the folder: the record's JSON sorts the chosen changes' keys, the grid does not
    row = next((r for r in record.get("rows", []) if r["preset"] == preset_name and r["seed"] == seed
                and json.loads(r["changes"]) == chosen), None)
    if row is None:
        return None
    folder = run_dir(output, preset_name, row["point"], seed)
    return folder if storage.exists(storage.join(folder, "start.json")) else None


def read_sweep(output: str) -> dict | None:
    path = sweep_path(output)
    return storage.read_json(path) if storage.exists(path) else None


def check_start(record: dict, output: str, start_checkpoint_id: str) -> None:
    """A sweep's choice holds for the start it was tuned from: refuse a record made from another one.

    Why: the record may come from elsewhere (another machine's sweep copied into the run folder,
    a shared ``output`` on object storage), and learning rates chosen for one start say little
    about another. A record without the id (older) is taken as it is."""
    from distill.errors import DataError

    tuned_from = record.get("start_checkpoint_id")
    if tuned_from and tuned_from != start_checkpoint_id:
        raise DataError(f"{sweep_path(output)}: the sweep was tuned from start checkpoint {tuned_from[:12]}, this run "
                        f"starts from {start_checkpoint_id[:12]}; rerun jobs/sweep.py or set tuned=false")


def choose(rows: list[dict]) -> dict[str, dict[str, Any]]:
    """Per preset, the grid point with the highest validation MPR averaged over its seeds
    (earliest point of the grid on ties)."""
    best: dict[str, tuple[float, int, dict]] = {}
    by_point: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        by_point.setdefault((r["preset"], r["point"]), []).append(r)
    for (preset, _), rs in by_point.items():
        mean = float(np.mean([r["val_mpr"] for r in rs]))
        key = (mean, -rs[0]["grid_index"])
        if preset not in best or key > best[preset][:2]:
            best[preset] = (mean, -rs[0]["grid_index"], json.loads(rs[0]["changes"]))
    return {p: b[2] for p, b in best.items()}


def run_sweep(cfg) -> dict:
    """Run the grid for each preset on validation (resumable: finished cycles are reused) and record it.

    ``cfg`` is the distillation job's config (``DistillJobConfig``): same world, start, teacher,
    validation set and output folder as the runs the chosen values are then applied to.
    """
    from distill.cycles import best_cycle, run_cycles, shared_embeddings_dir
    from distill.distill_job import build_val, ensure_pretrained, replicate_seeds, resolve_root, seeded
    from distill.student import read_checkpoint_meta

    sw: SweepConfig = cfg.sweep
    root, demo = resolve_root(cfg)
    out = cfg.output_uri()
    start = ensure_pretrained(cfg, root)
    val = build_val(cfg, root, demo)
    seeds = replicate_seeds(cfg.seed, sw.seeds)
    rows: list[dict] = []
    for preset_name in sw.presets:
        preset: CycleConfig = getattr(cfg, preset_name)
        for i, point in enumerate(grid(sw, preset)):
            variant, name = set_dotted(preset, point), point_name(point)
            for s in seeds:
                res = run_cycles(seeded(variant, s), root, start, run_dir(out, preset_name, name, s),
                                 cfg.judge, cfg.pool, val=val, progress=cfg.progress,
                                 label=f"sweep {preset_name} {name} seed {s}",
                                 embeddings_cache=shared_embeddings_dir(out))
                b = best_cycle(res.history)
                chosen = res.history[b if b is not None else -1]
                rows.append({"preset": preset_name, "grid_index": i, "point": name,
                             "changes": json.dumps(point), "seed": s, "val_mpr": float(chosen["val"]["mpr"]),
                             "best_cycle": b, "teacher_calls": int(res.teacher_calls), "checkpoint": res.checkpoint})
    record = {"grid": sw.model_dump(mode="json"), "seeds": seeds, "val_personas": len(val.persona_ids),
              "start_checkpoint_id": read_checkpoint_meta(start)["checkpoint_id"],
              "val_candidates": len(val.item_ids), "rows": rows, "chosen": choose(rows),
              "runs_per_preset": {p: sum(r["preset"] == p for r in rows) for p in sw.presets}}
    storage.write_table_atomic(pa.Table.from_pylist(rows), sweep_path(out, "sweep.parquet"))
    storage.write_json_atomic(record, sweep_path(out))
    return record


def format_sweep(record: dict) -> str:
    """The sweep as a small table: preset, point, mean validation MPR over seeds, chosen mark."""
    lines = [f"{'preset':<10}{'point':<40}{'val MPR %':>10}  seeds"]
    points: dict[tuple[str, str], list[float]] = {}
    for r in record["rows"]:
        points.setdefault((r["preset"], r["point"]), []).append(r["val_mpr"])
    chosen = {p: point_name(c) for p, c in record["chosen"].items()}
    for (preset, point), vals in points.items():
        mark = "  <- chosen" if chosen.get(preset) == point else ""
        lines.append(f"{preset:<10}{point:<40}{100 * np.mean(vals):>10.2f}  {len(vals)}{mark}")
    return "\n".join(lines)
