"""The config reference (docs/config.md), generated from the job config models so it cannot drift.

    python -m distill.docs            # print the reference
    python -m distill.docs --write    # rewrite docs/config.md between its markers

Every job's config model lives in the library (the job file only parses and calls), so this
module imports library modules, never ``jobs/``. ``tests/test_docs.py`` fails when
docs/config.md and the models disagree.
"""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path

from pydantic import BaseModel

from distill.config import config_reference

REPO = Path(__file__).resolve().parents[1]
REFERENCE = REPO / "docs" / "config.md"
START, END = "<!-- config-reference:start -->", "<!-- config-reference:end -->"

# job file -> "library.module:ConfigModel" (the model its main passes to load_config)
JOB_CONFIGS: dict[str, str] = {
    "jobs/world.py": "distill.world.build:WorldJobConfig",
    "jobs/ingest.py": "distill.ingest:IngestConfig",
    "jobs/tournament.py": "distill.tournament.job:TournamentJobConfig",
    "jobs/pretrain.py": "distill.pretrain:PretrainJobConfig",
    "jobs/distill.py": "distill.distill_job:DistillJobConfig",
    "jobs/evaluate.py": "distill.evaluate_job:EvaluateJobConfig",
    "jobs/pool_runs.py": "distill.evaluate_job:PoolRunsConfig",
    "jobs/index.py": "serving.pipeline:IndexJobConfig",
    "jobs/pipeline.py": "distill.pipeline:PipelineConfig",
}


def job_config(job: str) -> type[BaseModel]:
    """The config model of a job file, imported from the library module that defines it."""
    module, name = JOB_CONFIGS[job].split(":")
    return getattr(importlib.import_module(module), name)


def render() -> str:
    parts = []
    for job in JOB_CONFIGS:
        model = job_config(job)
        doc = (model.__doc__ or "").strip().splitlines()[0]
        parts.append(f"## `{job}` ({model.__name__})\n\n{doc}\n\n{config_reference(model)}\n")
    return "\n".join(parts)


def splice(text: str, reference: str) -> str:
    if START not in text or END not in text:
        raise ValueError(f"{REFERENCE.name} lacks the markers {START} ... {END}")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{reference}\n{END}{tail}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write", action="store_true", help="update docs/config.md in place")
    args = parser.parse_args()
    reference = render()
    if args.write:
        REFERENCE.write_text(splice(REFERENCE.read_text(), reference))
    else:
        print(reference)


if __name__ == "__main__":
    main()
