"""A wheel install carries what the library reads at run time (student configs, judge prompts)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_a_wheel_install_resolves_the_shipped_student_configs_and_prompts(tmp_path: Path) -> None:
    src = tmp_path / "src"  # a copy, so the build leaves no build/ or egg-info in the checkout
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(".git", ".venv*", ".cache", "build", "*.egg-info",
                                                            "__pycache__", ".pytest_cache", "outputs", "data"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path / "dist"), str(src)], check=True, timeout=300)
    wheel = next((tmp_path / "dist").glob("persona_distill-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for shipped in (*sorted((REPO / "distill" / "model_configs").glob("*.json")),
                    *sorted((REPO / "distill" / "judges" / "prompts").glob("*.txt"))):
        assert str(shipped.relative_to(REPO)) in names, f"{shipped.name} is not in the wheel"

    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
                   check=True, timeout=300)
    # From outside the checkout, with only the installed wheel providing `distill`.
    probe = ("import distill, pathlib; from distill.student import StudentConfig, raw_model_cfg; "
             "from distill.judges.vlm import PromptTemplate; "
             "assert pathlib.Path(distill.__file__).is_relative_to(pathlib.Path(r'%s')), distill.__file__; "
             "name, raw = raw_model_cfg(StudentConfig(arch='tiny-test')); assert raw, name; "
             "print(name, PromptTemplate.load('persona_choice_v1').prefix[:20])") % site
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"PYTHONPATH": str(site)}
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
