"""One run identity: which fields identify a run, one readable folder name, one home."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from distill.config import build_config
from distill.cycles import CycleConfig, recipe
from distill.distill_job import DistillJobConfig
from distill.pretrain import PretrainJobConfig, default_output
from distill.runs import home, identity, identity_hash, run_folder
from distill.tournament.job import TournamentJobConfig
from serving.pipeline import IndexJobConfig
from serving.pipeline import default_output as index_output

REPO = Path(__file__).resolve().parents[1]


def test_home_is_the_default_when_unset_or_empty(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("PERSONA_DISTILL_HOME", "")
    assert home().endswith("/.cache/persona-distill")
    monkeypatch.setenv("PERSONA_DISTILL_HOME", str(tmp_path))
    assert home() == str(tmp_path)
    from distill.world.build import default_root
    from distill.world import WorldConfig

    assert default_root(WorldConfig()).startswith(str(tmp_path))


@pytest.mark.parametrize("model, spread, decides", [
    (TournamentJobConfig, ["pool.max_actors=7", "progress=false", "overwrite=true"], ["tournament.k=4"]),
    (DistillJobConfig, ["pool.max_actors=7", "default.train.num_workers=3", "default.cycles=9"], ["default.train.lr=0.5"]),
    (PretrainJobConfig, ["log_every=3"], ["steps=7"]),
    (IndexJobConfig, ["index.n_shards=5", "embed.batch_size=8", "checkpoint=/elsewhere"], ["split=val"]),
])
def test_spreading_the_work_keeps_the_run_and_deciding_results_changes_it(model, spread, decides, monkeypatch,
                                                                          tmp_path) -> None:
    monkeypatch.setenv("PERSONA_DISTILL_HOME", str(tmp_path))
    folder = {TournamentJobConfig: lambda c: c.output_uri(), DistillJobConfig: lambda c: c.output_uri(),
              PretrainJobConfig: default_output, IndexJobConfig: index_output}[model]
    base = folder(build_config(model, None, []))
    assert folder(build_config(model, None, spread)) == base
    assert folder(build_config(model, None, decides)) != base
    stage = {TournamentJobConfig: "tournament", DistillJobConfig: "distill", PretrainJobConfig: "pretrain",
             IndexJobConfig: "index"}[model]
    assert re.fullmatch(rf"{stage}-demo-[0-9a-f]{{8}}", Path(base).name), base


def test_a_dataset_root_names_the_run() -> None:
    cfg = build_config(TournamentJobConfig, None, ["data.root=s3://bucket/My Shop/"])
    assert Path(cfg.output_uri()).name.startswith("tournament-my-shop-")


def test_identity_drops_nested_execution_fields_and_is_order_free() -> None:
    cfg = build_config(DistillJobConfig, None, [])
    ident = identity(cfg)
    assert "pool" not in ident and "output" not in ident and "cycles" not in ident["default"]
    assert "num_workers" not in ident["default"]["train"] and "lr" in ident["default"]["train"]
    assert identity_hash(cfg) == identity_hash(DistillJobConfig.model_validate(cfg.model_dump()))
    assert run_folder("x", "y", cfg) != run_folder("x", "y", build_config(DistillJobConfig, None, ["pad.seed=1"]))


def test_a_preset_recipe_is_its_identity() -> None:
    """The resume guard of the cycles and the run folder use the same notion of identity."""
    a, b = CycleConfig(), CycleConfig(cycles=9, train={"num_workers": 4})
    assert recipe(a) == recipe(b) == identity(a)
    assert recipe(CycleConfig(train={"lr": 0.1})) != recipe(a)


def test_run_folders_and_home_come_from_one_module() -> None:
    """Default outputs come from distill.runs only (six ad-hoc hashers once disagreed on what counts)."""
    offenders = []
    for path in [*(REPO / "distill").rglob("*.py"), *(REPO / "serving").rglob("*.py"), *(REPO / "jobs").glob("*.py")]:
        if path.name == "runs.py":
            continue
        text = path.read_text()
        if (re.search(r"def home\(", text) or re.search(r"PERSONA_DISTILL_HOME\b[^\n]*environ|environ[^\n]*PERSONA_DISTILL_HOME", text)
                or re.search(r"join\(home\(\),\s*\"(runs|students|indexes)\"", text)):
            offenders.append(str(path.relative_to(REPO)))
    assert offenders == []


def test_one_resolver_for_a_dataset_root_or_the_demo_world() -> None:
    """Only distill.datasets.resolve_root (and the world job, which builds worlds) calls ensure_world."""
    callers = sorted(str(p.relative_to(REPO)) for top in ("distill", "serving", "jobs")
                     for p in (REPO / top).rglob("*.py") if "ensure_world(" in p.read_text()
                     and not p.match("distill/world/*.py"))
    assert callers == ["distill/datasets.py", "jobs/world.py"]


def test_a_user_root_missing_a_split_is_named_before_any_work(tmp_path) -> None:
    import pyarrow as pa

    from distill import datasets
    from distill.errors import UserError
    from distill.schemas import CATALOG_SCHEMA, PERSONA_SCHEMA
    from distill.world import WorldConfig

    root = str(tmp_path / "shop")
    catalog = pa.table({"item_id": ["a"], "title": ["a mug"], "image": [b"x"], "split": ["test"],
                        "attributes": [[]]}, schema=CATALOG_SCHEMA)
    personas = pa.table({"persona_id": ["p"], "text": ["a potter"], "split": ["test"]}, schema=PERSONA_SCHEMA)
    datasets.write_catalog_part(catalog, root, "test-00000")
    datasets.write_personas(personas, root)
    from distill import storage

    storage.write_json_atomic({"kind": "test"}, datasets.manifest_path(root))
    assert datasets.resolve_root(root, WorldConfig(), "evaluate", catalog=("test",)) == (root, False)
    with pytest.raises(UserError, match=r"root=.*'train'.*which pretrain needs"):
        datasets.resolve_root(root, WorldConfig(), "pretrain", catalog=("train",))
