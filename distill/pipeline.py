"""One run from a dataset root (or the demo world) to a served endpoint: the library behind
``jobs/pipeline.py``.

Stages, each calling the stage's own library entry point, each resumable:

1. ``data``     the dataset root (every split checked), or the demo world built on first use
                (``datasets.resolve_root``).
2. ``start``    the student distillation starts from: caption-pretrained on the catalog
                (``start=caption_pretrain``, the demo's baseline) or the student config's own
                pretrained weights as they are (``start=pretrained``, PAD's start: e.g. ViT-B-32
                ``laion2b_s34b_b79k``, downloaded into HF_HOME on first use).
3. ``distill``  teacher labels and training: ``distill.distill_job.run`` (validation and test
                knockouts judged by the teacher, each cycle's teacher rankings, DDP training, the
                evaluation table).
4. ``index``    the whole catalog embedded by the chosen checkpoint, sharded FAISS index
                (``serving.pipeline.run_index_job``).
5. ``serve``    a Serve config (``serve_config`` below) pointing at that index version, written to
                ``<output>/serve.yaml``; with ``deploy=true`` (``--deploy``) the app is started, or
                updated in place when it runs already.

Checkpoints move between stages by their ``checkpoint_id`` (the sha256 of the weights,
``distill.student``): each stage records the ids it produced in ``<output>/pipeline.json``, with
the one registry that maps an id to its directory, and the next stage asks the registry for the
id, then checks that the directory it gets holds exactly those weights. No path is copied by
hand. A stage whose inputs (its settings and the ids it consumes) are unchanged is reused on a
rerun; the stages underneath resume their own partial work (committed rounds, finished cycles,
finished embeddings).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any, Callable, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from distill import storage
from distill.errors import DataError
from distill.distill_job import DistillJobConfig
from distill.world import WorldConfig
from serving.pipeline import IndexJobConfig

REPO_ROOT = Path(__file__).resolve().parents[1]
STATE_FILE = "pipeline.json"
STAGES = ("data", "start", "distill", "index", "serve")
# settings the pipeline fills in for the stages: a user sets them once, at the top
OWNED = {"distill": ("root", "world", "output", "start_checkpoint"), "index": ("dataset", "world", "output", "checkpoint")}


class PipelineError(DataError):
    """A pipeline that cannot go on for a reason the user can fix (one line, exit code 2)."""


class ServeStageConfig(BaseModel):
    """The Serve config the pipeline writes (and deploys with ``deploy=true``)."""

    model_config = ConfigDict(extra="forbid")
    template: str = Field("configs/serve.yaml", description=(
        "Serve config whose application args (autoscaling, batching, CPUs) are kept; the pipeline sets "
        "index_root and index_version. A relative path is looked up in the working directory, then the repository"))
    host: str | None = Field(None, description="HTTP host of the Serve proxy; empty = the template's")
    port: int | None = Field(None, ge=1, le=65535, description="HTTP port of the Serve proxy; empty = the template's")
    block: bool | None = Field(None, description=(
        "after deploying, keep serving until interrupted; empty = only when the pipeline started its own local "
        "Ray (which stops with the process); on a cluster (RAY_ADDRESS) the app outlives the job"))


class PipelineConfig(BaseModel):
    """jobs/pipeline.py: dataset -> teacher labels -> distillation -> index -> Serve config (-> deploy)."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field("demo", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
                      description="run name: the default output is $PERSONA_DISTILL_HOME/pipelines/<name>")
    root: str | None = Field(None, description="dataset root URI (jobs/ingest.py); empty = the built-in demo world")
    world: WorldConfig = Field(default_factory=WorldConfig, description="the demo world, used when root is empty")
    output: str | None = Field(None, description="pipeline output URI; empty = $PERSONA_DISTILL_HOME/pipelines/<name>")
    teacher: str | None = Field(None, description=(
        "a teacher recipe (YAML with `judge` and `pool`, e.g. configs/teachers/qwen2.5-vl-7b-h100.yaml) used as "
        "distill.judge / distill.pool where the config sets none; empty = distill's own (the demo's text oracle)"))
    start: Literal["caption_pretrain", "pretrained"] = Field("caption_pretrain", description=(
        "the student distillation starts from: caption_pretrain = distill.pretrain on the catalog's captions "
        "(the demo's baseline); pretrained = distill.pretrain.student with its pretrained weights as they are (PAD)"))
    distill: DistillJobConfig = Field(default_factory=DistillJobConfig, description=(
        "the distillation run (judge, pool, presets, eval); root, world, output and start_checkpoint are the pipeline's"))
    serve_preset: str = Field("default", description=(
        "the arm whose checkpoint is indexed and served (its first training seed); distill.presets defaults to "
        "this arm alone, distill.seeds to 1 and distill.eval.student_ceiling to false"))
    index: IndexJobConfig = Field(default_factory=IndexJobConfig, description=(
        "embedding pool and FAISS settings; dataset, world, output and checkpoint are the pipeline's"))
    serve: ServeStageConfig = Field(default_factory=ServeStageConfig)
    deploy: bool = Field(False, description="start (or update) the Serve app after writing its config (`--deploy`)")
    progress: bool = Field(True, description="print progress")

    @model_validator(mode="before")
    @classmethod
    def _share(cls, data: Any) -> Any:
        """One root, one world, one output for every stage: the stages' own copies are filled from the top,
        and a teacher recipe fills distill.judge / distill.pool."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for section, keys in OWNED.items():
            sub = data.get(section)
            if isinstance(sub, BaseModel):
                sub = sub.model_dump(mode="json", exclude_unset=True)
            sub = dict(sub or {})
            ours = {"root": data.get("root"), "dataset": data.get("root"), "world": _world(data.get("world"))}
            clash = [k for k in keys if sub.get(k) not in (None, {})
                     and (k not in ours or (_world(sub[k]) if k == "world" else sub[k]) != ours[k])]
            if clash:
                raise ValueError(f"{section}.{clash[0]} is set by the pipeline; set `root`, `world` or `output` at the top")
            if section == "distill":
                sub["root"] = data.get("root")
                # a pipeline serves one student: the served arm alone, one training seed, unless set
                sub.setdefault("presets", [data.get("serve_preset") or "default"])
                sub.setdefault("seeds", 1)
                # the student ceiling (a teacher budget far beyond the arms') is a research row, not a product stage
                sub["eval"] = {"student_ceiling": False, **dict(sub.get("eval") or {})}
                if data.get("teacher"):
                    recipe = _read_teacher(data["teacher"])
                    for key in ("judge", "pool"):
                        if key in recipe and key not in sub:
                            sub[key] = recipe[key]
            else:
                sub["dataset"] = data.get("root")
            if data.get("world") is not None:
                sub["world"] = data["world"]
            data[section] = sub
        return data

    @model_validator(mode="after")
    def _preset_runs(self) -> "PipelineConfig":
        if self.serve_preset not in self.distill.presets:
            raise ValueError(f"serve_preset {self.serve_preset!r} is not among distill.presets {self.distill.presets}")
        return self

    def output_uri(self) -> str:
        if self.output:
            return _absolute(self.output)
        from distill.world.build import home

        return _absolute(storage.join(home(), "pipelines", self.name))


def _world(value: Any) -> dict[str, Any]:
    """A world setting as a plain dict (a dumped config repeats it in every section)."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    return WorldConfig.model_validate(value or {}).model_dump(mode="json")


def _read_teacher(uri: str) -> dict[str, Any]:
    path = uri if storage.exists(uri) or os.path.isabs(uri) else str(REPO_ROOT / uri)
    if not storage.exists(path):
        raise ValueError(f"teacher recipe {uri!r} does not exist")
    recipe = yaml.safe_load(storage.read_bytes(path)) or {}
    if not isinstance(recipe, dict) or "judge" not in recipe:
        raise ValueError(f"teacher recipe {uri!r} has no `judge` section")
    return recipe


def _absolute(uri: str) -> str:
    return uri if "://" in uri else os.path.abspath(os.path.expanduser(uri))


def _key(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


# ---- the run's state: stage records and the checkpoint registry ------------------------------------

class StageRecord(BaseModel):
    key: str = Field(description="hash of the stage's settings and the ids it consumed")
    outputs: dict[str, Any]
    seconds: float


class PipelineState(BaseModel):
    stages: dict[str, StageRecord] = Field(default_factory=dict)
    checkpoints: dict[str, str] = Field(default_factory=dict, description="checkpoint_id -> checkpoint directory URI")

    @classmethod
    def load(cls, output: str) -> "PipelineState":
        uri = storage.join(output, STATE_FILE)
        return cls.model_validate(storage.read_json(uri)) if storage.exists(uri) else cls()

    def save(self, output: str) -> None:
        storage.write_json_atomic(self.model_dump(mode="json"), storage.join(output, STATE_FILE))

    def register(self, uri: str) -> str:
        """Record a checkpoint directory under its id (read from its student.json); returns the id."""
        from distill.student import read_checkpoint_meta

        ckpt_id = read_checkpoint_meta(uri)["checkpoint_id"]
        self.checkpoints[ckpt_id] = _absolute(uri)
        return ckpt_id

    def checkpoint(self, ckpt_id: str) -> str:
        """The directory of checkpoint ``ckpt_id``, checked to hold exactly those weights."""
        from distill.student import read_checkpoint_meta

        uri = self.checkpoints.get(ckpt_id)
        if uri is None:
            raise PipelineError(f"checkpoint {ckpt_id[:16]} is not in this pipeline's registry")
        if read_checkpoint_meta(uri).get("checkpoint_id") != ckpt_id:
            raise PipelineError(f"{uri} no longer holds checkpoint {ckpt_id[:16]}")
        return uri


# ---- stages -----------------------------------------------------------------------------------------

def _stage(name: str, key: str, state: PipelineState, output: str, progress: bool,
           run: Callable[[], dict[str, Any]], still_valid: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """Run a stage, or reuse its record when its key matches and its outputs still exist."""
    done = state.stages.get(name)
    if done is not None and done.key == key and still_valid(done.outputs):
        if progress:
            print(f"[pipeline] {name}: reused ({_summary(done.outputs)})", flush=True)
        return done.outputs
    if progress:
        print(f"[pipeline] {name}: running", flush=True)
    started = time.perf_counter()
    outputs = run()
    state.stages[name] = StageRecord(key=key, outputs=outputs, seconds=round(time.perf_counter() - started, 1))
    state.save(output)
    if progress:
        print(f"[pipeline] {name}: done in {state.stages[name].seconds:.0f} s ({_summary(outputs)})", flush=True)
    return outputs


def _summary(outputs: dict[str, Any]) -> str:
    return ", ".join(f"{k}={str(v)[:16] if k.endswith('_id') else v}" for k, v in outputs.items()
                     if not isinstance(v, (dict, list)))


def stage_data(cfg: PipelineConfig) -> dict[str, Any]:
    """The dataset root, checked for every split the later stages read, or the demo world."""
    from distill.datasets import resolve_root

    root, demo = resolve_root(cfg.root, cfg.world, "pipeline", catalog=("train", "val", "test"),
                              personas=("train", "val", "test"))
    return {"root": _absolute(root), "demo": demo}


def stage_start(cfg: PipelineConfig, root: str, output: str, state: PipelineState) -> dict[str, Any]:
    from distill.distill_job import ensure_pretrained

    if cfg.start == "caption_pretrain":
        uri = ensure_pretrained(_distill_config(cfg, root, output, None), root)
    else:
        import torch

        from distill.student import build_student

        student_cfg = cfg.distill.pretrain.student
        if not student_cfg.pretrained and not student_cfg.arch.startswith("hf-hub:"):
            raise PipelineError("start=pretrained needs distill.pretrain.student.pretrained (an open_clip tag such as "
                                "laion2b_s34b_b79k, or a checkpoint file)")
        torch.manual_seed(cfg.distill.pretrain.seed)
        student = build_student(student_cfg)
        uri = storage.join(output, "start", student.checkpoint_id[:16])
        from distill.student import STUDENT_JSON

        if not storage.exists(storage.join(uri, STUDENT_JSON)):
            student.save(uri, extra={"start": "pretrained", "arch": student_cfg.arch,
                                     "pretrained": student_cfg.pretrained})
    return {"checkpoint_id": state.register(uri)}


def _distill_config(cfg: PipelineConfig, root: str, output: str, start_uri: str | None) -> DistillJobConfig:
    return cfg.distill.model_copy(update={"root": None if cfg.root is None else root,
                                          "output": storage.join(output, "distill"), "start_checkpoint": start_uri})


def stage_distill(cfg: PipelineConfig, root: str, output: str, state: PipelineState, start_id: str) -> dict[str, Any]:
    from distill.distill_job import run

    report = run(_distill_config(cfg, root, output, state.checkpoint(start_id)))
    # one checkpoint per arm and training seed; the served one is the arm's first seed (distill.seed)
    ids = {preset: [state.register(uri) for uri in uris] for preset, uris in report["checkpoints"].items()}
    mpr = {row["model"]: row.get("mpr") for row in report["rows"]}
    if cfg.progress:
        print(report["table"], flush=True)
    return {"checkpoint_id": ids[cfg.serve_preset][0], "preset": cfg.serve_preset, "seed": report["seeds"][0],
            "checkpoint_ids": ids, "eval_split": report["split"], "mpr": mpr}


def stage_index(cfg: PipelineConfig, root: str, output: str, state: PipelineState, ckpt_id: str) -> dict[str, Any]:
    from serving.pipeline import run_index_job

    index_cfg = cfg.index.model_copy(update={"dataset": root, "output": storage.join(output, "index"),
                                             "checkpoint": state.checkpoint(ckpt_id)})
    manifest = run_index_job(index_cfg, progress=cfg.progress)
    if manifest.checkpoint_hash != ckpt_id:
        raise PipelineError(f"the index was built with checkpoint {manifest.checkpoint_hash[:16]}, not {ckpt_id[:16]}")
    return {"index_root": storage.join(output, "index"), "version": manifest.version, "checkpoint_id": ckpt_id,
            "n_items": manifest.n_items}


def _template_path(template: str) -> str:
    if storage.exists(template) or "://" in template or os.path.isabs(template):
        return template
    return str(REPO_ROOT / template)


def serve_config(cfg: PipelineConfig, index: dict[str, Any]) -> dict[str, Any]:
    """The Serve config: the template's, with every app that builds the search app pointed at this
    pipeline's index version (validated by Ray's ``ServeDeploySchema``)."""
    from ray.serve.schema import ServeDeploySchema

    path = _template_path(cfg.serve.template)
    if not storage.exists(path):
        raise PipelineError(f"serve.template {cfg.serve.template!r} does not exist")
    config = yaml.safe_load(storage.read_bytes(path))
    apps = [a for a in config.get("applications", []) if a.get("import_path") == "serving.app:build_app"]
    if not apps:
        raise PipelineError(f"serve.template {cfg.serve.template!r} has no application with serving.app:build_app")
    for app in apps:
        app["args"] = {**(app.get("args") or {}), "index_root": index["index_root"], "index_version": index["version"],
                       "checkpoint": None}
    http = dict(config.get("http_options") or {})
    if cfg.serve.host:
        http["host"] = cfg.serve.host
    if cfg.serve.port:
        http["port"] = cfg.serve.port
    config["http_options"] = http
    ServeDeploySchema.model_validate(config)
    return config


def deploy(config: dict[str, Any]) -> str:
    """Start the apps of a Serve config on the current Ray (or update them in place); returns the URL."""
    import importlib

    from ray import serve
    from ray.serve.schema import ServeDeploySchema

    from distill.ray_utils import init_ray

    schema = ServeDeploySchema.model_validate(config)
    init_ray()
    http = schema.http_options
    serve.start(http_options={"host": http.host, "port": http.port})
    for app in schema.applications:
        module, _, attr = app.import_path.partition(":")
        builder = getattr(importlib.import_module(module), attr)
        serve.run(builder(app.args), name=app.name, route_prefix=app.route_prefix, blocking=False)
    return f"http://{http.host}:{http.port}"


def run(cfg: PipelineConfig) -> dict[str, Any]:
    """All stages in order; returns every stage's outputs and the Serve config's location."""
    import ray

    output = cfg.output_uri()
    state = PipelineState.load(output)
    own_ray = not ray.is_initialized() and not os.environ.get("RAY_ADDRESS")
    data = _stage("data", _key(cfg.root, cfg.world.model_dump(mode="json")), state, output, cfg.progress,
                  lambda: stage_data(cfg), lambda o: storage.exists(o["root"]))
    root = data["root"]
    start_settings = cfg.distill.pretrain.model_dump(mode="json")
    start = _stage("start", _key(cfg.start, start_settings, root), state, output, cfg.progress,
                   lambda: stage_start(cfg, root, output, state), lambda o: o["checkpoint_id"] in state.checkpoints)
    distill_settings = cfg.distill.model_dump(mode="json", exclude={"root", "world", "output", "start_checkpoint",
                                                                    "progress"})
    distilled = _stage("distill", _key(distill_settings, start["checkpoint_id"], root, cfg.serve_preset), state,
                       output, cfg.progress, lambda: stage_distill(cfg, root, output, state, start["checkpoint_id"]),
                       lambda o: o["checkpoint_id"] in state.checkpoints)
    ckpt_id = distilled["checkpoint_id"]
    index_settings = cfg.index.model_dump(mode="json", exclude={"dataset", "world", "output", "checkpoint"})
    index = _stage("index", _key(index_settings, ckpt_id, root), state, output, cfg.progress,
                   lambda: stage_index(cfg, root, output, state, ckpt_id),
                   lambda o: storage.exists(storage.join(o["index_root"], "versions", o["version"])))
    config = serve_config(cfg, index)
    serve_uri = storage.join(output, "serve.yaml")
    storage.write_bytes_atomic(yaml.safe_dump(config, sort_keys=False).encode(), serve_uri)
    result = {"output": output, "root": root, "start_checkpoint_id": start["checkpoint_id"],
              "checkpoint_id": ckpt_id, "checkpoint": state.checkpoint(ckpt_id), "index": index,
              "serve_config": serve_uri, "mpr": distilled.get("mpr"), "url": None}
    state.stages["serve"] = StageRecord(key=_key(config), outputs={"serve_config": serve_uri,
                                                                   "deployed": cfg.deploy}, seconds=0.0)
    state.save(output)
    if cfg.deploy:
        result["url"] = deploy(config)
        block = cfg.serve.block if cfg.serve.block is not None else own_ray
        if cfg.progress:
            print(f"[pipeline] serve: {result['url']} serves checkpoint {ckpt_id[:16]} "
                  f"(index version {index['version']})", flush=True)
        if block:
            print("[pipeline] serving until interrupted (Ctrl-C)", flush=True)
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                pass
    return result
