"""Caption-pretrain the student on the train catalog's image-caption pairs (open_clip's ClipLoss).

    python jobs/pretrain.py                                   # the demo world (colour-free captions), ~2 min on 2 cores
    python jobs/pretrain.py caption_template=''               # the demo world's whole titles as captions
    python jobs/pretrain.py steps=1000 output=s3://bucket/students/pretrained
    ray job submit --working-dir . -- python jobs/pretrain.py root=s3://bucket/shop output=s3://bucket/students/pretrained

The checkpoint (a Student.save directory with its checkpoint_id) is what distillation starts from.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from distill.config import run_job  # noqa: E402
from distill.pretrain import PretrainConfig, PretrainJobConfig, caption_pretrain, default_output  # noqa: E402


def _run(cfg: PretrainJobConfig) -> dict:
    from distill.datasets import resolve_root

    root, _ = resolve_root(cfg.root, cfg.world, "pretrain", catalog=(cfg.split,))
    out = cfg.output or default_output(cfg)
    report = caption_pretrain(PretrainConfig(**cfg.model_dump(exclude={"root", "world", "output"})), root, out)
    print(f"pretrained student: {report['checkpoint']}  checkpoint_id {report['checkpoint_id'][:16]}  "
          f"loss {report['first_loss']:.3f} -> {report['final_loss']:.3f}  {report['seconds']:.0f} s")
    return report


def main(argv: list[str] | None = None) -> dict:
    return run_job(PretrainJobConfig, _run, argv, name="pretrain")


if __name__ == "__main__":
    main()
