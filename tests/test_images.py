"""The container images (cluster/Dockerfile.gpu, .cpu, .index-gpu) against pyproject.toml.

The images cannot be built here (no Docker engine), so what they install is read from their
``pip install`` lines, with the extras they name expanded from pyproject.toml (``--no-deps``
installs of the project add nothing; ``-r <file>`` reads the file the Dockerfile writes with
scripts/project_requirements.py) and checked: every pin lies within the project's own ranges,
the GPU image holds the exact torch pair vLLM pins, the CPU and FAISS GPU images the pair the
tests run (Makefile), one CUDA stack per image, and no image installs faiss-cpu and faiss-gpu
together (both write the same ``faiss`` package): faiss-gpu lives only in the index-gpu image.
"""

from __future__ import annotations

import importlib.util
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
IMAGES = {"gpu": REPO / "cluster" / "Dockerfile.gpu", "cpu": REPO / "cluster" / "Dockerfile.cpu",
          "index-gpu": REPO / "cluster" / "Dockerfile.index-gpu"}
# the FAISS package each image must hold, and only that one
FAISS = {"gpu": "faiss-cpu", "cpu": "faiss-cpu", "index-gpu": "faiss-gpu"}


def _script():
    spec = importlib.util.spec_from_file_location("project_requirements", REPO / "scripts" / "project_requirements.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


PROJECT_REQUIREMENTS = _script()


def _run_text(dockerfile: Path) -> list[str]:
    """The Dockerfile's RUN instructions, continuations joined."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    return [line[len("RUN "):] for line in text.splitlines() if line.startswith("RUN ")]


def _pip_installs(dockerfile: Path) -> list[list[str]]:
    """The arguments of every ``pip install`` in the Dockerfile's RUN instructions."""
    found = []
    for run in _run_text(dockerfile):  # `pip install <args>` up to the next unquoted &&, ||, ; or )
        for args in re.findall(r"""\bpip install((?:[^&|;)"']|"[^"]*"|'[^']*')*)""", run):
            found.append(shlex.split(args))
    return found


def _requirements_file(dockerfile: Path, name: str) -> list[str]:
    """The requirements of ``-r <name>``: the Dockerfile must write that file with
    ``scripts/project_requirements.py [--drop X ...] > <name>`` (pyproject's dependencies minus X);
    a file made any other way cannot be read here, so it fails the check instead of being ignored."""
    for run in _run_text(dockerfile):
        for args, target in re.findall(r"project_requirements\.py((?:\s+[^\s>&|;]+)*)\s*>\s*([^\s&|;]+)", run):
            if target == name:
                drop = PROJECT_REQUIREMENTS.arguments().parse_args(shlex.split(args)).drop
                return PROJECT_REQUIREMENTS.project_requirements(REPO / "pyproject.toml", drop)
    raise AssertionError(f"{dockerfile.name}: `pip install -r {name}` but no `project_requirements.py ... > {name}` "
                         "writes it: the test cannot see what that file installs")


def _requirements(dockerfile: Path) -> list[Requirement]:
    """Every requirement an image installs: pinned names, the project's dependencies and extras
    (none with ``--no-deps``) and the requirements files it generates."""
    reqs: list[Requirement] = []
    for args in _pip_installs(dockerfile):
        no_deps = "--no-deps" in args
        skip = False
        for i, arg in enumerate(args):
            if skip:
                skip = False
                continue
            if arg in ("-r", "--requirement"):
                reqs += [Requirement(r) for r in _requirements_file(dockerfile, args[i + 1])]
                skip = True
                continue
            if arg in ("--index-url", "--extra-index-url", "-c", "--constraint"):
                skip = True
                continue
            if arg.startswith("-"):
                continue
            if arg.startswith("."):
                if no_deps:  # the project alone: its dependencies come from elsewhere in the file
                    continue
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
    """faiss-cpu and faiss-gpu both write the ``faiss`` module: whichever is installed last wins,
    silently. faiss-gpu is in the index-gpu image alone, faiss-cpu in the other two."""
    names = {r.name.lower() for r in _requirements(IMAGES[flavour])}
    faiss = {n for n in names if n.startswith("faiss")}
    assert faiss == {FAISS[flavour]}, f"{flavour} image installs {faiss}, not just {FAISS[flavour]}"
    assert "test \"$(pip list 2>/dev/null | grep -ci '^faiss-')\" = 1" in IMAGES[flavour].read_text(), \
        "the build itself refuses two faiss packages"


def test_index_gpu_image_is_the_cpu_image_with_faiss_gpu_and_one_cuda_stack():
    """The FAISS GPU image: one CUDA stack, CUDA 12 from faiss-gpu's nvidia-*-cu12 wheels; torch is
    the CPU build of the pair the tests run (a CUDA torch would be a second stack), no vLLM."""
    text = IMAGES["index-gpu"].read_text()
    reqs = _requirements(IMAGES["index-gpu"])
    pins = _pins(reqs)
    # the same FAISS release line as the faiss-cpu that loads these shards in the Serve pods: a shard
    # serialised by one faiss must deserialise in the other, so the pin lies in pyproject's faiss-cpu range
    faiss_cpu = next(Requirement(r) for r in PYPROJECT["project"]["dependencies"] if Requirement(r).name == "faiss-cpu")
    assert len(pins["faiss-gpu"]) == 1
    assert faiss_cpu.specifier.contains(next(iter(pins["faiss-gpu"]))), \
        f"faiss-gpu {pins['faiss-gpu']} outside pyproject's faiss-cpu {faiss_cpu.specifier}"
    make_pair = dict(re.findall(r"(torch|torchvision)==(\S+)", (REPO / "Makefile").read_text()))
    assert pins["torch"] == {make_pair["torch"]} and pins["torchvision"] == {make_pair["torchvision"]}
    assert "download.pytorch.org/whl/cpu" in text, "CPU torch wheels: torch brings no CUDA"
    assert "torch.version.cuda is None" in text, "the build checks torch has no CUDA"
    assert "hasattr(faiss, 'StandardGpuResources')" in text, \
        "the build checks faiss is a GPU build (faiss-cpu has get_num_gpus too; only GPU builds have GPU resources)"
    names = {r.name.lower() for r in reqs}
    assert "vllm" not in names and not any(n.startswith("nvidia-") for n in names), "no second CUDA stack"
    assert re.search(r"!\s*pip show vllm", text), "the build refuses vLLM"
    # every other project dependency is installed: the project goes in with --no-deps
    assert any("--no-deps" in args and any(a.startswith(".") for a in args) for args in _pip_installs(IMAGES["index-gpu"]))
    wanted = {Requirement(r).name.lower() for r in PYPROJECT["project"]["dependencies"]} - {"faiss-cpu"}
    assert wanted <= names, f"project dependencies the index-gpu image misses: {sorted(wanted - names)}"
    assert _base(IMAGES["index-gpu"]) == _base(IMAGES["cpu"]), "same Ray, same Python in every pod"
    assert "import distill, serving.index" in text, "the build imports what the index tasks run"


def test_project_requirements_prints_pyproject_dependencies_minus_the_dropped():
    deps = PYPROJECT["project"]["dependencies"]
    script = REPO / "scripts" / "project_requirements.py"
    run = subprocess.run([sys.executable, str(script), "--drop", "faiss-cpu"], capture_output=True, text=True, check=True)
    assert run.stdout.splitlines() == [r for r in deps if Requirement(r).name != "faiss-cpu"]
    assert PROJECT_REQUIREMENTS.project_requirements(REPO / "pyproject.toml") == deps
    assert PROJECT_REQUIREMENTS.project_requirements(REPO / "pyproject.toml", ["Faiss_CPU", "emoji"]) == \
        [r for r in deps if Requirement(r).name not in ("faiss-cpu", "emoji")], "PEP 503 names"
    bad = subprocess.run([sys.executable, str(script), "--drop", "faiss-gpu"], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.count("\n") == 1 and "faiss-gpu" in bad.stderr, bad.stderr


def test_parser_sees_what_a_dockerfile_installs(tmp_path):
    """The checks above are only as good as the parser: a Dockerfile that adds faiss-gpu is caught."""
    bad = tmp_path / "Dockerfile"
    bad.write_text(IMAGES["cpu"].read_text().replace('pip install -e . "torch',
                                                     'pip install faiss-gpu==1.15.1 && pip install -e . "torch'))
    names = {r.name.lower() for r in _requirements(bad)}
    assert {"faiss-cpu", "faiss-gpu"} <= names
    # ... and so is the index image's, if its requirements file keeps faiss-cpu or its project install brings it
    for before, after in [("--drop faiss-cpu", "--drop emoji"), ("pip install --no-deps -e .", "pip install -e .")]:
        assert before in IMAGES["index-gpu"].read_text()
        bad.write_text(IMAGES["index-gpu"].read_text().replace(before, after))
        assert {"faiss-cpu", "faiss-gpu"} <= {r.name.lower() for r in _requirements(bad)}, after


def test_parser_reads_no_deps_and_generated_requirements_files(tmp_path):
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text("FROM x\nRUN pip install --no-deps -e . && pip install --no-deps '.[gpu]'\n")
    assert _requirements(dockerfile) == [], "--no-deps: the project alone, none of its dependencies or extras"
    dockerfile.write_text("FROM x\nRUN python scripts/project_requirements.py --drop faiss-cpu onnx > /tmp/r.txt \\\n"
                          " && pip install -r /tmp/r.txt\n")
    names = [r.name.lower() for r in _requirements(dockerfile)]
    deps = [Requirement(r).name.lower() for r in PYPROJECT["project"]["dependencies"]]
    assert names == [n for n in deps if n not in ("faiss-cpu", "onnx")]
    dockerfile.write_text("FROM x\nRUN pip freeze > /tmp/r.txt && pip install -r /tmp/r.txt\n")
    with pytest.raises(AssertionError, match="no `project_requirements.py ... > /tmp/r.txt` writes it"):
        _requirements(dockerfile)
