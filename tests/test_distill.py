"""Distillation cycles on a small demo world: judge, train, the student fits its labels and validation is recorded; reruns reuse judgements."""

from __future__ import annotations

import pytest

from distill import storage
from distill.cycles import CycleConfig, run_cycles
from distill.eval_sets import build_eval_set
from distill.judges.config import TextOracleConfig
from distill.student import StudentConfig, build_student
from distill.tournament import JudgePoolConfig, TournamentConfig
from distill.train import TrainConfig
from distill.world import WorldConfig, ensure_world


@pytest.mark.slow
@pytest.mark.timeout(1800)  # Ray Train start-up x runs, on shared 2-core machines
def test_cycle_fits_its_labels_and_reruns_free(ray_local, tmp_path):
    import torch

    root = ensure_world(WorldConfig(name="distill-test", n_products=1200, n_personas=300, image_size=64,
                                    parts_per_split=1), progress=False)
    torch.manual_seed(0)
    start = build_student(StudentConfig())  # untrained image tower, frozen MiniLM text tower
    start_uri = str(tmp_path / "start")
    start.save(start_uri)
    judge, pool = TextOracleConfig(), JudgePoolConfig(min_actors=1, max_actors=1)
    val = build_eval_set(root, "val", "val", 12, None, judge, pool, TournamentConfig(k=5),
                         str(tmp_path / "val"), demo=True, progress=False)
    cfg = CycleConfig(cycles=1, matches_per_cycle=96, train_catalog_max_items=None, n_views=2,
                      train=TrainConfig(num_workers=1, epochs=3, batch_size=32, lr=1e-3, seed=0))
    out = str(tmp_path / "run")
    res = run_cycles(cfg, root, start_uri, out, judge, pool, val=val, progress=False)
    assert res.teacher_calls == 2 * 96  # each match judged under two rotated orders
    matches = storage.read_table(storage.join(out, "cycle-001", "matches.parquet"))
    assert all(len(o) == 2 and o[1] != o[0] and sorted(o[1]) == o[0] for o in matches["view_orders"].to_pylist())
    assert res.history[-1]["label_quality"]["views"] == 2 * 96
    # a rerun finds the finished cycle: no teacher call, no training
    again = run_cycles(cfg, root, start_uri, out, judge, pool, val=val, progress=False)
    assert again.checkpoint == res.checkpoint and again.teacher_calls == 2 * 96
    # spreading the work differently resumes; another recipe or start is refused, not mixed in
    wider = cfg.model_copy(update={"train": cfg.train.model_copy(update={"num_workers": 2})})
    assert run_cycles(wider, root, start_uri, out, judge, pool, val=val, progress=False).checkpoint == res.checkpoint
    other = cfg.model_copy(update={"train": cfg.train.model_copy(update={"lr": 1e-4})})
    with pytest.raises(ValueError, match=r"another recipe \(differs in \['train'\]\)"):
        run_cycles(other, root, start_uri, out, judge, pool, val=val, progress=False)
    trained = res.history[-1]["checkpoint"]  # cycle 1's weights (the result may be the start, if it validated best)
    with pytest.raises(ValueError, match="started from another checkpoint"):
        run_cycles(cfg, root, trained, out, judge, pool, val=val, progress=False)
    assert storage.exists(storage.join(out, "cycle-001", "judge"))
    # The learning check: the cycle teaches the student what its labels show. On its own training
    # matches the trained student picks the teacher's winner far more often than the start did.
    # With 96 matches x 2 views and 3 epochs it went 0.08 -> 0.58 (192 x 6 epochs: 0.12 -> 0.85, in
    # 1.7x the time). Validation MPR is recorded above but not asserted: from an untrained image
    # tower, a cycle this small fits its labels without moving 12 validation personas reliably (on
    # world v2 192 matches went 0.564 -> 0.480, on world v1 +8 points). Generalisation is measured
    # by the experiment, docs/experiments.md, not by this test.
    agree_start, agree_after = (train_match_agreement(ckpt, root, matches) for ckpt in (start_uri, trained))
    assert agree_after > agree_start + 0.3, (agree_start, agree_after)
    assert {"seen_motif", "heldout_motif"} <= set(res.history[-1]["val"])


def train_match_agreement(checkpoint: str, root: str, matches) -> float:
    """Share of judged matches where the student's top candidate is the teacher's winner."""
    import numpy as np

    from distill import datasets
    from distill.student import Student

    rows = matches.to_pylist()
    ids = sorted({i for r in rows for i in r["candidate_ids"]})
    items = datasets.read_catalog_items(root, ids, ["item_id", "image"])
    personas = datasets.read_personas(root)
    text = dict(zip(personas["persona_id"].to_pylist(), personas["text"].to_pylist()))
    student = Student.load(checkpoint)
    emb = dict(zip(items["item_id"].to_pylist(), student.encode_images(items["image"].to_pylist())))
    queries = student.encode_texts([text[r["persona_id"]] for r in rows])
    picks = [r["candidate_ids"][int(np.argmax([emb[i] @ q for i in r["candidate_ids"]]))] for r, q in zip(rows, queries)]
    return float(np.mean([p == r["winner_id"] for p, r in zip(picks, rows)]))
