"""jobs/sweep.py then jobs/distill.py end to end on a small demo world, into one output as users run
them: the recorded validation sweep; then pretrain (the sweep's, reused), two arms under two seeds
each with the sweep's choice applied, the student ceiling, a validation-only report, and the final
read of the lockbox."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from distill import storage
from distill.sweep import point_name

WORLD = ["world.name=distill-test", "world.n_products=1200", "world.n_personas=300", "world.image_size=64",
         "world.parts_per_split=1"]  # the world tests/test_distill.py builds (cached once per machine)


def _entry(script: str):
    import importlib.util

    path = Path(__file__).parents[1] / "jobs" / f"{script}.py"
    spec = importlib.util.spec_from_file_location(f"{script}_entry", path)
    entry = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(entry)
    return entry


@pytest.mark.slow
@pytest.mark.timeout(2400)  # eight Ray Train runs + three tournaments on a shared 2-core machine
def test_sweep_then_distill_job_reports_on_validation_then_opens_the_lockbox_once(ray_local, tmp_path, capsys):
    out = tmp_path / "runs" / "distill-small"
    small = ["pretrain.steps=4", "pretrain.max_items=128", "pretrain.batch_size=32", "pretrain.warmup_steps=1",
             "eval.test_personas=6", "eval.test_max_candidates=160", "eval.val_personas=4",
             "eval.val_max_candidates=96", "progress=false", f"output={out}", "presets=[pad, default]",
             "seeds=2", "seed=11"]
    for preset, matches in (("pad", 32), ("default", 8), ("ceiling", 48)):
        small += [f"{preset}.cycles=1", f"{preset}.matches_per_cycle={matches}",
                  f"{preset}.train_catalog_max_items=128", f"{preset}.train.num_workers=1"]

    # 0. the sweep: the default's learning rate on a recorded grid, validation only
    record = _entry("sweep").main(WORLD + small + ["sweep.presets=[default]", "sweep.lr_factors=[1.0, 3.0]",
                                                   "sweep.knob=train.epochs", "sweep.knob_values=[1]"])
    printed = capsys.readouterr().out
    assert record["runs_per_preset"] == {"default": 2} and len(record["rows"]) == 2
    assert len({r["changes"] for r in record["rows"]}) == 2
    saved = json.loads((out / "sweep" / "sweep.json").read_text())
    assert saved["chosen"] == record["chosen"] and pq.read_table(out / "sweep" / "sweep.parquet").num_rows == 2
    best = max(record["rows"], key=lambda r: r["val_mpr"])
    assert record["chosen"]["default"] == json.loads(best["changes"]) and "<- chosen" in printed
    assert not (out / "eval" / "test-tournaments").exists()  # validation only
    pretrained = sorted(p.stat().st_mtime for p in (out / "pretrained").rglob("*") if p.is_file())
    assert pretrained, "the sweep pretrained the start under the run output"
    assert saved["start_checkpoint_id"] == json.loads((out / "pretrained" / "student.json").read_text())["checkpoint_id"]

    entry = _entry("distill")
    # 1. the default: validation only; the test split is not read and the lockbox not opened
    val_report = entry.main(WORLD + small)
    printed = capsys.readouterr().out
    assert val_report["split"] == "val" and val_report["lockbox"] is None
    assert val_report["tuned"] == record["chosen"]  # the sweep's choice is applied
    assert sorted(p.stat().st_mtime for p in (out / "pretrained").rglob("*") if p.is_file()) == pretrained
    assert not (out / "eval" / "test-tournaments").exists() and not (tmp_path / "runs" / "lockbox").exists()
    assert (out / "eval" / "report-val.json").exists() and not (out / "eval" / "report.json").exists()
    assert "validation only" in printed
    seeds = val_report["seeds"]
    assert seeds[0] == 11 and len(seeds) == 2
    for arm, s in (("pad", seeds[0]), ("pad", seeds[1]), ("default", seeds[1])):
        assert (out / "presets" / arm / f"seed-{s}" / "cycle-001" / "done.json").exists()
    # the tuned default at the sweep's seed is the sweep's run of the chosen point: resumed, not trained again
    swept = out / "sweep" / "default" / point_name(record["chosen"]["default"]) / f"seed-{seeds[0]}"
    assert (swept / "cycle-001" / "done.json").exists() and not (out / "presets" / "default" / f"seed-{seeds[0]}").exists()
    kept = val_report["checkpoints"]["default"][0]
    assert kept.startswith(str(swept)) or kept.rstrip("/").endswith("pretrained")  # keep_best may keep the start
    # the sweep's two runs, two arms x two seeds and the ceiling start from one student: each train
    # subsample (one per seed, and the ceiling's own) was embedded once into the shared cache
    cached = [p for p in (out / "train-embeddings").iterdir() if p.is_dir()]
    assert len(cached) == len(seeds) + 1 and not list((out / "presets").rglob("cycle-*/embeddings"))
    done = out / "presets" / "default" / f"seed-{seeds[1]}" / "cycle-001" / "done.json"
    trained_at = done.stat().st_mtime

    # 2. the final read: the same runs (nothing retrained), evaluated once on the lockbox
    report = entry.main(WORLD + small + ["eval.final=true"])
    printed = capsys.readouterr().out
    assert done.stat().st_mtime == trained_at
    assert report["split"] == "test" and (out / "eval" / "test-tournaments").exists()
    lockbox = report["lockbox"]
    assert lockbox["opened"] == 1 and lockbox["opened_by_this_run"] == 1
    assert Path(lockbox["path"]).parent == tmp_path / "runs" / "lockbox"
    assert "LOCKBOX (test split): opened 1 time(s)" in printed
    names = [r["model"] for r in report["rows"]]
    assert names == ["caption-pretrained", "teacher ceiling (titles)", "student ceiling", "pad", "default"]
    assert all(len(r["percentiles"]) == 6 for r in report["rows"])
    by = {r["model"]: r for r in report["rows"]}
    for arm in ("pad", "default"):
        assert by[arm]["seeds"] == 2 and len(by[arm]["seed_percentiles"]) == 2
        assert by[arm]["to_perfect_pp"] == pytest.approx(100 * (1 - by[arm]["mpr"]))
        gap = by["student ceiling"]["mpr"] - by["caption-pretrained"]["mpr"]
        if gap <= 0:  # a tiny ceiling budget may not beat the start: the report says so instead
            assert "student_ceiling_gap_closed" not in by[arm] and "not above the start" in printed
        else:
            assert by[arm]["student_ceiling_gap_closed"] == pytest.approx(
                (by[arm]["mpr"] - by["caption-pretrained"]["mpr"]) / gap)
            assert f"{arm}: closes" in printed and "student-ceiling gap" in printed
    sbs = report["side_by_side"]
    assert sbs["challenger"] == "default" and sbs["baseline"] == "pad" and sbs["seeds"] == [2, 2]
    assert sbs["calls"] == [8, 32] and sbs["within_budget"]          # a quarter of pad's teacher calls
    assert sbs["ci95_pp"][0] <= sbs["delta_pp"] <= sbs["ci95_pp"][1]
    assert "interval over seeds and personas" in sbs["summary"] and sbs["summary"] in printed
    assert "text oracle's own title similarity" in report["reference"]
    assert report["table"] in printed
    saved = json.loads((out / "eval" / "report.json").read_text())
    assert saved["lockbox"]["opened"] == 1 and saved["split"] == "test"
    assert all(storage.exists(p) for p in report["plots"])
