"""jobs/distill.py end to end on a small demo world: pretrain, both presets, evaluation, verdict."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from distill import storage

WORLD = ["world.name=distill-test", "world.n_products=1200", "world.n_personas=300", "world.image_size=64",
         "world.parts_per_split=1"]  # the world tests/test_distill.py builds (cached once per machine)


@pytest.mark.slow
@pytest.mark.timeout(1800)  # two Ray Train runs + three tournaments on a shared 2-core machine
def test_distill_job_runs_both_presets_and_answers_side_by_side(ray_local, tmp_path, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("distill_job_entry", Path(__file__).parents[1] / "jobs" / "distill.py")
    entry = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(entry)
    out = tmp_path / "run"
    small = ["pretrain.steps=4", "pretrain.max_items=128", "pretrain.batch_size=32", "pretrain.warmup_steps=1",
             "eval.test_personas=6", "eval.test_max_candidates=160", "eval.val_personas=4",
             "eval.val_max_candidates=96", "progress=false", f"output={out}"]
    for preset, matches in (("pad", 32), ("default", 8)):
        small += [f"{preset}.cycles=1", f"{preset}.matches_per_cycle={matches}",
                  f"{preset}.train_catalog_max_items=128", f"{preset}.train.num_workers=1"]
    entry.main(WORLD + small)

    printed = capsys.readouterr().out
    report = json.loads(storage.read_bytes(str(out / "eval" / "report.json")))
    assert [r["model"] for r in report["rows"]] == ["caption-pretrained", "teacher ceiling (titles)", "pad", "default"]
    assert all(len(r["percentiles"]) == 6 for r in report["rows"])
    sbs = report["side_by_side"]
    assert sbs["challenger"] == "default" and sbs["baseline"] == "pad"
    assert sbs["calls"] == [8, 32] and sbs["within_budget"]          # a quarter of pad's teacher calls
    assert sbs["ci95_pp"][0] <= sbs["delta_pp"] <= sbs["ci95_pp"][1]
    assert report["table"] in printed and sbs["summary"] in printed
    assert all(storage.exists(p) for p in report["plots"])
