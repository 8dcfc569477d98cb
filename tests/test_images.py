"""The container images (cluster/Dockerfile.gpu, cluster/Dockerfile.cpu) against pyproject.toml.

The images cannot be built here (no Docker engine), so what they install is read from their
``pip install`` lines, with the extras they name expanded from pyproject.toml, and checked:
every pin lies within the project's own ranges, the GPU image holds the exact torch pair vLLM
pins, the CPU image the pair the tests run (Makefile), one CUDA stack per image, and no image
installs faiss-cpu and faiss-gpu together (both write the same ``faiss`` package).
"""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
IMAGES = {"gpu": REPO / "cluster" / "Dockerfile.gpu", "cpu": REPO / "cluster" / "Dockerfile.cpu"}


def _pip_installs(dockerfile: Path) -> list[list[str]]:
    """The arguments of every ``pip install`` in the Dockerfile's RUN instructions (continuations joined)."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    runs = [line[len("RUN "):] for line in text.splitlines() if line.startswith("RUN ")]
    found = []
    for run in runs:  # `pip install <args>` up to the next unquoted &&, ||, ; or )
        for args in re.findall(r"""\bpip install((?:[^&|;)"']|"[^"]*"|'[^']*')*)""", run):
            found.append(shlex.split(args))
    return found


def _requirements(dockerfile: Path) -> list[Requirement]:
    """Every requirement an image installs: pinned names plus the project's dependencies and extras."""
    reqs: list[Requirement] = []
    for args in _pip_installs(dockerfile):
        skip = False
        for arg in args:
            if skip:
                skip = False
                continue
            if arg in ("--index-url", "--extra-index-url", "-c", "-r"):
                skip = True
                continue
            if arg.startswith("-") and arg != "-e":
                continue
            if arg == "-e":
                continue
            if arg.startswith("."):
                extras = re.search(r"\[(.*)\]", arg)
                reqs += [Requirement(r) for r in PYPROJECT["project"]["dependencies"]]
                for extra in (extras.group(1).split(",") if extras else []):
                    reqs += [Requirement(r) for r in PYPROJECT["project"]["optional-dependencies"][extra.strip()]]
                continue
            reqs.append(Requirement(arg))
    return [r for r in reqs if r.marker is None or r.marker.evaluate({"platform_machine": "x86_64"})]


def _pins(reqs: list[Requirement]) -> dict[str, set[str]]:
    pins: dict[str, set[str]] = {}
    for r in reqs:
        for spec in r.specifier:
            if spec.operator == "==":
                pins.setdefault(r.name.lower(), set()).add(spec.version)
    return pins


def _base(dockerfile: Path) -> str:
    return re.search(r"^ARG RAY_IMAGE=(\S+)$", dockerfile.read_text(), re.M).group(1)


@pytest.mark.parametrize("flavour", sorted(IMAGES))
def test_image_pins_lie_within_pyproject(flavour):
    reqs = _requirements(IMAGES[flavour])
    ranges = {Requirement(r).name.lower(): Requirement(r) for r in PYPROJECT["project"]["dependencies"]}
    pins = _pins(reqs)
    assert pins, f"{flavour}: no exact pins found"
    for name, versions in pins.items():
        assert len(versions) == 1, f"{flavour} image pins {name} to two versions {versions}"
        version = next(iter(versions))
        if name in ranges:
            assert ranges[name].specifier.contains(version, prereleases=True), \
                f"{flavour} image pins {name}=={version} outside pyproject's {ranges[name].specifier}"
    ray_version = _base(IMAGES[flavour]).split(":")[1].split("-")[0]
    assert ranges["ray"].specifier.contains(ray_version), f"base image Ray {ray_version} vs pyproject {ranges['ray']}"


def test_gpu_image_is_the_gpu_extra_with_one_cuda_stack():
    gpu_extra = {Requirement(r).name.lower(): Requirement(r) for r in PYPROJECT["project"]["optional-dependencies"]["gpu"]}
    pins = _pins(_requirements(IMAGES["gpu"]))
    for name in ("vllm", "torch", "torchvision"):
        extra_pin = {s.version for s in gpu_extra[name].specifier if s.operator == "=="}
        assert pins[name] == extra_pin, f"GPU image {name} {pins[name]} vs the gpu extra's {extra_pin}"
    # the CUDA comes from torch's PyPI wheels (CUDA 13); a CUDA base image would add a second stack
    assert _base(IMAGES["gpu"]).endswith("-cpu"), "base without its own CUDA toolkit"
    text = IMAGES["gpu"].read_text()
    assert "torch.version.cuda.startswith('13.')" in text, "the build checks the one CUDA it ships"
    assert re.search(r"import torchaudio.*\|\| pip uninstall -y torchaudio", text), "no torchaudio that cannot load"


def test_cpu_image_is_slim_and_runs_the_tested_torch_pair():
    pins = _pins(_requirements(IMAGES["cpu"]))
    make_pair = dict(re.findall(r"(torch|torchvision)==(\S+)", (REPO / "Makefile").read_text()))
    assert pins["torch"] == {make_pair["torch"]} and pins["torchvision"] == {make_pair["torchvision"]}
    names = {r.name.lower() for r in _requirements(IMAGES["cpu"])}
    assert "vllm" not in names and not any(n.startswith("nvidia-") for n in names)
    assert "download.pytorch.org/whl/cpu" in IMAGES["cpu"].read_text(), "CPU torch wheels, not the CUDA build"
    assert _base(IMAGES["cpu"]) == _base(IMAGES["gpu"]), "same Ray, same Python in every pod"


@pytest.mark.parametrize("flavour", sorted(IMAGES))
def test_no_image_installs_both_faiss_packages(flavour):
    names = {r.name.lower() for r in _requirements(IMAGES[flavour])}
    faiss = {n for n in names if n.startswith("faiss")}
    assert faiss == {"faiss-cpu"}, f"{flavour} image installs {faiss}"
    assert "test \"$(pip list 2>/dev/null | grep -ci '^faiss-')\" = 1" in IMAGES[flavour].read_text(), \
        "the build itself refuses two faiss packages"


def test_parser_sees_what_a_dockerfile_installs(tmp_path):
    """The checks above are only as good as the parser: a Dockerfile that adds faiss-gpu is caught."""
    bad = tmp_path / "Dockerfile"
    bad.write_text(IMAGES["cpu"].read_text().replace('pip install -e . "torch',
                                                     'pip install faiss-gpu==1.15.1 && pip install -e . "torch'))
    names = {r.name.lower() for r in _requirements(bad)}
    assert {"faiss-cpu", "faiss-gpu"} <= names
