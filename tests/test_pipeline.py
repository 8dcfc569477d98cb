"""jobs/pipeline.py: the demo world -> teacher labels -> distillation -> index -> Serve, in one command.

The end-to-end test runs the real stages at small sizes (the small demo world tests/test_distill.py
builds, one preset, one cycle) and ends with a persona query answered over HTTP on 127.0.0.1 by
the app the pipeline deployed; a rerun then reuses every stage.
"""

from __future__ import annotations

import json
import socket
import urllib.request
from pathlib import Path

import pytest
import yaml

from distill.config import ConfigError, build_config
from distill.pipeline import PipelineConfig, PipelineState, serve_config

REPO = Path(__file__).resolve().parents[1]
WORLD = ["world.name=distill-test", "world.n_products=1200", "world.n_personas=300", "world.image_size=64",
         "world.parts_per_split=1"]  # the world tests/test_distill.py builds (cached once per machine)
SMALL = ["distill.pretrain.steps=4", "distill.pretrain.max_items=128",
         "distill.pretrain.batch_size=32", "distill.pretrain.warmup_steps=1", "distill.eval.test_personas=6",
         "distill.eval.test_max_candidates=160", "distill.eval.val_personas=4", "distill.eval.val_max_candidates=96",
         "distill.default.cycles=1", "distill.default.matches_per_cycle=8", "distill.default.train_catalog_max_items=128",
         "distill.default.train.num_workers=1", "distill.progress=false", "index.embed.batch_size=128",
         "index.embed.max_actors=1", "index.index.n_shards=1"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_root_world_and_output_are_set_once_at_the_top():
    cfg = build_config(PipelineConfig, None, ["root=/data/shop", "world.seed=3"])
    assert cfg.distill.root == "/data/shop" and cfg.index.dataset == "/data/shop"
    assert cfg.distill.world.seed == 3 and cfg.index.world.seed == 3
    assert cfg.distill.pretrain.caption_template is None, "a user's catalog pretrains on its titles"
    assert build_config(PipelineConfig).distill.pretrain.caption_template, "the demo world's captions"
    served = build_config(PipelineConfig, None, ["distill.eval.val_personas=7"]).distill
    assert served.presets == ["default"] and served.seeds == 1, "one arm, one seed: the student that is served"
    assert served.eval.student_ceiling is False and served.eval.val_personas == 7, "no ceiling arm to train"
    for clash in ("distill.root=/elsewhere", "index.checkpoint=/some/student", "distill.start_checkpoint=/x"):
        with pytest.raises(ConfigError, match="set by the pipeline"):
            build_config(PipelineConfig, None, [clash])
    with pytest.raises(ConfigError, match="serve_preset"):
        build_config(PipelineConfig, None, ["distill.presets=[pad]"])
    # a dumped config validates again (each section repeats the top's root and world)
    again = PipelineConfig.model_validate(cfg.model_dump(mode="json"))
    assert again == cfg


def test_teacher_recipe_fills_the_judge_and_pool():
    cfg = build_config(PipelineConfig, None, ["teacher=configs/teachers/qwen2.5-vl-7b-h100.yaml"])
    recipe = yaml.safe_load((REPO / "configs" / "teachers" / "qwen2.5-vl-7b-h100.yaml").read_text())
    assert cfg.distill.judge.kind == "vlm" and cfg.distill.judge.model == recipe["judge"]["model"]
    assert cfg.distill.pool.accelerator_type == "H100"
    with pytest.raises(ConfigError, match="does not exist"):
        build_config(PipelineConfig, None, ["teacher=configs/teachers/none.yaml"])


def test_checkpoint_registry_resolves_ids_and_refuses_changed_weights(tmp_path):
    import torch

    from distill.pipeline import PipelineError
    from distill.student import StudentConfig, build_student

    torch.manual_seed(0)
    student = build_student(StudentConfig(arch="tiny-test"))
    uri = str(tmp_path / "ckpt")
    student.save(uri)
    state = PipelineState()
    ckpt_id = state.register(uri)
    assert ckpt_id == student.checkpoint_id and state.checkpoint(ckpt_id) == uri
    with pytest.raises(PipelineError, match="not in this pipeline's registry"):
        state.checkpoint("0" * 64)
    with torch.no_grad():
        next(student.model.parameters()).add_(1.0)
    student.save(uri)  # another student now lives at that path
    with pytest.raises(PipelineError, match="no longer holds"):
        state.checkpoint(ckpt_id)


def test_serve_config_points_at_the_index_version_and_validates():
    cfg = build_config(PipelineConfig, None, ["serve.port=8123"])
    config = serve_config(cfg, {"index_root": "/x/index", "version": "v-1"})
    app = config["applications"][0]
    assert app["args"]["index_root"] == "/x/index" and app["args"]["index_version"] == "v-1"
    assert config["http_options"]["port"] == 8123
    template = yaml.safe_load((REPO / "configs" / "serve.yaml").read_text())["applications"][0]["args"]
    kept = {k: v for k, v in app["args"].items() if k not in ("index_root", "index_version", "checkpoint")}
    assert kept == {k: v for k, v in template.items() if k not in ("index_root", "index_version", "checkpoint")}


@pytest.mark.slow
@pytest.mark.timeout(1500)  # ~3 min on an idle 2-core box; Ray Train dominates
def test_pipeline_demo_world_to_a_persona_query_over_http(ray_local, tmp_path, capsys):
    import importlib.util

    from ray import serve

    spec = importlib.util.spec_from_file_location("pipeline_entry", REPO / "jobs" / "pipeline.py")
    entry = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(entry)
    port = _free_port()
    args = WORLD + SMALL + [f"output={tmp_path / 'run'}", "serve.host=127.0.0.1", f"serve.port={port}",
                            "progress=true"]
    try:
        result = entry.main(args + ["--deploy"])
        body = json.dumps({"persona": "a gift for a mother who loves gardening", "k": 5}).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/search", data=body,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as resp:
            answer = json.loads(resp.read())
    finally:
        serve.shutdown()
    assert len(answer["hits"]) == 5 and answer["index_version"] == result["index"]["version"]
    # the served index: the whole catalog (every split), embedded by the distilled checkpoint, chosen by id
    state = PipelineState.load(result["output"])
    distilled = state.stages["distill"].outputs
    # the served checkpoint is the preset's result (the best-validating cycle, which may be the start itself)
    assert result["checkpoint_id"] == distilled["checkpoint_ids"]["default"][0]
    assert state.checkpoints[result["checkpoint_id"]] == result["checkpoint"]
    from distill.student import read_checkpoint_meta

    assert read_checkpoint_meta(result["checkpoint"])["checkpoint_id"] == result["checkpoint_id"]
    from distill import datasets
    from serving.index import read_manifest

    manifest = read_manifest(result["index"]["index_root"])
    assert manifest.checkpoint_hash == manifest.checkpoint_id == result["checkpoint_id"]  # an id, never a path
    assert manifest.n_items == datasets.read_catalog(result["root"], columns=["item_id"]).num_rows
    written = yaml.safe_load(Path(result["serve_config"]).read_text())
    assert written["applications"][0]["args"]["index_version"] == manifest.version
    # a rerun resumes: every stage reused, nothing rebuilt
    capsys.readouterr()
    again = entry.main(args)
    printed = capsys.readouterr().out
    for stage in ("data", "start", "distill", "index"):
        assert f"[pipeline] {stage}: reused" in printed
    assert again["checkpoint_id"] == result["checkpoint_id"] and again["index"] == result["index"]
