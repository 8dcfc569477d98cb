"""The README and the shipped configs stay true to the code."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from distill import docs
from distill.config import build_config
from distill.tournament.job import TournamentJobConfig

REPO = Path(__file__).resolve().parents[1]


def test_config_reference_matches_the_models() -> None:
    text = docs.REFERENCE.read_text()
    assert docs.splice(text, docs.render()) == text, "run: python -m distill.docs --write"


def test_the_library_never_imports_its_entry_points() -> None:
    """distill/ and serving/ are the library; jobs/ are thin scripts over it, never the other way."""
    offenders = [f"{path.relative_to(REPO)}: {line.strip()}"
                 for pkg in ("distill", "serving") for path in (REPO / pkg).rglob("*.py")
                 for line in path.read_text().splitlines()
                 if re.match(r"\s*(from|import)\s+jobs\b", line) or re.search(r"spec_from_file_location\(.*jobs", line)
                 or re.search(r"REPO\s*/\s*job\b", line)]
    assert offenders == []


def test_reference_defaults_are_what_a_run_gets() -> None:
    """A section built by a factory (the presets) or a validator (demo captions) shows its real values."""
    from distill.distill_job import DistillJobConfig

    cells = [re.split(r"(?<!\\)\|", line) for line in docs.config_reference(DistillJobConfig).splitlines()[2:]]
    rows = {c[1].strip(" `"): c[3].strip(" `") for c in cells}  # field -> default (escaped pipes kept)
    cfg = DistillJobConfig()
    assert rows["pad.train.loss"] == repr(cfg.pad.train.loss) == "'bt'"
    assert rows["pad.train.lr"] == repr(cfg.pad.train.lr) != rows["default.train.lr"] == repr(cfg.default.train.lr)
    assert rows["pretrain.caption_template"] == repr(cfg.pretrain.caption_template) != "None"
    assert rows["eval.test_personas"] == "256"


def test_readme_gives_two_setup_commands_and_ci_runs_the_test_one() -> None:
    readme = (REPO / "README.md").read_text()
    block = re.search(r"## Two commands\s+```bash\n(.*?)```", readme, re.S)
    assert block, "README needs the two-command block"
    commands = [line.split("#")[0].strip() for line in block.group(1).splitlines() if line.strip()]
    assert commands == ["make demo", "make test"]
    ci = (REPO / ".ci" / "run").read_text()
    assert [line for line in ci.splitlines() if line.strip() and not line.startswith(("#", "set ", "cd "))] == ["make test"]


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("tournament*.yaml")), ids=lambda p: p.name)
def test_shipped_tournament_configs_parse(path: Path) -> None:
    cfg = build_config(TournamentJobConfig, path.read_text())
    assert cfg.tournament.k >= 2


def test_every_config_file_the_code_and_docs_name_exists() -> None:
    """Docstrings and docs that name a config file under configs/ name one that ships."""
    named = {(path.relative_to(REPO), m) for top in ("jobs", "distill", "serving", "bench", "cluster", "docs", "configs")
             for path in (REPO / top).rglob("*") if path.suffix in (".py", ".md", ".yaml")
             for m in re.findall(r"\bconfigs/[\w./-]+\.ya?ml\b", path.read_text())}
    assert len(named) > 10
    missing = sorted(f"{src}: {cfg}" for src, cfg in named if not (REPO / cfg).exists())
    assert missing == []


def test_evaluation_is_split_by_concern() -> None:
    """Pure metrics, evaluation sets and reporting are separate modules; eval sets reach the
    tournament through the package's library API, never its job module."""
    assert not (REPO / "distill" / "evaluate.py").exists()
    eval_sets = (REPO / "distill" / "eval_sets.py").read_text()
    assert "tournament.job" not in eval_sets and "from distill.tournament import" in eval_sets
    report = (REPO / "distill" / "report.py").read_text()
    assert not re.search(r"^\s*(import|from) (ray|torch|distill\.(embed|student|tournament))\b", report, re.M)
    metrics = (REPO / "distill" / "metrics.py").read_text()
    assert not re.search(r"^\s*(import|from) (ray|torch|distill\.(?!errors))", metrics, re.M)
