"""jobs/sweep.py end to end on a small demo world: a recorded validation sweep, no test split read."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.test_distill_job import WORLD


@pytest.mark.slow
@pytest.mark.timeout(1800)  # two Ray Train runs + the validation tournaments on a shared 2-core machine
def test_sweep_job_records_the_grid_and_the_distill_job_applies_the_choice(ray_local, tmp_path, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("sweep_entry", Path(__file__).parents[1] / "jobs" / "sweep.py")
    entry = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(entry)
    out = tmp_path / "runs" / "distill-small"
    args = WORLD + ["pretrain.steps=4", "pretrain.max_items=128", "pretrain.batch_size=32", "pretrain.warmup_steps=1",
                    "eval.val_personas=4", "eval.val_max_candidates=96", "progress=false", f"output={out}",
                    "default.cycles=1", "default.matches_per_cycle=8", "default.train_catalog_max_items=128",
                    "default.train.num_workers=1", "default.embed.max_actors=1",
                    "sweep.presets=[default]", "sweep.lr_factors=[1.0, 3.0]",
                    "sweep.knob=train.epochs", "sweep.knob_values=[1]"]
    record = entry.main(args)
    printed = capsys.readouterr().out
    assert record["runs_per_preset"] == {"default": 2} and len(record["rows"]) == 2
    lrs = sorted(r["changes"] for r in record["rows"])
    assert len(set(lrs)) == 2
    saved = json.loads((out / "sweep" / "sweep.json").read_text())
    assert saved["chosen"] == record["chosen"] and pq.read_table(out / "sweep" / "sweep.parquet").num_rows == 2
    best = max(record["rows"], key=lambda r: r["val_mpr"])
    assert record["chosen"]["default"] == json.loads(best["changes"])
    assert "<- chosen" in printed
    assert not (out / "eval" / "test-tournaments").exists()  # validation only

    from distill.config import build_config
    from distill.distill_job import DistillJobConfig, tuned_presets

    cfg = build_config(DistillJobConfig, None, args)
    _, default, chosen = tuned_presets(cfg)
    assert default.train.lr == pytest.approx(record["chosen"]["default"]["train.lr"]) and chosen == record["chosen"]
