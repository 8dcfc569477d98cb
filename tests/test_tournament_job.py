"""jobs/tournament.py end to end, as users run it: plain, and killed and resumed.

`ray job submit` of this job against a local head is tested with the VLM teacher
(tests/test_vlm_job.py): the same entry point and working-dir upload, plus the judge actors'
own interpreter, so a second submit test with the text oracle would only repeat a head start."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from distill import storage
from distill.config import build_config
from distill.tournament.job import TournamentJobConfig
from tests.fixtures.ray_head import job_env

REPO = Path(__file__).resolve().parents[1]
JOB = str(REPO / "jobs" / "tournament.py")
SMALL = ["data.max_personas=2", "data.max_candidates=150", "tournament.k=5", "pool.batch_size=8"]


def read_matches(out: Path):
    return pq.read_table(sorted((out / "rounds").glob("round-*.parquet")))


def test_config_errors_name_the_field() -> None:
    with pytest.raises(SystemExit, match="tournament.k"):
        build_config(TournamentJobConfig, "tournament:\n  k: 1\n")
    with pytest.raises(SystemExit, match="judge"):
        build_config(TournamentJobConfig, None, ["judge.kind=gpt"])
    cfg = build_config(TournamentJobConfig, "judge:\n  kind: random\n", ["tournament.n_views=2"])
    assert cfg.judge.kind == "random" and cfg.tournament.n_views == 2


@pytest.mark.slow
def test_demo_job_with_no_arguments(tmp_path) -> None:
    """`python jobs/tournament.py` builds/uses the demo world and reports true percentiles."""
    out = tmp_path / "demo"
    proc = subprocess.run([sys.executable, JOB, f"output={out}"], cwd=tmp_path, env=job_env(),
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "teacher calls per persona" in proc.stdout
    report = json.loads((out / "report.json").read_text())
    s = report["summary"]
    assert s["tournaments"] == 8 and s["failed_matches"] == 0
    assert s["teacher_calls_per_tournament"] == pytest.approx((s["pairwise_calls_per_tournament"]) / 4, abs=1)
    assert report["mean_true_percentile"] >= 0.99
    assert pq.read_table(out / "tournaments.parquet").num_rows == 8
    assert pq.read_table(out / "eliminations").num_rows == 8 * (s["pairwise_calls_per_tournament"] + 1)


@pytest.mark.slow
def test_killed_mid_round_then_rerun_judges_every_match_exactly_once(tmp_path) -> None:
    out = tmp_path / "run"
    args = [sys.executable, JOB, f"output={out}", *SMALL, "judge.kind=plugin",
            "judge.target=tests.plugin_judges:SlowJudge", "judge.options={seconds_per_batch: 1.0}",
            "pool.max_actors=1", f"pool.env_vars={{PYTHONPATH: {REPO}}}", "progress=false"]
    proc = subprocess.Popen(args, cwd=REPO, env=job_env(), start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    staging = out / "staging" / "round-0000"
    deadline = time.time() + 300
    while time.time() < deadline and len(list(staging.rglob("*.parquet"))) < 2 and proc.poll() is None:
        time.sleep(0.5)
    assert len(list(staging.rglob("*.parquet"))) >= 2, "the job never staged a batch"
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and everything it started
    proc.wait()
    state = json.loads((out / "state.json").read_text())
    assert state["committed_rounds"] == 0 and not state["finished"]

    done = subprocess.run(args[:-1] + ["progress=true"], cwd=REPO, env=job_env(), capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["reused_from_earlier_attempts"] >= 2 * 8
    matches = read_matches(out)
    keys = matches["match_key"].to_pylist()
    assert len(keys) == len(set(keys)) == summary["matches"]
    assert summary["matches"] == 2 * 38  # ceil(149 / 4) per persona
    assert len(set(matches["attempt_id"].to_pylist())) == 2, "first attempt's judgements were kept"
    assert not (out / "staging").exists() or not any((out / "staging").rglob("*.parquet"))


@pytest.mark.slow
def test_rerun_after_a_driver_killed_between_rounds_counts_what_earlier_attempts_judged(tmp_path) -> None:
    """Killed after round 0 committed: the rerun judges only later rounds, and its summary credits
    the killed attempt with every match it judged (committed rounds included), not just staged ones."""
    out = tmp_path / "run"
    args = [sys.executable, JOB, f"output={out}", *SMALL, "judge.kind=plugin",
            "judge.target=tests.plugin_judges:SlowJudge", "judge.options={seconds_per_batch: 0.5}",
            "pool.max_actors=1", f"pool.env_vars={{PYTHONPATH: {REPO}}}", "progress=false"]
    proc = subprocess.Popen(args, cwd=REPO, env=job_env(), start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300

    def committed() -> int:
        try:
            return json.loads((out / "state.json").read_text())["committed_rounds"]
        except (FileNotFoundError, json.JSONDecodeError):
            return 0

    while time.time() < deadline and committed() < 1 and proc.poll() is None:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    state = json.loads((out / "state.json").read_text())
    assert state["committed_rounds"] >= 1 and not state["finished"], "kill the driver between rounds"
    first = read_matches(out)
    first_attempt = set(first["attempt_id"].to_pylist())
    assert len(first_attempt) == 1 and first.num_rows >= 2 * 30  # round 0: 150 / 5 per persona

    done = subprocess.run(args, cwd=REPO, env=job_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    matches = read_matches(out)
    by_first = sum(a in first_attempt for a in matches["attempt_id"].to_pylist())
    assert by_first >= first.num_rows
    assert summary["reused_from_earlier_attempts"] == by_first
    assert summary["judged_this_attempt"] == summary["matches"] - by_first > 0
    assert f"reused from earlier attempts: {by_first}" in done.stdout
