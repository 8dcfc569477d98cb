"""Print the project's dependencies ([project] dependencies of pyproject.toml), one per line, minus
the ones named with ``--drop``.

    python scripts/project_requirements.py --drop faiss-cpu > /tmp/requirements.txt
    pip install -r /tmp/requirements.txt && pip install --no-deps -e .

Why: pip has no way to install a project *without one* of its dependencies. The FAISS GPU image
(cluster/Dockerfile.index-gpu) needs every dependency except ``faiss-cpu``, because it installs
``faiss-gpu`` instead and both packages write the same ``faiss`` module: installed together, the
one installed last silently wins. That image installs the project with ``--no-deps`` and its
dependencies from this list, so the list cannot drift from pyproject.toml.

It needs only the standard library (tomllib, Python >= 3.11) and ``packaging``, which the Ray base
image already has (a Ray dependency): it runs in the image before the project's dependencies are.
A name given to ``--drop`` that is not a dependency is an error (exit 2), so a renamed dependency
cannot make the drop silently do nothing.
"""

from __future__ import annotations

import argparse
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def requirement_name(requirement: str) -> str:
    """The PEP 503 name of a requirement string: ``Faiss_CPU>=1`` and ``faiss-cpu`` name one project."""
    return canonicalize_name(Requirement(requirement).name)


def project_requirements(pyproject: Path = PYPROJECT, drop: list[str] | tuple[str, ...] = ()) -> list[str]:
    """The ``[project] dependencies`` of ``pyproject``, as written, without the ``drop`` names.

    Raises ``KeyError`` naming every ``drop`` entry that is not a dependency."""
    deps = tomllib.loads(Path(pyproject).read_text())["project"]["dependencies"]
    dropped = {canonicalize_name(d) for d in drop}
    unknown = sorted(dropped - {requirement_name(r) for r in deps})
    if unknown:
        raise KeyError(", ".join(unknown))
    return [r for r in deps if requirement_name(r) not in dropped]


def arguments() -> argparse.ArgumentParser:
    """The command line (tests/test_images.py reads a Dockerfile's call with it)."""
    parser = argparse.ArgumentParser(prog="project_requirements.py", description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--drop", nargs="+", action="extend", default=[], metavar="NAME",
                        help="dependencies to leave out (PEP 503 names; each must be a dependency)")
    parser.add_argument("--pyproject", type=Path, default=PYPROJECT, help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = arguments().parse_args(argv)
    try:
        lines = project_requirements(args.pyproject, args.drop)
    except KeyError as err:
        print(f"project_requirements.py: --drop names no dependency of {args.pyproject.name}: {err.args[0]}",
              file=sys.stderr)
        return 2
    sys.stdout.write("".join(f"{line}\n" for line in lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
