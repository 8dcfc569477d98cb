"""Evaluation metrics and the report table / plots."""

from __future__ import annotations

import numpy as np
import pytest

from distill.evaluate import EvalSet, evaluate_scores, format_table, plot_report, winner_metrics


def test_winner_metrics_hand_computed():
    scores = np.array([[0.9, 0.1, 0.5, 0.3],    # target 0: rank 1, 3 below -> .75
                       [0.9, 0.1, 0.5, 0.3]])   # target 3: rank 3, 1 below -> .25
    m = winner_metrics(scores, [0, 3], ks=(1, 3))
    assert m["mpr"] == pytest.approx(0.5) and m["median_percentile"] == pytest.approx(0.5)
    assert m["hit@1"] == 0.5 and m["hit@3"] == 1.0 and m["n"] == 2
    assert winner_metrics(scores[:0], [])["mpr"] is None


def test_evaluate_scores_splits_and_table(tmp_path):
    es = EvalSet(persona_ids=["a", "b"], persona_texts=["x", "y"], item_ids=["i0", "i1", "i2"], images=[],
                 titles=["t0", "t1", "t2"], winners=[0, 2], heldout=np.array([False, False, True]), true_best=[0, 1])
    scores = np.array([[3.0, 2.0, 1.0], [3.0, 2.0, 1.0]])
    row = evaluate_scores("m", scores, es)
    assert row["seen_motif"]["mpr"] == pytest.approx(2 / 3) and row["heldout_motif"]["mpr"] == pytest.approx(0.0)
    assert row["true_best"]["mpr"] == pytest.approx(0.5)
    assert "m" in format_table([row | {"teacher_calls": 7}])
    pytest.importorskip("matplotlib")
    paths = plot_report([row], {"m": [0.5, 0.6]}, str(tmp_path))
    assert all((tmp_path / p.split("/")[-1]).stat().st_size > 1000 for p in paths)
