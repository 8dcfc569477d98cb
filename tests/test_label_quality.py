"""Label mass in match rows: summarised for reports, low-mass views kept out of training labels."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from distill.label_quality import mass_summary, training_labels
from distill.schemas import MATCH_SCHEMA, conform
from distill.train import examples_table


def _matches(rows: list[dict]) -> pa.Table:
    base = dict(tournament_id="t", persona_id="p", round=0, teacher_calls=1, judge_id="j", prompt_version="v",
                error=None, attempt_id="a", winner_id="x")
    out = []
    for n, r in enumerate(rows):
        k = len(r["view_scores"][0])
        cands = [f"i{n}-{c}" for c in range(k)]
        agg = np.zeros(k)
        for o, s in zip(r["view_orders"], r["view_scores"]):
            agg[np.asarray(o)] += s
        out.append({**base, "match_key": f"m{n}", "match_index": n, "candidate_ids": cands,
                    "scores": (agg / len(r["view_orders"])).tolist(), **r})
    return conform(pa.Table.from_pylist(out), MATCH_SCHEMA)


def test_low_mass_views_are_flagged_and_left_out_of_training_labels():
    m = _matches([
        # two views, rotated; the second put only 10 % of the model's probability on the labels
        {"view_orders": [[0, 1, 2], [1, 2, 0]], "view_scores": [[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]],
         "view_label_mass": [0.9, 0.1]},
        # both views weak: no training label at all
        {"view_orders": [[0, 1], [1, 0]], "view_scores": [[0.6, 0.4], [0.5, 0.5]], "view_label_mass": [0.2, 0.3]},
        # a judge without masses (the text oracle): taken as it is
        {"view_orders": [[0, 1]], "view_scores": [[0.9, 0.1]], "view_label_mass": None},
    ])
    s = mass_summary(m, min_label_mass=0.5)
    assert (s.views, s.views_with_mass, s.flagged_views, s.matches_without_training_label) == (5, 4, 3, 1)
    assert s.mean == pytest.approx(0.375) and s.min == pytest.approx(0.1)
    out = training_labels(m, 0.5)
    scores = out["scores"].to_pylist()
    np.testing.assert_allclose(scores[0], [0.7, 0.2, 0.1], atol=1e-6)  # the first view alone
    assert scores[1] is None
    np.testing.assert_allclose(scores[2], [0.9, 0.1], atol=1e-6)
    # the record itself is untouched: every view's mass and scores stay in the match row
    assert out["view_label_mass"].to_pylist() == m["view_label_mass"].to_pylist()
    images = {c: b"png" for cands in m["candidate_ids"].to_pylist() for c in cands}
    assert examples_table(out, {"p": "a persona"}, images).num_rows == 2  # the weak match is not trained on
    assert examples_table(m, {"p": "a persona"}, images).num_rows == 3
    # threshold 0 keeps everything; a summary with no masses says so
    assert training_labels(m, 0.0) is m
    assert mass_summary(m.slice(2), 0.5).mean is None


def test_match_rows_carry_a_label_mass_per_view():
    assert MATCH_SCHEMA.field("view_label_mass").type == pa.list_(pa.float32())
    from distill.schemas import MatchRecord

    row = _matches([{"view_orders": [[0, 1]], "view_scores": [[0.5, 0.5]], "view_label_mass": [0.25]}]).to_pylist()[0]
    assert MatchRecord(**row).view_label_mass == [0.25]
