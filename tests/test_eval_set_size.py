"""An evaluation set too small to separate models says so (distill.metrics.eval_set_size)."""

from __future__ import annotations

import numpy as np

from distill.metrics import HIT_KS
from distill.metrics import eval_set_size, percentile_rank


def test_five_items_and_five_personas_are_flagged_with_reasons() -> None:
    size = eval_set_size(5, 5, HIT_KS)
    assert size["too_small"] and size["step_pp"] == 20.0
    assert "5 catalog items" in size["warning"] and "hit@5,20,100 are 1.0 by construction" in size["warning"]
    assert "5 personas" in size["warning"] and "need >= 33 personas" in size["warning"]


def test_the_thresholds_sit_where_the_docstring_puts_them() -> None:
    assert not eval_set_size(33, 100, HIT_KS)["too_small"]
    assert eval_set_size(32, 100, HIT_KS)["too_small"]      # +-10.0x pp at chance
    assert eval_set_size(33, 99, HIT_KS)["too_small"]       # steps of 1.01 pp
    assert not eval_set_size(240, 4096, HIT_KS)["too_small"]  # the demo's test set


def test_the_chance_half_width_is_what_random_scorers_show() -> None:
    """The +-pp the check quotes is the spread of MPR that random scores really produce."""
    rng = np.random.default_rng(0)
    n_personas, n_items = 20, 500
    mprs = [np.mean([percentile_rank(rng.random(n_items), 0) for _ in range(n_personas)]) for _ in range(400)]
    half = 100 * 1.96 * np.std(mprs)
    assert abs(half - eval_set_size(n_personas, n_items)["chance_ci95_pp"]) < 1.5
