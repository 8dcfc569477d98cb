"""The README's config reference, generated from the job config models so it cannot drift.

    python -m distill.docs            # print the reference
    python -m distill.docs --write    # rewrite it in README.md between the markers

``tests/test_docs.py`` fails when README.md and the models disagree.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

from pydantic import BaseModel

from distill.config import config_reference

REPO = Path(__file__).resolve().parents[1]
START, END = "<!-- config-reference:start -->", "<!-- config-reference:end -->"

# job file -> name of its config model (each job module has it in its namespace)
JOB_CONFIGS: dict[str, str] = {
    "jobs/world.py": "WorldJobConfig",
    "jobs/ingest.py": "IngestConfig",
    "jobs/tournament.py": "TournamentJobConfig",
    "jobs/pretrain.py": "PretrainJobConfig",
    "jobs/distill.py": "DistillJobConfig",
    "jobs/evaluate.py": "EvaluateJobConfig",
    "jobs/pool_runs.py": "PoolRunsConfig",
    "jobs/index.py": "IndexJobConfig",
}


def job_config(job: str) -> type[BaseModel]:
    """Import a job file by path (its ``main`` is guarded) and return its config model."""
    path = REPO / job
    spec = importlib.util.spec_from_file_location(f"_job_{path.stem}", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # lets pydantic resolve the module's postponed annotations
    spec.loader.exec_module(module)
    return getattr(module, JOB_CONFIGS[job])


def render() -> str:
    parts = []
    for job in JOB_CONFIGS:
        model = job_config(job)
        doc = (model.__doc__ or "").strip().splitlines()[0]
        parts.append(f"#### `{job}` ({model.__name__})\n\n{doc}\n\n{config_reference(model)}\n")
    return "\n".join(parts)


def splice(readme: str, reference: str) -> str:
    if START not in readme or END not in readme:
        raise ValueError(f"README.md lacks the markers {START} ... {END}")
    head, rest = readme.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{reference}\n{END}{tail}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--write", action="store_true", help="update README.md in place")
    args = parser.parse_args()
    reference = render()
    if args.write:
        readme = REPO / "README.md"
        readme.write_text(splice(readme.read_text(), reference))
    else:
        print(reference)


if __name__ == "__main__":
    main()
