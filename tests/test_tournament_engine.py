"""The round engine on a real local Ray, with the real text-oracle teacher."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from distill.judges import PluginJudgeConfig, RandomJudgeConfig, TextOracleConfig
from distill.metrics import percentile_rank
from distill.tournament import JudgePoolConfig, TournamentConfig, TournamentSpec, run_tournaments
from distill.tournament.store import FingerprintMismatch, RoundStore
from distill.world.truth import utility

pytestmark = pytest.mark.slow  # every test here runs rounds on a local Ray

REPO = Path(__file__).resolve().parents[1]
COLOURS = ["red", "green", "blue", "yellow", "black", "white", "pink", "orange"]
MOTIFS = ["cat", "rocket", "sunflower", "guitar", "dog", "bicycle", "coffee", "football", "tree", "fish"]
ARTICLES = ["mug", "t-shirt", "tote bag", "cap"]
PERSONAS = ["a cat lover who volunteers at an animal shelter", "an astronaut who dreams of the moon",
            "a gardener who grows sunflowers"]


def catalog(n: int = 64) -> pa.Table:
    rng = np.random.default_rng(0)
    combos = [(c, a, m) for c in COLOURS for a in ARTICLES for m in MOTIFS]
    pick = rng.choice(len(combos), n, replace=False)
    titles = [f"{combos[i][0]} {combos[i][1]} with a {combos[i][2]} print" for i in pick]
    return pa.table({"item_id": [f"p{j:03d}" for j in range(n)], "title": titles})


def specs(table: pa.Table) -> list[TournamentSpec]:
    ids = tuple(table["item_id"].to_pylist())
    return [TournamentSpec(f"t{i}", f"persona-{i}", text, ids) for i, text in enumerate(PERSONAS)]


def true_percentiles(table: pa.Table, result) -> list[float]:
    u = utility(PERSONAS, table["title"].to_pylist())
    pos = {item: j for j, item in enumerate(table["item_id"].to_pylist())}
    return [percentile_rank(u[i], pos[w]) for i, w in enumerate(result.tournaments["winner_id"].to_pylist())]


POOL = JudgePoolConfig(min_actors=1, max_actors=2, batch_size=8)


def test_noiseless_oracle_finds_the_true_best_with_minimum_calls(ray_local, tmp_path) -> None:
    table = catalog(64)
    res = run_tournaments(specs(table), table, TournamentConfig(k=8, seed=1), TextOracleConfig(), POOL,
                          str(tmp_path / "run"), progress=False)
    u = utility(PERSONAS, table["title"].to_pylist())
    best = [table["item_id"][int(np.argmax(row))].as_py() for row in u]
    assert res.tournaments["winner_id"].to_pylist() == best
    assert res.tournaments["teacher_calls"].to_pylist() == [math.ceil(63 / 7)] * 3
    assert res.tournaments["n_rounds"].to_pylist() == [2] * 3
    m = res.matches
    assert m.num_rows == 3 * 9 and len(set(m["match_key"].to_pylist())) == m.num_rows
    # the run records each round pass (what bench/tournament.py times): 3 x 8 matches, then 3 x 1
    assert [n for n, _ in res.summary.round_passes] == [24, 3] and all(t > 0 for _, t in res.summary.round_passes)
    for cands, scores, winner in zip(m["candidate_ids"].to_pylist(), m["scores"].to_pylist(), m["winner_id"].to_pylist()):
        assert len(scores) == len(cands) and abs(sum(scores) - 1) < 1e-4
        assert winner == cands[int(np.argmax(scores))]
    assert set(m["prompt_version"].to_pylist()) == {"title-cosine-v1"}
    assert m["judge_id"][0].as_py().startswith("text_oracle/")
    # eliminations: everyone but the winner lost exactly once, in a real round
    e = res.eliminations
    assert e.num_rows == 3 * 64
    assert pc.sum(pc.is_null(e["eliminated_in_round"])).as_py() == 3
    # the store says finished; a rerun pays nothing
    again = run_tournaments(specs(table), table, TournamentConfig(k=8, seed=1), TextOracleConfig(), POOL,
                            str(tmp_path / "run"), progress=False)
    assert again.summary.judged_this_attempt == 0
    assert again.tournaments.equals(res.tournaments)


def test_same_seed_same_judgements_other_seed_other_brackets(ray_local, tmp_path) -> None:
    table = catalog(64)
    judge = RandomJudgeConfig()  # seeded per view: same seed, same scores on any actor
    cols = ["match_key", "candidate_ids", "scores", "winner_id"]
    a = run_tournaments(specs(table), table, TournamentConfig(k=8, seed=3), judge, POOL, str(tmp_path / "a"), progress=False)
    b = run_tournaments(specs(table), table, TournamentConfig(k=8, seed=3), judge, POOL, str(tmp_path / "b"), progress=False)
    c = run_tournaments(specs(table), table, TournamentConfig(k=8, seed=4), judge, POOL, str(tmp_path / "c"), progress=False)
    assert a.matches.select(cols).equals(b.matches.select(cols))
    assert a.matches["candidate_ids"].to_pylist() != c.matches["candidate_ids"].to_pylist()


def test_resume_reuses_staged_matches_and_completes(ray_local, tmp_path) -> None:
    """Simulate a crash after part of round 0 was judged: the rerun judges only the rest."""
    table = catalog(64)
    out = str(tmp_path / "run")
    cfg = TournamentConfig(k=8, seed=2)
    judge = RandomJudgeConfig()
    full = run_tournaments(specs(table), table, cfg, judge, POOL, str(tmp_path / "ref"), progress=False)
    # Build the crashed state: the run opened, 10 round-0 matches staged, nothing committed.
    from distill.tournament.engine import _fingerprint

    fp, settings = _fingerprint(specs(table), cfg, judge.model_dump(mode="json"))
    store = RoundStore(out)
    store.open(fp, settings)
    round0 = full.matches.filter(pc.equal(full.matches["round"], 0))
    crashed = round0.slice(0, 10).set_column(round0.schema.get_field_index("attempt_id"), "attempt_id",
                                              pa.array(["crashed"] * 10))
    store.stage(0, 0, crashed, attempt_id="crashed")
    res = run_tournaments(specs(table), table, cfg, judge, POOL, out, progress=False)
    assert res.summary.reused_from_earlier_attempts == 10
    assert res.summary.judged_this_attempt == full.matches.num_rows - 10
    keys = res.matches["match_key"].to_pylist()
    assert sorted(keys) == sorted(full.matches["match_key"].to_pylist()), "no match lost, none twice"
    assert res.matches["attempt_id"].to_pylist().count("crashed") == 10
    assert res.tournaments["winner_id"].equals(full.tournaments["winner_id"])


def test_a_judge_actor_dying_mid_round_still_completes(ray_local, tmp_path) -> None:
    table = catalog(64)
    marker = tmp_path / "die-once"
    marker.write_text("x")
    judge = PluginJudgeConfig(target="tests.plugin_judges:CrashOnceJudge", options={"marker": str(marker)})
    pool = JudgePoolConfig(min_actors=1, max_actors=1, batch_size=4, env_vars={"PYTHONPATH": str(REPO)})
    cfg = TournamentConfig(k=8, seed=0)
    res = run_tournaments(specs(table), table, cfg, judge, pool, str(tmp_path / "run"), progress=False)
    assert not marker.exists(), "an actor really died"
    keys = res.matches["match_key"].to_pylist()
    assert len(keys) == len(set(keys)) == 3 * math.ceil(63 / 7)
    assert res.summary.failed_matches == 0
    # the judgements equal an undisturbed run's: the replacement actor re-judged the lost batch
    # same judge config, marker now gone: nobody dies
    calm = run_tournaments(specs(table), table, cfg, judge, pool, str(tmp_path / "calm"), progress=False)
    cols = ["match_key", "scores", "winner_id"]
    assert res.matches.select(cols).sort_by("match_key").equals(calm.matches.select(cols).sort_by("match_key"))


def test_a_failed_match_is_recorded_and_its_bracket_goes_on(ray_local, tmp_path) -> None:
    """A judge that cannot score a match (a VLM given an undecodable photo) fails that match only:
    the row keeps the reason and no scores, a seeded candidate advances, every other match is
    scored, and the scored views' label mass reaches the match rows and the run summary."""
    table = catalog(16)
    judge = PluginJudgeConfig(target="tests.plugin_judges:FailsOnItemJudge", options={"item_id": "p005"})
    pool = JudgePoolConfig(min_actors=1, max_actors=1, batch_size=8, env_vars={"PYTHONPATH": str(REPO)})
    res = run_tournaments(specs(table)[:2], table, TournamentConfig(k=4, seed=0), judge, pool,
                          str(tmp_path / "run"), progress=False)
    m = res.matches
    keys = m["match_key"].to_pylist()
    assert len(keys) == len(set(keys)) == 2 * 5  # ceil(15 / 3) matches per persona, each once
    failed = 0
    for cands, scores, err, mass in zip(m["candidate_ids"].to_pylist(), m["scores"].to_pylist(),
                                        m["error"].to_pylist(), m["view_label_mass"].to_pylist()):
        if "p005" in cands:
            failed += 1
            assert scores is None and mass is None and err == "candidate p005: unreadable image"
        else:
            assert err is None and len(scores) == len(cands) and abs(sum(scores) - 1) < 1e-4
            assert mass == [pytest.approx(0.75)]
    assert failed >= 2 and res.summary.failed_matches == failed  # p005 plays its first match in both brackets
    assert res.summary.label_mass["views_with_mass"] == len(keys) - failed
    assert len(res.tournaments["winner_id"].to_pylist()) == 2


def test_debiasing_counters_position_bias(ray_local, tmp_path) -> None:
    table = catalog(64)
    biased = TextOracleConfig(position_bias=0.15)
    one = run_tournaments(specs(table), table, TournamentConfig(k=8, seed=5), biased, POOL, str(tmp_path / "one"), progress=False)
    five = run_tournaments(specs(table), table, TournamentConfig(k=8, seed=5, n_views=8), biased, POOL, str(tmp_path / "five"), progress=False)
    assert five.summary.teacher_calls == 8 * one.summary.teacher_calls
    assert five.summary.winner_changed_by_debiasing > 0.05
    assert len(five.matches["view_orders"][0].as_py()) == 8
    assert np.mean(true_percentiles(table, five)) >= np.mean(true_percentiles(table, one))
    assert min(true_percentiles(table, five)) > 0.95


def test_temperature_sampling_stays_near_the_best(ray_local, tmp_path) -> None:
    table = catalog(64)
    res = run_tournaments(specs(table), table, TournamentConfig(k=8, seed=6, winner_rule="sample"),
                          TextOracleConfig(temperature=0.01), POOL, str(tmp_path / "run"), progress=False)
    # stated tolerance: sampling winners at T=0.01 lands, on average, in the catalog's top 10%
    pct = true_percentiles(table, res)
    assert np.mean(pct) >= 0.90, pct


def test_bad_inputs_are_refused_clearly(tmp_path) -> None:
    table = catalog(10)
    ids = tuple(table["item_id"].to_pylist())
    run = lambda s: run_tournaments(s, table, TournamentConfig(), TextOracleConfig(), POOL, str(tmp_path / "x"), progress=False)  # noqa: E731
    with pytest.raises(ValueError, match="not in the catalog"):
        run([TournamentSpec("t", "p", "x", ids + ("nope",))])
    with pytest.raises(ValueError, match="unique"):
        run([TournamentSpec("t", "p", "x", ids), TournamentSpec("t", "q", "y", ids)])
    with pytest.raises(ValueError, match="duplicate candidate"):
        run([TournamentSpec("t", "p", "x", ids + ids[:1])])


def test_output_with_other_settings_is_refused(ray_local, tmp_path) -> None:
    table = catalog(12)
    out = str(tmp_path / "run")
    judge = RandomJudgeConfig()
    run_tournaments(specs(table), table, TournamentConfig(k=4), judge, POOL, out, progress=False)
    with pytest.raises(FingerprintMismatch, match="k"):
        run_tournaments(specs(table), table, TournamentConfig(k=3), judge, POOL, out, progress=False)
    res = run_tournaments(specs(table), table, TournamentConfig(k=3), judge, POOL, out,
                          overwrite=True, progress=False)
    assert res.summary.k == 3


def test_a_judge_asking_for_a_column_candidates_lack_is_refused_clearly() -> None:
    from distill.tournament.worker import JudgeWorker

    judge = PluginJudgeConfig(target="tests.plugin_judges:PriceJudge").model_dump(mode="json")
    with pytest.raises(ValueError, match=r"payload column\(s\) \['price'\]"):
        JudgeWorker(judge, "argmax", "attempt")
