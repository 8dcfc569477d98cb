"""The test suite's own wiring: `make test` runs two pytest-xdist workers, a file at a time."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_make_test_runs_two_xdist_workers_by_file() -> None:
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"^PYTEST_WORKERS \?= 2$", makefile, re.M)
    assert "--dist loadfile" in makefile, "a file's tests share module fixtures: keep them on one worker"
    test_recipe = re.search(r"^test: .*\n\t(.*)$", makefile, re.M).group(1)
    assert "pytest $(XDIST)" in test_recipe
    dev = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["dev"]
    assert any(d.startswith("pytest-xdist") for d in dev), "make setup must install pytest-xdist"
