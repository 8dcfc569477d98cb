"""Ingest a user's own catalog and personas into a dataset root, in one command.

    python jobs/ingest.py catalog_file=shop/items.csv images_dir=shop/img \\
        personas_file=personas.txt output=s3://bucket/datasets/shop
    python jobs/ingest.py --config my-ingest.yaml        # the same fields as a YAML mapping

Fields are documented on ``distill.ingest.IngestConfig``; bad input exits with a message
naming the file and line, and corrupt images are skipped and listed in ingest_report.json.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, no install

from distill.config import run_job  # noqa: E402
from distill.ingest import IngestConfig, IngestReport, ingest  # noqa: E402


def _run(cfg: IngestConfig) -> IngestReport:
    report = ingest(cfg)
    print(report.summary())
    return report


def main(argv: list[str] | None = None) -> int:
    run_job(IngestConfig, _run, argv, name="ingest")  # a bad input: "ingest failed: ...", exit 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
