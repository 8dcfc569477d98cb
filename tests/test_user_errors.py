"""User errors are one line and exit code 2, from every job; bugs keep their traceback.

Every job runs through ``distill.config.run_job``. The data here is a user's own, ingested for
real: a catalog whose rows all sit in one split (``default_split``), which is what the README's
way produced before ingest learnt the seeded split, and on which every stage must say which split
is empty before it starts any work (no Ray, no output written).
"""

from __future__ import annotations

import importlib.util
import io
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from PIL import Image
from pydantic import BaseModel, Field

from distill import docs
from distill.config import reference_rows, run_job
from distill.errors import UserError
from distill.ingest import IngestConfig, ingest

REPO = Path(__file__).resolve().parents[1]


def _job(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"_user_errors_{name}", REPO / "jobs" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _root(tmp_path: Path, name: str, split: str | None, n_items: int = 6, n_personas: int = 4, **kw) -> str:
    """A user's catalog (no split column) and personas, ingested into ``tmp_path/name``."""
    src = tmp_path / f"{name}-src"
    (src / "img").mkdir(parents=True)
    lines = ["item_id,title"]
    for i in range(n_items):
        buf = io.BytesIO()
        Image.new("RGB", (32, 32), (40 * (i % 6), 90, 200)).save(buf, "PNG")
        (src / "img" / f"p{i}.png").write_bytes(buf.getvalue())
        lines.append(f"p{i},product {i}")
    (src / "items.csv").write_text("\n".join(lines) + "\n")
    (src / "personas.txt").write_text("".join(f"a shopper who likes colour {i}\n" for i in range(n_personas)))
    out = tmp_path / name
    ingest(IngestConfig(catalog_file=str(src / "items.csv"), images_dir=str(src / "img"),
                        personas_file=str(src / "personas.txt"), output=str(out), default_split=split,
                        progress=False, **kw))
    return str(out)


def _fails(job: str, argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """Run a job in-process; it must exit 2 with exactly one line on stderr, which is returned."""
    with pytest.raises(SystemExit) as exit_:
        _job(job).main(argv)
    assert exit_.value.code == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1, err
    assert err[0].startswith(f"{job} failed: ") and "Traceback" not in err[0]
    return err[0]


def test_every_stage_names_the_empty_split_before_any_work(tmp_path: Path, capsys) -> None:
    test_only = _root(tmp_path, "test-only", "test")
    train_only = _root(tmp_path, "train-only", "train")
    cases = [
        ("distill", [f"root={test_only}"], "root=", ["'train', 'val'", "no personas in split(s) 'train', 'val'"]),
        ("pretrain", [f"root={test_only}"], "root=", ["no catalog items in split(s) 'train'"]),
        ("tournament", [f"data.root={test_only}", "data.catalog_split=train"], "data.root=",
         ["no catalog items in split(s) 'train'"]),
        ("evaluate", [f"root={train_only}", "checkpoints={a: /nowhere}"], "root=",  # validation unless eval.final
         ["no catalog items in split(s) 'val'", "no personas in split(s) 'val'"]),
        ("evaluate", [f"root={train_only}", "checkpoints={a: /nowhere}", "eval.final=true"], "root=",
         ["no catalog items in split(s) 'test'", "no personas in split(s) 'test'"]),
        ("index", [f"dataset={test_only}", "split=val"], "dataset=", ["no catalog items in split(s) 'val'"]),
    ]
    for n, (job, argv, start, needles) in enumerate(cases):
        out = tmp_path / f"out-{n}"
        line = _fails(job, [*argv, f"output={out}"], capsys)
        assert line.startswith(f"{job} failed: {start}"), line
        assert f"which {job} needs" in line, line
        for needle in needles:
            assert needle in line, line
        assert "jobs/ingest.py" in line and "split_fractions" in line  # how to fix it
        assert not out.exists()  # nothing was started


def test_missing_inputs_and_bad_values_are_one_line(tmp_path: Path, capsys) -> None:
    full = _root(tmp_path, "full", None, n_items=12, n_personas=9,
                 split_fractions={"train": 1, "val": 1, "test": 1})
    nowhere = tmp_path / "nowhere"
    line = _fails("tournament", [f"data.root={nowhere}"], capsys)
    assert f"data.root='{nowhere}' does not exist" in line
    line = _fails("distill", [f"root={full}", f"start_checkpoint={nowhere}", f"output={tmp_path / 'o'}"], capsys)
    assert f"start_checkpoint='{nowhere}' is not a student checkpoint" in line
    line = _fails("evaluate", [f"root={full}", f"checkpoints={{start: {nowhere}}}", f"output={tmp_path / 'e'}"], capsys)
    assert f"checkpoints.start='{nowhere}'" in line
    line = _fails("pool_runs", [f"runs=[{nowhere}]"], capsys)
    assert "hold no eval/report.json" in line
    line = _fails("ingest", ["output=x", "part_size=0"], capsys)
    assert "part_size" in line and "config error" in line
    line = _fails("tournament", ["tournament.k=1"], capsys)
    assert "tournament.k" in line
    line = _fails("tournament", [f"data.root={full}", "data.persona_ids=[nobody]", f"output={tmp_path / 't'}"], capsys)
    assert "data.persona_ids" in line and "nobody" in line


class _Cfg(BaseModel):
    size: int = Field(3, ge=1, description="how many widgets the job makes")


def test_user_errors_exit_2_and_bugs_keep_their_traceback(capsys) -> None:
    def user_mistake(cfg: _Cfg) -> None:
        raise UserError(f"size={cfg.size} widgets do not fit the box")

    with pytest.raises(SystemExit) as exit_:
        run_job(_Cfg, user_mistake, ["size=9"], name="widgets")
    assert exit_.value.code == 2
    assert capsys.readouterr().err == "widgets failed: size=9 widgets do not fit the box\n"

    def bug(cfg: _Cfg) -> None:
        raise KeyError("a bug")

    with pytest.raises(KeyError):
        run_job(_Cfg, bug, [], name="widgets")
    assert run_job(_Cfg, lambda cfg: cfg.size * 2, ["size=4"]) == 8


def test_help_lists_every_config_field_with_its_description(capsys) -> None:
    for path in docs.JOB_CONFIGS:
        name = Path(path).stem
        with pytest.raises(SystemExit) as exit_:
            _job(name).main(["--help"])
        assert exit_.value.code == 0
        out = capsys.readouterr().out
        assert "config fields" in out
        rows = reference_rows(docs.job_config(path))
        assert rows
        for key, kind, default, doc in rows:
            assert f"  {key} (" in out, (name, key)
            assert doc[:40] in out, (name, key, doc)


@pytest.mark.slow
def test_an_output_holding_another_run_is_a_user_error(tmp_path: Path) -> None:
    """The tournament's committed-round store refuses another config's run: exit 2, one line."""
    root = _root(tmp_path, "shop", "test", n_items=8, n_personas=2)
    out = tmp_path / "run"
    common = [sys.executable, str(REPO / "jobs" / "tournament.py"), f"data.root={root}", "judge.kind=random",
              "pool.max_actors=1", f"output={out}", "progress=false"]
    first = subprocess.run([*common, "tournament.k=4"], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert first.returncode == 0, first.stderr[-3000:]
    again = subprocess.run([*common, "tournament.k=2"], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert again.returncode == 2, again.stderr[-3000:]
    assert "Traceback" not in again.stderr
    last = again.stderr.strip().splitlines()[-1]
    assert last.startswith("tournament failed: ") and "other settings" in last and "overwrite" in last


def test_unreadable_config_files_and_overrides_are_user_errors(tmp_path: Path, capsys) -> None:
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("data:\n  root: [unclosed\n")
    line = _fails("tournament", ["--config", str(bad_yaml)], capsys)
    assert f"config file '{bad_yaml}' is not valid YAML" in line and "line 3" in line
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("output: caf\xe9\n".encode("latin-1"))
    assert "is not UTF-8 text" in _fails("ingest", ["--config", str(latin)], capsys)
    line = _fails("distill", ["presets=[pad,"], capsys)
    assert "override 'presets=[pad,'" in line and "not valid YAML" in line
