"""One command from a dataset (or the demo world) to a served endpoint.

    python jobs/pipeline.py                                     # the demo world, end to end
    python jobs/pipeline.py --deploy                            # ... then serve it (Ctrl-C stops)
    python jobs/pipeline.py --config configs/recipes/vit-b-32-laion2b-pad.yaml root=s3://bucket/shop \\
        teacher=configs/teachers/qwen2.5-vl-7b-h100.yaml
    ray job submit --working-dir . -- python jobs/pipeline.py --config configs/cluster/pipeline-gpu.yaml deploy=true

Stages: data -> start student -> distillation (teacher labels + training + evaluation) -> index of
the whole catalog with the chosen checkpoint -> Serve config (<output>/serve.yaml) -> deploy. A
rerun resumes: finished stages are reused, unfinished ones pick up their own partial work. The
checkpoint moves between stages by its id (<output>/pipeline.json), never by a copied path.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from distill.config import run_job  # noqa: E402
from distill.pipeline import PipelineConfig, run  # noqa: E402


def _run(cfg: PipelineConfig) -> dict:
    result = run(cfg)
    print(f"checkpoint {result['checkpoint_id'][:16]} ({result['checkpoint']})")
    print(f"index {result['index']['version']} at {result['index']['index_root']} ({result['index']['n_items']} items)")
    print(f"serve config: {result['serve_config']}   (serve deploy {result['serve_config']})")
    if result["url"]:
        print(f"serving at {result['url']}")
    return result


def main(argv: list[str] | None = None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    argv = ["deploy=true" if a == "--deploy" else a for a in argv]  # the flag is the override's spelling
    return run_job(PipelineConfig, _run, argv, name="pipeline")


if __name__ == "__main__":
    main()
