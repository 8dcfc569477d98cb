"""The experiment protocol's machinery, without training: lockbox counting, arms, seeds, the sweep grid."""

from __future__ import annotations

import json

import pytest

from distill import storage
from distill.config import build_config
from distill.distill_job import ARMS, DistillJobConfig, arm_config, replicate_seeds, seeded
from distill.lockbox import open_lockbox, read_record, record_path, setting_key
from distill.sweep import SweepConfig, apply_choice, choose, grid, point_name, set_dotted


def test_lockbox_counts_every_opening_of_a_setting_beside_the_runs(tmp_path):
    setting = DistillJobConfig().lockbox_setting()
    run_a, run_b = str(tmp_path / "runs" / "distill-a"), str(tmp_path / "runs" / "distill-b")
    first = open_lockbox(run_a, setting)
    assert (first.opened, first.opened_by_this_run) == (1, 1)
    assert first.path == record_path(run_a, setting_key(setting)) == str(tmp_path / "runs" / "lockbox" / f"{first.key}.json")
    # another recipe's run on the same test set shares the count: that is the point
    second = open_lockbox(run_b, setting, run={"arms": ["default"]})
    assert (second.opened, second.opened_by_this_run) == (2, 1)
    again = open_lockbox(run_a, setting)
    assert (again.opened, again.opened_by_this_run) == (3, 2)
    assert [o.output for o in read_record(run_a, setting).openings] == [run_a, run_b, run_a]
    # another test set (another teacher, another sample) is another lockbox
    other = DistillJobConfig(eval={"test_personas": 10}).lockbox_setting()
    assert setting_key(other) != setting_key(setting) and open_lockbox(run_a, other).opened == 1
    assert json.loads((tmp_path / "runs" / "lockbox" / f"{first.key}.json").read_text())["setting"] == setting


def test_the_final_read_is_the_same_run_and_never_a_default():
    cfg = DistillJobConfig()
    assert cfg.eval.final is False  # reports on validation unless asked
    final = build_config(DistillJobConfig, None, ["eval.final=true"])
    assert final.eval.final and final.output_uri() == cfg.output_uri()  # reading mode, not identity
    assert build_config(DistillJobConfig, None, ["seeds=5"]).output_uri() != cfg.output_uri()


def test_arms_separate_the_effects():
    cfg = DistillJobConfig()
    pad, default = cfg.pad, cfg.default
    assert list(cfg.presets) == list(ARMS)
    at_budget = arm_config("default@pad-budget", pad, default)
    assert (at_budget.matches_per_cycle, at_budget.cycles) == (pad.matches_per_cycle, pad.cycles)
    assert at_budget.train == default.train  # only the budget moved
    pad_loss = arm_config("pad-loss@default", pad, default)
    assert (pad_loss.train.loss, pad_loss.train.init_scale, pad_loss.train.learn_scale) == ("bt", 1.0, False)
    assert pad_loss.train.lr == default.train.lr and pad_loss.matches_per_cycle == default.matches_per_cycle
    assert arm_config("pad", pad, default) is pad and arm_config("default", pad, default) is default
    with pytest.raises(ValueError, match="unknown arm"):
        arm_config("nope", pad, default)
    with pytest.raises(SystemExit, match="listed twice"):
        build_config(DistillJobConfig, None, ["presets=[pad, pad]"])


def test_seeds_derive_from_one_override():
    assert replicate_seeds(7, 3)[0] == 7 and len(set(replicate_seeds(7, 3))) == 3
    assert replicate_seeds(7, 3) == replicate_seeds(7, 3) != replicate_seeds(8, 3)
    assert replicate_seeds(7, 2) == replicate_seeds(7, 3)[:2]  # more seeds extend, never reshuffle
    s = seeded(DistillJobConfig().default, 12345)
    assert s.seed == s.train.seed == 12345
    assert DistillJobConfig().seeds >= 3


def test_sweep_grid_is_identical_for_every_preset_and_recorded_choice_applies():
    cfg = DistillJobConfig()
    sw = SweepConfig(lr_factors=[0.5, 2.0], knob="train.epochs", knob_values=[1, 2])
    pad_grid, default_grid = grid(sw, cfg.pad), grid(sw, cfg.default)
    assert len(pad_grid) == len(default_grid) == 4
    assert [set(p) for p in pad_grid] == [set(p) for p in default_grid] == [{"train.lr", "train.epochs"}] * 4
    assert [p["train.lr"] for p in pad_grid] == pytest.approx([cfg.pad.train.lr * f for f in (0.5, 0.5, 2.0, 2.0)])
    rows = [{"preset": "pad", "grid_index": i, "point": point_name(p), "changes": json.dumps(p), "val_mpr": m}
            for i, (p, m) in enumerate(zip(pad_grid, [0.70, 0.72, 0.71, 0.69]))]
    rows += [{"preset": "default", "grid_index": i, "point": point_name(p), "changes": json.dumps(p), "val_mpr": m}
             for i, (p, m) in enumerate(zip(default_grid, [0.70, 0.70, 0.75, 0.74]))
             for _ in range(2)]  # two seeds per point: the mean decides
    chosen = choose(rows)
    assert chosen["pad"] == pad_grid[1] and chosen["default"] == default_grid[2]
    tuned = apply_choice(cfg.default, chosen["default"])
    assert tuned.train.lr == pytest.approx(2 * cfg.default.train.lr) and tuned.train.epochs == 1
    assert tuned.train.loss == cfg.default.train.loss  # nothing else moved
    with pytest.raises(ValueError, match="no field"):
        set_dotted(cfg.pad, {"train.nope": 1})
    with pytest.raises(ValueError, match="not a section"):
        set_dotted(cfg.pad, {"nope.lr": 1})


def test_tuned_presets_come_from_the_sweep_record(tmp_path):
    from distill.distill_job import tuned_presets
    from distill.sweep import sweep_path

    cfg = DistillJobConfig(output=str(tmp_path / "run"))
    assert tuned_presets(cfg)[2] is None  # no sweep yet: the presets as configured
    storage.write_json_atomic({"chosen": {"pad": {"train.lr": 3e-5, "train.epochs": 2}}}, sweep_path(cfg.output_uri()))
    pad, default, record = tuned_presets(cfg)
    assert pad.train.lr == 3e-5 and pad.train.epochs == 2 and default == cfg.default and "pad" in record["chosen"]
    off = cfg.model_copy(update={"tuned": False})
    assert tuned_presets(off)[0] == cfg.pad


def test_a_sweep_record_tuned_from_another_start_is_refused(tmp_path):
    """The record names the start it was tuned from; a run from another start stops with one line
    naming the record (a record without the id, from before it was kept, is taken as it is)."""
    from distill.distill_job import tuned_presets
    from distill.errors import DataError
    from distill.student import Student, StudentConfig, build_student
    from distill.sweep import sweep_path

    cfg = DistillJobConfig(output=str(tmp_path / "run"))
    start = str(tmp_path / "start")
    build_student(StudentConfig(arch="tiny-test")).save(start)
    own = Student.load(start).checkpoint_id
    chosen = {"pad": {"train.lr": 3e-5}}
    storage.write_json_atomic({"chosen": chosen, "start_checkpoint_id": own}, sweep_path(cfg.output_uri()))
    assert tuned_presets(cfg, start)[0].train.lr == 3e-5
    storage.write_json_atomic({"chosen": chosen, "start_checkpoint_id": "f" * 64}, sweep_path(cfg.output_uri()))
    with pytest.raises(DataError, match=r"sweep\.json: the sweep was tuned from start checkpoint ffffffffffff"):
        tuned_presets(cfg, start)
    assert tuned_presets(cfg)[0].train.lr == 3e-5  # no start given: not checked
    storage.write_json_atomic({"chosen": chosen}, sweep_path(cfg.output_uri()))
    assert tuned_presets(cfg, start)[0].train.lr == 3e-5


def test_the_report_says_what_its_reference_is():
    from distill.distill_job import reference_note

    oracle = reference_note(DistillJobConfig(), student_ceiling=True)
    assert "student ceiling" in oracle and "text oracle's own title similarity" in oracle
    other = reference_note(build_config(DistillJobConfig, None, ["judge.kind=random"]), student_ceiling=True)
    assert "teacher ceiling" not in other and "no whole-catalog ranking" in other and "random" in other


def test_a_tuned_arm_at_a_sweep_seed_resumes_the_sweeps_run(tmp_path):
    """The tuned preset under a seed the sweep trained is the sweep's run of the chosen point (same
    recipe, start and seed); other seeds, other arms and a record whose runs are elsewhere train anew.
    The record is read back from its JSON, which sorts the chosen changes' keys."""
    from distill.distill_job import arm_output
    from distill.sweep import read_sweep, run_dir, sweep_path

    out = str(tmp_path / "run")
    point = {"train.lr": 3e-4, "train.epochs": 1}  # the grid's order: lr first
    rows = [{"preset": "default", "grid_index": 0, "point": point_name(point), "changes": json.dumps(point),
             "seed": 0, "val_mpr": 0.8}]
    storage.write_json_atomic({"chosen": {"default": point}, "seeds": [0], "rows": rows}, sweep_path(out))
    record = read_sweep(out)
    assert list(record["chosen"]["default"]) == ["train.epochs", "train.lr"]  # sorted on the way
    swept = run_dir(out, "default", point_name(point), 0)
    assert swept.endswith("sweep/default/train.lr=0.0003,train.epochs=1/seed-0")
    fresh = storage.join(out, "presets", "default", "seed-0")
    assert arm_output(out, "default", 0, record) == fresh  # the sweep's runs are not in this output
    storage.write_json_atomic({"cycle": 0}, storage.join(swept, "start.json"))
    assert arm_output(out, "default", 0, record) == swept
    assert arm_output(out, "default", 7, record) == storage.join(out, "presets", "default", "seed-7")
    assert arm_output(out, "pad", 0, record) == storage.join(out, "presets", "pad", "seed-0")
    assert arm_output(out, "default@pad-budget", 0, record).endswith("presets/default@pad-budget/seed-0")
    assert arm_output(out, "default", 0, None) == fresh
