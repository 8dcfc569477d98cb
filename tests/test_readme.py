"""The README is the front door: every command, path and link it names must exist and parse."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from distill import docs
from distill.config import build_config

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()
TOP = ("distill", "serving", "jobs", "configs", "cluster", "bench", "tests", "docs", "scripts", ".ci")


def _commands() -> list[str]:
    """Shell lines of the README's bash blocks, continuation lines joined, comments dropped."""
    lines: list[str] = []
    for block in re.findall(r"```bash\n(.*?)```", README, re.S):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            if line and not line.startswith("#"):
                lines.append(line)
    return lines


def _job_commands() -> list[list[str]]:
    out = []
    for line in _commands():
        for part in line.split("&&"):
            words = shlex.split(part)
            if len(words) >= 2 and words[0] == "python" and words[1].startswith("jobs/"):
                out.append(words[1:])
    return out


def test_readme_stays_a_front_door() -> None:
    assert len(README.splitlines()) <= 320, "README.md is the front door: move reference material to docs/"


def test_every_path_the_readme_names_exists() -> None:
    named = set(re.findall(r"`([^`\s]+)`", README)) | set(re.findall(r"\]\(([^)#\s]+)\)", README))
    for line in _commands():
        named |= {w for w in shlex.split(line) if "/" in w and "=" not in w}
    paths = {p.rstrip("/.,:") for p in named if p.split("/")[0] in TOP and "<" not in p and "*" not in p}
    assert len(paths) > 15, paths
    missing = sorted(p for p in paths if not (REPO / p).exists())
    assert missing == [], f"README names paths that do not exist: {missing}"


def test_every_make_target_the_readme_names_exists() -> None:
    makefile = (REPO / "Makefile").read_text()
    targets = set(re.findall(r"^([\w-]+):", makefile, re.M))
    named = set(re.findall(r"`make ([\w-]+)`", README)) | {
        shlex.split(line)[1] for line in _commands() if line.startswith("make ")}
    assert named and named <= targets, named - targets


def _model_of(job: str):
    """The config model a job passes to ``run_job``/``load_config``, imported from the library."""
    import importlib

    text = (REPO / job).read_text()
    name = re.search(r"(?:run_job|load_config)\((\w+)", text).group(1)
    module = re.search(rf"^from ([\w.]+) import [^\n]*\b{name}\b", text, re.M).group(1)
    return getattr(importlib.import_module(module), name)


@pytest.mark.parametrize("words", _job_commands(), ids=lambda w: " ".join(w)[:60])
def test_every_job_command_in_the_readme_parses(words: list[str]) -> None:
    """Each ``python jobs/x.py ...`` line names a job that exists, and its config file and overrides
    (placeholders like ``<dataset>`` aside) validate against the job's config model."""
    job, args = words[0], words[1:]
    assert (REPO / job).exists(), job
    model = docs.job_config(job) if job in docs.JOB_CONFIGS else _model_of(job)
    yaml_text, overrides = None, []
    it = iter(args)
    for arg in it:
        if arg == "--config":
            yaml_text = (REPO / next(it)).read_text()
        elif "=" in arg and "<" not in arg and "$" not in arg:
            overrides.append(arg)
    build_config(model, yaml_text, overrides)
