"""Distillation job configs: presets, budgets, overrides and the config reference."""

from __future__ import annotations

from pathlib import Path

from distill.config import build_config, config_reference
from distill.cycles import best_cycle
from distill.distill_job import DistillJobConfig, default_preset, pad_preset

REPO = Path(__file__).resolve().parents[1]


def test_presets_pad_recipe_and_quarter_budget():
    pad, ours = pad_preset(), default_preset()
    assert pad.train.loss == "bt" and pad.train.init_scale == 1.0 and not pad.train.learn_scale
    assert pad.sampler.edges == [0.0, 0.7, 0.9, 0.95, 1.0] and pad.sampler.draws == [1, 1, 1, 2]
    assert pad.lr_decay == 0.95 and pad.train_towers == "image" and pad.train.grad_clip == 1.0
    budget = lambda c: c.cycles * c.matches_per_cycle * 1  # one teacher call per k-way match  # noqa: E731
    assert budget(ours) * 4 <= budget(pad)
    assert ours.train.loss == "listwise_kl" and ours.train.learn_scale


def test_overrides_and_reference():
    cfg = build_config(DistillJobConfig, "presets: [default]\n", ["default.cycles=5", "default.train.num_workers=4",
                                                                   "default.train.use_gpu=true"])
    assert cfg.presets == ["default"] and cfg.default.cycles == 5 and cfg.default.train.use_gpu
    assert cfg.pad.cycles == 3  # untouched preset keeps its defaults
    assert cfg.default.train.loss == "listwise_kl"
    assert cfg.default.matches_per_cycle == default_preset().matches_per_cycle  # override merged onto the preset
    pad = build_config(DistillJobConfig, None, ["pad.cycles=2", "pad.train.lr=0.001"]).pad
    assert pad.cycles == 2 and pad.train.lr == 0.001
    assert pad.train.loss == "bt" and not pad.replay and pad.lr_decay == 0.95 and pad.train.init_scale == 1.0
    ref = config_reference(DistillJobConfig)
    assert "`default.train.loss`" in ref and "`pad.sampler.edges`" in ref
    assert cfg.output_uri() != build_config(DistillJobConfig, None, []).output_uri()


def test_keep_best_is_the_best_validating_cycle():
    h = [{"val": {"mpr": 0.80}}, {"val": {"mpr": 0.83}}, {"val": {"mpr": 0.79}}, {"val": {"mpr": 0.83}}]
    assert best_cycle(h) == 1  # earliest of the ties
    assert best_cycle([{"val": {"mpr": 0.9}}, {"val": {"mpr": 0.7}}]) == 0  # the start can win
    assert best_cycle([{"val": None}, {"val": None}]) is None
    assert pad_preset().keep_best and default_preset().keep_best


def test_cycles_judge_under_n_views_and_vlm_recipes_use_two():
    import yaml

    from distill.cycles import CycleConfig, cycle_tournament

    t = cycle_tournament(CycleConfig(n_views=2, seed=3), 2)
    assert (t.k, t.n_views, t.seed) == (5, 2, 5)
    assert cycle_tournament(CycleConfig(), 1).n_views == 1
    for path in ["configs/vlm-tiny.yaml", "configs/vlm-qwen2.5-vl-7b.yaml", "configs/cluster/tournament-vlm.yaml"]:
        assert yaml.safe_load((REPO / path).read_text())["tournament"]["n_views"] == 2, path
    gpu = build_config(DistillJobConfig, (REPO / "configs/cluster/distill-gpu.yaml").read_text())
    assert gpu.judge.kind == "vlm" and gpu.eval.tournament.n_views == 2
    assert gpu.pad.n_views == gpu.default.n_views == 2


def test_validation_line_names_the_motif_split_and_survives_an_empty_part():
    """A cycle's log line: overall, seen-motif and held-out-motif MPR, '-' for a part with no persona."""
    from distill.cycles import _val_line

    split = {"n": 4, "mpr": 0.5, "seen_motif": {"n": 0, "mpr": None}, "heldout_motif": {"n": 4, "mpr": 0.5}}
    assert _val_line(split) == "val MPR 50.00% (seen motifs - over 0, held-out motifs 50.00% over 4)"
    assert _val_line({"n": 3, "mpr": 0.25}) == "val MPR 25.00%"
