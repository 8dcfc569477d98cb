"""``distill.storage`` (atomic writes, listing, reading back) and ``distill.config`` (YAML + overrides)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import pyarrow as pa
import pytest
from pydantic import BaseModel, Field

from distill import storage
from distill.config import ConfigError, build_config, config_reference, load_config, parse_overrides

# --------------------------------------------------------------------------- storage


def test_atomic_write_leaves_no_temp_file_and_reads_back(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    uri = str(tmp_path / "deep" / "dir" / "obj.json")
    temps: list[str] = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda src, dst: (temps.append(src), real_replace(src, dst)))
    storage.write_json_atomic({"a": 1, "b": [1, 2]}, uri)
    storage.write_json_atomic({"a": 2}, uri)  # replace in place
    assert storage.read_json(uri) == {"a": 2}
    assert os.listdir(tmp_path / "deep" / "dir") == ["obj.json"]
    # Temps are hidden files beside the target, so dataset readers skip one a crash leaves.
    assert temps and all(os.path.basename(t).startswith(".obj.json.tmp-") for t in temps)
    assert storage.exists(uri) and not storage.exists(str(tmp_path / "nope"))


def test_failed_write_cleans_its_temp_and_keeps_the_old_object(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    uri = str(tmp_path / "obj.bin")
    storage.write_bytes_atomic(b"old", uri)

    def fail(*_a: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", fail)
    with pytest.raises(OSError, match="disk full"):
        storage.write_bytes_atomic(b"new", uri)
    assert storage.read_bytes(uri) == b"old"
    assert os.listdir(tmp_path) == ["obj.bin"]


def test_list_files_and_read_table_skip_temp_files(tmp_path: Path) -> None:
    d = str(tmp_path / "parts")
    for name in ("b", "a"):
        storage.write_table_atomic(pa.table({"x": [1, 2], "y": ["p", "q"]}), storage.join(d, f"{name}.parquet"),
                                   schema=pa.schema([("x", pa.int64())]))
    # What a killed writer leaves behind must not be listed or read.
    (tmp_path / "parts" / ".c.parquet.tmp-deadbeef").write_bytes(b"PAR1 torn")
    table = storage.read_table(d)
    assert table.column_names == ["x"] and table.num_rows == 4  # schema applied on write
    (tmp_path / "parts" / "notes.txt").write_text("x")
    assert storage.list_files(d, ".parquet") == [storage.join(d, "a.parquet"), storage.join(d, "b.parquet")]
    storage.delete(d)
    assert not storage.exists(d) and storage.list_files(d) == []
    storage.delete(d)  # missing is fine


def test_uri_forms(tmp_path: Path) -> None:
    assert storage.join("s3://bucket/prefix", "a", "b.json") == "s3://bucket/prefix/a/b.json"
    uri = (tmp_path / "f.bin").as_uri()
    storage.write_bytes_atomic(b"x", uri)
    assert storage.read_bytes(str(tmp_path / "f.bin")) == b"x"
    fs, path = storage.resolve("relative/thing")
    assert os.path.isabs(path)


# --------------------------------------------------------------------------- config


class Inner(BaseModel):
    k: int = Field(2, ge=2, description="matches size")
    name: str = Field("x", description="a name")
    limit: int | None = Field(10, description="a cap; empty = none")
    label: str | None = Field("l", description="an optional string")


class JobCfg(BaseModel):
    """A test job."""

    out: str = Field(description="where")
    mode: Literal["fast", "slow"] = Field("fast", description="speed")
    inner: Inner = Field(default_factory=Inner, description="nested")
    tags: list[str] = Field(default_factory=list, description="tags")


def test_yaml_and_overrides_merge(tmp_path: Path) -> None:
    cfg = build_config(JobCfg, "out: /a\ninner:\n  k: 3\n  name: y\n", ["inner.k=5", "tags=[a, b]"])
    assert cfg.out == "/a" and cfg.inner.k == 5 and cfg.inner.name == "y" and cfg.tags == ["a", "b"]
    path = tmp_path / "c.yaml"
    path.write_text("out: /from-yaml\nmode: slow\n")
    cfg = load_config(JobCfg, ["out=/early", "--config", str(path), "inner.k=4"])
    assert (cfg.out, cfg.mode, cfg.inner.k) == ("/early", "slow", 4)  # overrides beat YAML
    assert parse_overrides(["a.b=3", "c=", "d=x=y"]) == {"a": {"b": 3}, "c": "", "d": "x=y"}


def test_empty_override_means_none_for_optional_non_string_fields() -> None:
    cfg = build_config(JobCfg, "out: /a\n", ["inner.limit=", "inner.label=", "inner.name="])
    assert cfg.inner.limit is None  # "empty = none", as the config reference says
    assert cfg.inner.label == "" and cfg.inner.name == ""  # strings keep the empty string
    with pytest.raises(ConfigError, match="inner.k"):
        build_config(JobCfg, "out: /a\n", ["inner.k="])  # not optional: still an error


def test_type_errors_name_the_field() -> None:
    with pytest.raises(ConfigError) as err:
        build_config(JobCfg, "out: /a\n", ["inner.k=one", "mode=medium"])
    msg = str(err.value.code)
    assert "inner.k" in msg and "mode" in msg
    with pytest.raises(ConfigError, match="out"):
        build_config(JobCfg, None, [])


@pytest.mark.parametrize("bad", ["no-equals", "=3"])
def test_bad_override_is_a_config_error(bad: str) -> None:
    with pytest.raises(ConfigError, match="override"):
        parse_overrides([bad])


def test_bad_yaml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="mapping"):
        build_config(JobCfg, "- a\n- b\n")
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(JobCfg, ["--config", str(tmp_path / "missing.yaml")])


def test_config_reference_lists_nested_fields() -> None:
    ref = config_reference(JobCfg)
    assert "| `inner.k` | int | `2` | matches size |" in ref
    assert "| `out` | str | `required` | where |" in ref


@pytest.mark.parametrize("job", ["tournament", "distill"])
def test_one_field_of_the_default_judge_can_be_overridden(job: str) -> None:
    """``judge.temperature=0.5`` tunes the default text oracle (it used to fail to pick a union member)."""
    from distill.distill_job import DistillJobConfig
    from distill.tournament.job import TournamentJobConfig

    model = {"tournament": TournamentJobConfig, "distill": DistillJobConfig}[job]
    cfg = build_config(model, None, ["judge.temperature=0.5"])
    assert (cfg.judge.kind, cfg.judge.temperature) == ("text_oracle", 0.5)
    assert build_config(model, "judge: {kind: random}", []).judge.kind == "random"
    with pytest.raises(ConfigError, match="judge"):
        build_config(model, None, ["judge.no_such_field=1"])


def test_ray_data_progress_is_shown_on_long_work() -> None:
    """init_ray used to switch Ray Data's progress bars off; long embedding passes then looked hung."""
    import logging

    import ray

    from distill.ray_utils import show_ray_data_progress

    ctx = ray.data.DataContext.get_current()
    before = ctx.enable_progress_bars
    try:
        show_ray_data_progress()
        assert ctx.enable_progress_bars is True
        assert logging.getLogger("ray.data._internal.progress.logging_progress").isEnabledFor(logging.INFO)
        assert not logging.getLogger("ray.data._internal.execution").isEnabledFor(logging.INFO)
    finally:
        ctx.enable_progress_bars = before


def test_footer_readers_follow_the_files_and_a_users_value_wins(monkeypatch) -> None:
    """One Ray Data footer reader per call's worth of Parquet parts (Ray's RAY_DATA_PARQUET_FOOTER_BATCH_SIZE,
    10 by default), at most one per cluster CPU, set only while the read is created; a value the user
    exported is left alone."""
    from distill import ray_utils

    env = ray_utils.FOOTER_READERS_ENV
    monkeypatch.setattr(ray_utils, "light_task_slots", lambda: 8)  # an 8-CPU cluster, without starting Ray
    monkeypatch.setattr(ray_utils, "_USER_FOOTER_READERS", None)
    monkeypatch.delenv(ray_utils.FOOTER_BATCH_ENV, raising=False)
    monkeypatch.delenv(env, raising=False)
    for n_files, readers in ((0, 1), (1, 1), (10, 1), (11, 2), (25, 3), (1000, 8)):
        with ray_utils.footer_readers_for(n_files):
            assert os.environ[env] == str(readers), n_files
        assert env not in os.environ  # unset again after the read: Ray's own default elsewhere
    monkeypatch.setenv(ray_utils.FOOTER_BATCH_ENV, "4")  # Ray's files per reader call, as the user set it
    monkeypatch.setenv(env, "7")
    with ray_utils.footer_readers_for(11):
        assert os.environ[env] == "3"
    assert os.environ[env] == "7"  # restored
    monkeypatch.setattr(ray_utils, "_USER_FOOTER_READERS", "5")
    monkeypatch.setenv(env, "5")
    with ray_utils.footer_readers_for(1):
        assert os.environ[env] == "5"
