"""Bracket arithmetic: calls, rounds, byes, view orders, determinism."""

import math

import pytest

from distill.tournament import bracket


def simulate(n: int, k: int, seed: int = 0) -> tuple[int, int, str]:
    """Play a knockout where the lexicographically smallest id always wins."""
    alive = [f"c{i:05d}" for i in range(n)]
    calls = rounds = 0
    while len(alive) > 1:
        plan = bracket.plan_round(alive, k, bracket.round_seed(seed, rounds))
        assert all(2 <= len(m) <= k for m in plan.matches)
        assert all(len(m) == k for m in plan.matches[:-1]) or len(plan.matches) == 1
        seen = [c for m in plan.matches for c in m] + list(plan.byes)
        assert sorted(seen) == sorted(alive), "every survivor plays or has a bye, once"
        assert len(plan.byes) < k
        calls += len(plan.matches)
        alive = list(plan.byes) + [min(m) for m in plan.matches]
        rounds += 1
    return calls, rounds, alive[0] if alive else ""


@pytest.mark.parametrize("k", [2, 3, 4, 5, 8])
def test_calls_are_ceil_n_minus_1_over_k_minus_1_and_rounds_match(k: int) -> None:
    for n in list(range(1, 200)) + [1000, 4096]:
        calls, rounds, winner = simulate(n, k)
        assert calls == math.ceil((n - 1) / (k - 1)) == bracket.teacher_calls(n, k)
        assert rounds == bracket.n_rounds(n, k)
        assert sum(bracket.matches_per_round(n, k)) == calls
        assert winner == "c00000", "the best candidate always wins a consistent judge's knockout"


def test_paper_numbers() -> None:
    assert bracket.teacher_calls(4096, 2) == 4095
    assert bracket.n_rounds(4096, 2) == 12
    assert bracket.teacher_calls(4096, 5) == 1024
    assert bracket.teacher_calls(4096, 5, n_views=2) == 2048


def test_byes_for_odd_counts_at_k2() -> None:
    plan = bracket.plan_round([f"c{i}" for i in range(7)], 2, seed=1)
    assert len(plan.matches) == 3 and len(plan.byes) == 1


def test_final_is_one_match_of_at_most_k() -> None:
    plan = bracket.plan_round(["a", "b", "c"], 5, seed=0)
    assert plan.byes == () and sorted(plan.matches[0]) == ["a", "b", "c"]
    assert bracket.plan_round(["a"], 5, seed=0).matches == ()


def test_shuffle_is_seeded() -> None:
    ids = [f"c{i}" for i in range(50)]
    assert bracket.plan_round(ids, 4, 7) == bracket.plan_round(ids, 4, 7)
    assert bracket.plan_round(ids, 4, 7) != bracket.plan_round(ids, 4, 8)
    assert bracket.round_seed(3, 0) != bracket.round_seed(3, 1)


def test_k_below_2_is_refused() -> None:
    with pytest.raises(ValueError):
        bracket.plan_round(["a", "b"], 1, 0)


@pytest.mark.parametrize("k", [2, 5, 8])
def test_view_orders_balance_positions(k: int) -> None:
    orders = bracket.view_orders(k, k, seed=0)
    assert orders[0] == list(range(k))
    for pos in range(k):
        assert sorted(o[pos] for o in orders) == list(range(k)), "each candidate once in each position"
    two = bracket.view_orders(k, 2, seed=0)
    assert len({tuple(o) for o in two}) == 2
    many = bracket.view_orders(k, k + 3, seed=0)
    assert len(many) == k + 3 and all(sorted(o) == list(range(k)) for o in many)
