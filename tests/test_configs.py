"""Every shipped config (configs/**) names its command at the top, validates as that job's config,
and builds everything short of downloading weights: the student architectures (open_clip, no
pretrained weights), the vLLM engine arguments of every VLM teacher (vLLM's own ``EngineArgs``),
the judge configs; the teacher recipes' GPU arithmetic holds for the GPU each one names."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from distill import docs, hub
from distill.config import build_config
from distill.judges.vlm import VLMJudgeConfig
from distill.student import StudentConfig

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted(p for p in (REPO / "configs").rglob("*.yaml"))
IDS = [str(p.relative_to(REPO / "configs")) for p in CONFIGS]
COMMAND = re.compile(r"python (jobs/\w+\.py) --config (configs/\S+\.yaml)((?: +[\w.]+=\S+)*)")
SERVE = re.compile(r"serve (?:run|deploy) (configs/\S+\.yaml)")

# GPU memory (GB) of the smallest common variant Ray's accelerator_type names
GPU_MEMORY_GB = {"L4": 24, "A10G": 24, "A100": 40, "H100": 80}
# model -> (bf16 weight GB incl. the vision tower, KV-cache bytes per token = layers x KV heads x 128 x 2 x 2)
TEACHERS = {"Qwen/Qwen2.5-VL-7B-Instruct": (16.6, 28 * 4 * 128 * 2 * 2),
            "Qwen/Qwen2.5-VL-3B-Instruct": (7.5, 36 * 2 * 128 * 2 * 2)}
ACTIVATIONS_GB = 2.5


def _header(path: Path) -> str:
    """The leading comment block, continuation lines joined."""
    lines = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("#").strip())
    return re.sub(r"\\\s+", " ", "\n".join(lines)).replace("\n", "\n ")


def _command(path: Path) -> tuple[str, list[str]] | None:
    """(job file, overrides) of the header's command that runs this very file."""
    rel = str(path.relative_to(REPO))
    for job, config, overrides in COMMAND.findall(_header(path).replace("\n ", " ")):
        if config == rel:
            return job, [o.replace("$PWD", str(REPO)) for o in shlex.split(overrides)]
    return None


def _walk(cfg: BaseModel, kind: type) -> list:
    found = [cfg] if isinstance(cfg, kind) else []
    for name in type(cfg).model_fields:
        value = getattr(cfg, name, None)
        for item in (value.values() if isinstance(value, dict) else [value]):
            if isinstance(item, BaseModel):
                found += _walk(item, kind)
    return found


def _load(path: Path):
    if SERVE.search(_header(path)):
        from ray.serve.schema import ServeDeploySchema

        from serving.app import SearchAppArgs

        raw = yaml.safe_load(path.read_text())
        ServeDeploySchema.model_validate(raw)
        return [SearchAppArgs.model_validate(a["args"]) for a in raw["applications"]]
    job, overrides = _command(path)
    return build_config(docs.job_config(job), path.read_text(), overrides)


@pytest.mark.parametrize("path", CONFIGS, ids=IDS)
def test_config_names_its_command_and_validates_as_that_jobs_config(path):
    header = _header(path)
    serve = SERVE.search(header)
    assert serve or _command(path), f"{path.name}: the header must show the command that runs it"
    if serve:
        assert serve.group(1) == str(path.relative_to(REPO))
    else:
        job, _ = _command(path)
        assert (REPO / job).is_file() and job in docs.JOB_CONFIGS
    cfg = _load(path)
    if isinstance(cfg, BaseModel):
        hub.config_refs(cfg)  # every model it names is classified, without the network


def _configs_with(kind: type) -> list:
    found = []
    for path in CONFIGS:
        cfg = _load(path)
        if isinstance(cfg, BaseModel):
            found += [(path, c) for c in _walk(cfg, kind)]
    return found


def test_every_student_architecture_builds_and_its_weights_are_a_known_tag():
    import open_clip
    from open_clip.pretrained import get_pretrained_cfg

    from distill.student import _open_clip_name, raw_model_cfg

    students = _configs_with(StudentConfig)
    archs = {}
    for path, student in students:
        name, raw = raw_model_cfg(student)
        archs[(name, json.dumps(raw, sort_keys=True))] = (name, raw)
        if student.pretrained and not os.path.exists(student.pretrained):
            assert get_pretrained_cfg(name, student.pretrained), f"{path.name}: {name} has no tag {student.pretrained!r}"
    assert {"ViT-B-32", "ViT-B-16"} <= {name for name, _ in archs.values()}, "the real-model recipes"
    for name, raw in archs.values():
        model = open_clip.create_model(_open_clip_name(name, raw), pretrained=None, pretrained_text=False)
        assert model.visual is not None and sum(p.numel() for p in model.parameters()) > 0


def test_teacher_recipes_fit_their_gpus_per_type():
    teachers = sorted((REPO / "configs" / "teachers").glob("*.yaml"))
    seen = set()
    for path in teachers:
        cfg = _load(path)
        judge, pool = cfg.judge, cfg.pool
        assert judge.kind == "vlm" and judge.model in TEACHERS, path.name
        gpu = pool.accelerator_type
        assert gpu in GPU_MEMORY_GB and gpu.lower() in path.stem, f"{path.name}: accelerator_type {gpu}"
        assert pool.num_gpus == judge.tensor_parallel_size, f"{path.name}: one engine owns its tensor-parallel GPUs"
        weights, kv_per_token = TEACHERS[judge.model]
        per_gpu_free = GPU_MEMORY_GB[gpu] * judge.gpu_memory_utilization - weights / judge.tensor_parallel_size \
            - ACTIVATIONS_GB
        kv_tokens = per_gpu_free * judge.tensor_parallel_size * 1e9 / kv_per_token
        assert kv_tokens >= judge.max_model_len, f"{path.name}: not one full-length sequence fits the KV cache"
        match_tokens = 5 * 256 + 150  # a k=5 match at 448 px
        assert kv_tokens >= judge.max_num_seqs * match_tokens / 2, f"{path.name}: max_num_seqs cannot be resident"
        seen.add((judge.model, gpu))
    assert seen == {(m, g) for m in TEACHERS for g in GPU_MEMORY_GB}, "a recipe per teacher per GPU type"


def test_repo_gpu_judge_is_the_h100_teacher_recipe():
    ours = yaml.safe_load((REPO / "configs" / "teachers" / "qwen2.5-vl-7b-h100.yaml").read_text())["judge"]
    theirs = yaml.safe_load((REPO / "configs" / "vlm-qwen2.5-vl-7b.yaml").read_text())["judge"]
    assert ours == theirs


def test_no_shipped_config_serves_an_untrained_student():
    """An index or pipeline config either names a trained checkpoint or gets one from distillation."""
    from distill.pipeline import PipelineConfig
    from serving.pipeline import IndexJobConfig

    for path in CONFIGS:
        cfg = _load(path)
        if isinstance(cfg, IndexJobConfig):
            assert cfg.checkpoint or not cfg.allow_untrained, f"{path.name} indexes an untrained student by default"
        if isinstance(cfg, PipelineConfig):
            assert cfg.serve_preset in cfg.distill.presets


@pytest.mark.slow
def test_every_vlm_teacher_builds_vllm_engine_args(vllm_python, tmp_path):
    """vLLM's own EngineArgs accepts each teacher's engine arguments (no model download: the engine
    config, which reads the model's files, is not created)."""
    judges = {json.dumps(j.engine_args(), sort_keys=True) for _, j in _configs_with(VLMJudgeConfig)}
    models = {json.loads(j)["model"] for j in judges}
    assert set(TEACHERS) <= models and {json.loads(j)["tensor_parallel_size"] for j in judges} == {1, 2}
    code = ("import json, sys\nfrom vllm.engine.arg_utils import EngineArgs\n"
            "for args in json.load(sys.stdin):\n"
            "    e = EngineArgs(**args)\n"
            "    assert e.model == args['model'] and e.tensor_parallel_size == args['tensor_parallel_size']\n"
            "print('ok')\n")
    # online (offline mode would make EngineArgs look the model up in the cache), but with an endpoint
    # that answers nothing: building the arguments must not touch the hub
    env = {k: v for k, v in os.environ.items() if k not in hub.OFFLINE_VARS}
    env.update(HF_ENDPOINT="http://127.0.0.1:9", HF_HOME=str(tmp_path / "hf"), VLLM_NO_USAGE_STATS="1")
    out = subprocess.run([str(vllm_python), "-c", code], input=json.dumps([json.loads(j) for j in judges]),
                         capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "ok" in out.stdout
