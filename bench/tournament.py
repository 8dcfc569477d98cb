"""Tournament benchmark: engine throughput, teacher calls per persona, and position debiasing.

    .venv/bin/python bench/tournament.py                  # defaults: a few minutes on 2 cores
    .venv/bin/python bench/tournament.py --personas 32 --json out.json
    .venv/bin/python bench/tournament.py --max-actors 4   # on a machine with more than 4 CPUs
    .venv/bin/python bench/tournament.py --smoke          # every figure at toy size on a small world (CI)

Every figure comes from real ``run_tournaments`` runs on a local Ray (started once, before
any timing); run outputs go to a temporary directory that is deleted at the end. Only the
demo world is cached, by ``ensure_world``, under ``$PERSONA_DISTILL_HOME``.

1. Throughput (matches/s) with the no-op ``RandomJudgeConfig`` (the engine's own ceiling:
   planning, the block tasks, routing to the judge actors, Arrow staging, commits) and with the
   text oracle ``TextOracleConfig()`` (MiniLM on CPU), on the demo world's test personas x a
   seeded sample of its test catalog (``build_specs``; default ``--max-candidates 0``: all of it).
   The judge actors (``JudgeHostPool``) start once per run and serve every round; each round
   is one fan-out of block tasks. Pass times are the engine's own record (``RunSummary.round_passes``).
   - end-to-end: all matches / wall time of ``run_tournaments``: judge start-up (MiniLM load),
     every round's pass, planning and commits; not Ray's start-up nor building the world.
   - steady state: (matches of round 0 - 1) / (round 0's pass - the pass of a 1-match run).
     The 1-match run (one persona, k candidates, same judge and pool; the faster of one run
     before and one after) pays the fixed cost round 0 also pays: starting the judge actor(s)
     and one round pass. What is left is the marginal cost of a match once all is up; for
     the oracle it still includes encoding every title once (cached in the actor afterwards),
     so later rounds run faster per match (see the round passes printed under the table).
   - later pass: the smallest round's pass (the finals, one match per persona, warm judges):
     the fixed cost each further round adds.
2. Teacher calls per persona for N candidates (default 4,096) at each k: the formula
   ``bracket.teacher_calls`` and rounds ``bracket.n_rounds``, next to what the engine really
   spent playing one persona over a synthetic N-item catalog with the no-op judge (they must
   be equal; the script exits 1 if not). PAD's pairwise knockout pays N - 1; the last column
   is the cost of full debiasing (n_views = k).
3. Position bias: the text oracle with ``position_bias`` (a logit bonus for the first shown
   image), at k, without debiasing (n_views=1) and with debiasing (n_views=2 and n_views=k,
   cyclic shifts averaged). Per variant: share of personas whose winner equals the unbiased
   judge's winner (same seed, so the same brackets), mean and worst true percentile of the
   winners under the hidden utility (``job.report``: ``truth.utility`` + ``percentile_rank``;
   the true best scores (N-1)/N), teacher calls per persona, and the share of multi-view
   matches whose first view alone would have picked another winner.

The last line is machine-readable (``tournament: key=value ...``). ``--smoke`` plays every figure
at toy size on a small demo world of its own (its numbers mean nothing; CI runs it so the bench
cannot break unnoticed).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from distill.judges.config import RandomJudgeConfig, TextOracleConfig  # noqa: E402
from distill.tournament import bracket  # noqa: E402
from distill.tournament.engine import (JudgePoolConfig, TournamentConfig, TournamentSpec,  # noqa: E402
                                       run_tournaments)
from distill.tournament import DataConfig, build_specs  # noqa: E402
from distill.tournament.job import report  # noqa: E402


def machine() -> dict:
    import ray

    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor() or "unknown")
    return dict(cores=len(os.sched_getaffinity(0)), cpu=model, python=platform.python_version(),
                ray=ray.__version__, load_avg_1min=os.getloadavg()[0])


# --smoke: every figure at toy size on a small world (CI runs it; the numbers mean nothing)
SMOKE = dict(personas=2, max_candidates=50, n=64, ks="2,5", views="1,2", batch_size=16,
             world_products=600, world_personas=100)


def play(specs, payload, cfg, judge, pool, out_dir: str):
    """One fresh run; returns the result, its wall seconds and its per-round pass timings (the
    engine records each round pass in its summary)."""
    t = time.perf_counter()
    res = run_tournaments(specs, payload, cfg, judge, pool, tempfile.mkdtemp(dir=out_dir), progress=False)
    return res, time.perf_counter() - t, [tuple(p) for p in res.summary.round_passes]


def throughput(name: str, res, wall: float, passes: list[tuple[int, float]], one_match_pass: float | None) -> dict:
    row = dict(judge=name, matches=res.summary.matches, rounds=res.summary.rounds, seconds=round(wall, 2),
               end_to_end=res.summary.matches / wall, round0=None, round0_seconds=None, one_match_pass_seconds=None,
               steady_state=None, smallest_round=None, smallest_round_seconds=None, round_passes=passes)
    if passes and one_match_pass is not None:
        (n0, t0), (n_min, t_min) = passes[0], min(passes)
        row.update(round0=n0, round0_seconds=round(t0, 2), one_match_pass_seconds=round(one_match_pass, 2),
                   steady_state=(n0 - 1) / (t0 - one_match_pass) if t0 > one_match_pass else None,
                   smallest_round=n_min, smallest_round_seconds=round(t_min, 2))
    return row


def summary_line(info: dict, k: int) -> str:
    """The machine-readable last line: ``tournament: key=value ...``."""
    thr = {r["judge"]: r for r in info["throughput"]}
    calls = {r["k"]: r for r in info["teacher_calls"]}
    row = calls.get(k) or info["teacher_calls"][0]
    bias = info["position_bias"]
    one_view = next(r for r in bias[1:] if r["n_views"] == 1) if any(r["n_views"] == 1 for r in bias[1:]) else None
    most = max(bias[1:], key=lambda r: r["n_views"])
    fig = {"noop_matches_per_s": thr["no-op (random)"]["end_to_end"],
           "oracle_matches_per_s": thr["text oracle"]["end_to_end"],
           "noop_steady_matches_per_s": thr["no-op (random)"]["steady_state"],
           "oracle_steady_matches_per_s": thr["text oracle"]["steady_state"],
           "calls_k": row["k"], "calls_per_persona": row["measured"], "calls_formula": row["formula"],
           "calls_formula_equal": int(all(r["equal"] for r in info["teacher_calls"])),
           "pairwise_over_k_calls": row["pairwise"] / row["measured"],
           "unbiased_true_percentile": bias[0]["mean_true_percentile"],
           "biased_agreement": one_view["agreement"] if one_view else None,
           "debiased_views": most["n_views"], "debiased_agreement": most["agreement"],
           "debiased_true_percentile": most["mean_true_percentile"],
           "debiased_calls_ratio": most["calls_per_persona"] / bias[0]["calls_per_persona"]}
    return "tournament: " + " ".join(f"{key}={value:.4g}" for key, value in fig.items() if value is not None)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--personas", type=int, default=8, help="test personas in figures 1 and 3")
    p.add_argument("--max-candidates", type=int, default=0,
                   help="seeded sample of the test catalog in figures 1 and 3 (0 = all of it)")
    p.add_argument("--k", type=int, default=5, help="match size in figures 1 and 3")
    p.add_argument("--n", type=int, default=4096, help="synthetic catalog size in figure 2")
    p.add_argument("--ks", default="2,4,5,8", help="match sizes in figure 2")
    p.add_argument("--bias", type=float, default=0.1, help="position_bias of the biased text oracle")
    p.add_argument("--views", default="1,2,k", help="n_views of the biased runs ('k' = the match size)")
    p.add_argument("--max-actors", type=int, default=1,
                   help="judge actors (1 CPU each; 2 on a 2-CPU local Ray stalled the first round here)")
    p.add_argument("--batch-size", type=int, default=128, help="matches per judge call")
    p.add_argument("--world-products", type=int, default=None, help="a demo world of this many products "
                   "(default: the built-in demo world)")
    p.add_argument("--world-personas", type=int, default=None, help="personas of that world")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--smoke", action="store_true", help="for CI, every figure at toy size: %s" %
                   ", ".join(f"{k}={v}" for k, v in SMOKE.items()))
    p.add_argument("--json", default=None, help="also write the figures here")
    args = p.parse_args(argv)
    if args.smoke:
        for key, value in SMOKE.items():
            setattr(args, key, value)
    sys.stdout.reconfigure(line_buffering=True)
    t_start = time.perf_counter()

    from distill.ray_utils import init_ray
    from distill.world import WorldConfig, ensure_world

    t = time.perf_counter()
    init_ray()
    ray_start = time.perf_counter() - t
    info = dict(machine=machine(), ray_start_seconds=round(ray_start, 2), args=vars(args))
    pool = JudgePoolConfig(min_actors=1, max_actors=args.max_actors, batch_size=args.batch_size)
    info["pool"] = pool.model_dump()
    m = info["machine"]
    print(f"machine: {m['cores']} cores ({m['cpu']}), Python {m['python']}, Ray {m['ray']}, "
          f"load avg {m['load_avg_1min']:.2f} at start; Ray started in {ray_start:.1f} s")
    print(f"judge pool: {pool.min_actors}-{pool.max_actors} actors x {pool.num_cpus:g} CPU, batch {pool.batch_size}")

    ok = True
    with tempfile.TemporaryDirectory(prefix="bench-tournament-") as out:
        world = WorldConfig()
        if args.world_products or args.world_personas:
            world = WorldConfig(name=f"bench-{args.world_products}-{args.world_personas}",
                                n_products=args.world_products or world.n_products,
                                n_personas=args.world_personas or world.n_personas)
        root = ensure_world(world, progress=False)
        data = DataConfig(persona_split="test", catalog_split="test", max_personas=args.personas,
                          max_candidates=args.max_candidates or None)
        specs, catalog = build_specs(root, data, args.seed)
        n_cand = len(specs[0].candidate_ids)
        cfg = TournamentConfig(k=args.k, seed=args.seed)

        # 1. throughput
        runs = {}
        rows = []
        tiny = [TournamentSpec(specs[0].tournament_id, specs[0].persona_id, specs[0].persona_text,
                               specs[0].candidate_ids[:args.k])]
        for name, judge in (("no-op (random)", RandomJudgeConfig()), ("text oracle", TextOracleConfig())):
            # the 1-match run before and after the real one; the faster of the two (first actor starts run cold)
            _, _, before = play(tiny, catalog, cfg, judge, pool, out)
            res, wall, passes = play(specs, catalog, cfg, judge, pool, out)
            _, _, after = play(tiny, catalog, cfg, judge, pool, out)
            runs[name] = res, wall
            rows.append(throughput(name, res, wall, passes, min(before[0][1], after[0][1]) if passes else None))
        info["throughput"] = rows
        print(f"\n1. Engine throughput: {len(specs)} test personas x {n_cand} test items, k={args.k}, n_views=1, "
              f"matches/s (Ray start-up excluded)")
        print(f"{'judge':<16}{'matches':>8}{'rounds':>7}{'wall s':>8}{'end-to-end':>12}{'round 0':>16}"
              f"{'1-match run':>13}{'steady state':>14}{'later pass':>12}")
        for r in rows:
            steady = f"{r['steady_state']:.0f}" if r["steady_state"] else "n/a"
            if r["round0"] is None:
                round0, one_pass, later = "n/a", "n/a", "n/a"
            else:
                round0 = f"{r['round0']} in {r['round0_seconds']:.1f}s"
                one_pass, later = f"{r['one_match_pass_seconds']:.1f}s", f"{r['smallest_round_seconds']:.1f}s"
            print(f"{r['judge']:<16}{r['matches']:>8}{r['rounds']:>7}{r['seconds']:>8.1f}{r['end_to_end']:>12.0f}"
                  f"{round0:>16}{one_pass:>13}{steady:>14}{later:>12}")
        if not rows[0]["round_passes"]:
            print("   (no round passes recorded in the run summary)")
        for r in rows:
            print(f"   {r['judge']} round passes (matches: s): "
                  + ", ".join(f"{n}: {t:.1f}" for n, t in r["round_passes"]))
        print("   end-to-end = all matches / run wall time (judge start-up once, every round's pass, commits);\n"
              "   1-match run = the pass of a run with a single match (judge start-up + one round pass);\n"
              "   steady state = (round 0 matches - 1) / (round 0 pass - 1-match pass);\n"
              "   later pass = the smallest round's pass (warm judges): the fixed cost each further round adds.")

        # 2. teacher calls per persona at N
        ids = tuple(f"s{i:06d}" for i in range(args.n))
        synthetic = pa.table({"item_id": list(ids)})
        one = [TournamentSpec("synthetic", "synthetic", "a synthetic persona", ids)]
        calls = []
        for k in [int(x) for x in args.ks.split(",")]:
            res, wall, _ = play(one, synthetic, TournamentConfig(k=k, seed=args.seed), RandomJudgeConfig(), pool, out)
            per_round = np.bincount(res.matches["round"].to_numpy()).tolist()
            row = dict(k=k, formula=bracket.teacher_calls(args.n, k), measured=res.summary.teacher_calls,
                       rounds_formula=bracket.n_rounds(args.n, k), rounds_measured=res.summary.rounds,
                       matches_per_round_formula=bracket.matches_per_round(args.n, k),
                       matches_per_round_measured=per_round, pairwise=args.n - 1,
                       debiased_n_views_k=bracket.teacher_calls(args.n, k, n_views=k), seconds=round(wall, 2))
            row["equal"] = (row["formula"] == row["measured"] and row["rounds_formula"] == row["rounds_measured"]
                            and row["matches_per_round_formula"] == per_round)
            ok &= row["equal"]
            calls.append(row)
        info["teacher_calls"] = calls
        print(f"\n2. Teacher calls per persona, N = {args.n:,} (formula ceil((N-1)/(k-1)) vs a real run, no-op judge)")
        print(f"{'k':>3}{'formula':>9}{'measured':>10}{'rounds f/m':>12}{'vs N-1':>9}{'n_views=k':>11}{'check':>7}"
              f"{'run s':>7}  matches per round")
        for r in calls:
            rounds = f"{r['rounds_formula']}/{r['rounds_measured']}"
            print(f"{r['k']:>3}{r['formula']:>9,}{r['measured']:>10,}{rounds:>12}{r['pairwise'] / r['measured']:>8.2f}x"
                  f"{r['debiased_n_views_k']:>11,}{'ok' if r['equal'] else 'DIFF':>7}{r['seconds']:>7.1f}"
                  f"  {r['matches_per_round_measured']}")
        print(f"   PAD's pairwise knockout pays N-1 = {args.n - 1:,}; 'vs N-1' = how many times fewer calls.")

        # 3. position bias and debiasing
        reference, ref_wall = runs["text oracle"]  # the unbiased oracle at the same k and seed: same brackets
        ref_winner = dict(zip(reference.tournaments["tournament_id"].to_pylist(),
                              reference.tournaments["winner_id"].to_pylist()))
        variants = [("unbiased", TextOracleConfig(), 1, reference, ref_wall)]
        biased = TextOracleConfig(position_bias=args.bias)
        for v in sorted({args.k if x == "k" else int(x) for x in args.views.split(",")}):
            res, wall, _ = play(specs, catalog, TournamentConfig(k=args.k, n_views=v, seed=args.seed), biased, pool, out)
            variants.append((f"bias {args.bias:g}", biased, v, res, wall))
        bias_rows = []
        for name, judge, v, res, wall in variants:
            rep = report(res, specs, catalog, demo=True)
            pct = [w.true_percentile for w in rep.winners]
            same = [ref_winner[t] == w for t, w in zip(res.tournaments["tournament_id"].to_pylist(),
                                                        res.tournaments["winner_id"].to_pylist())]
            bias_rows.append(dict(judge=name, position_bias=judge.position_bias, n_views=v,
                                  agreement=float(np.mean(same)), mean_true_percentile=rep.mean_true_percentile,
                                  min_true_percentile=min(pct), calls_per_persona=res.summary.teacher_calls_per_tournament,
                                  winner_changed_by_debiasing=res.summary.winner_changed_by_debiasing,
                                  seconds=round(wall, 2)))
        info["position_bias"] = bias_rows
        print(f"\n3. Position bias: text oracle, {len(specs)} test personas x {n_cand} test items, k={args.k}, "
              f"same seed as the unbiased run")
        print(f"{'judge':<10}{'n_views':>8}{'same winner':>13}{'mean true pct':>15}{'worst':>9}"
              f"{'calls/persona':>15}{'first view differs':>20}{'run s':>7}")
        for r in bias_rows:
            same = f"{100 * r['agreement']:.0f}%"
            flips = "-" if r["winner_changed_by_debiasing"] is None else f"{100 * r['winner_changed_by_debiasing']:.1f}%"
            print(f"{r['judge']:<10}{r['n_views']:>8}{same:>13}{100 * r['mean_true_percentile']:>14.2f}%"
                  f"{100 * r['min_true_percentile']:>8.2f}%{r['calls_per_persona']:>15,.0f}{flips:>20}{r['seconds']:>7.1f}")
        print(f"   same winner = share of personas whose winner is the unbiased judge's (unbiased, it picks the true best);\n"
              f"   true pct = share of the {n_cand} candidates with lower hidden utility than the winner;\n"
              f"   first view differs = share of matches whose first view alone would have picked another winner.")

    info["total_seconds"] = round(time.perf_counter() - t_start, 1)
    print(f"\ntotal wall time: {info['total_seconds']:.0f} s, load avg {os.getloadavg()[0]:.2f} at the end"
          + ("" if ok else "   FORMULA MISMATCH (see figure 2)"))
    if args.json:
        Path(args.json).write_text(json.dumps(info, indent=2, default=float))
        print(f"figures written to {args.json}")
    import ray

    ray.shutdown()  # no worker log line may arrive after the summary line
    print(summary_line(info, args.k))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
