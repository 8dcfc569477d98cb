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

from distill.config import load_config  # noqa: E402
from distill.ingest import IngestConfig, IngestError, ingest  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    cfg = load_config(IngestConfig, argv)
    try:
        report = ingest(cfg)
    except IngestError as err:
        print(f"ingest failed: {err}", file=sys.stderr)
        return 2
    print(report.summary())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
