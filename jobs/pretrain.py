"""Caption-pretrain the student on the train catalog's image-caption pairs (open_clip's ClipLoss).

    python jobs/pretrain.py                                   # the demo world (colour-free captions), ~2 min on 2 cores
    python jobs/pretrain.py caption_template=''               # the demo world's whole titles as captions
    python jobs/pretrain.py steps=1000 output=s3://bucket/students/pretrained
    ray job submit --working-dir . -- python jobs/pretrain.py --config configs/pretrain.yaml

The checkpoint (a Student.save directory with its checkpoint_id) is what distillation starts from.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pydantic import ConfigDict, Field, model_validator  # noqa: E402

from distill.config import load_config  # noqa: E402
from distill.pretrain import PretrainConfig, caption_pretrain, with_demo_captions  # noqa: E402
from distill.world import WorldConfig  # noqa: E402


class PretrainJobConfig(PretrainConfig):
    """jobs/pretrain.py: contrastive image-title pretraining of the student."""

    model_config = ConfigDict(extra="forbid")
    root: str | None = Field(None, description="dataset root URI; empty = the built-in demo world")
    world: WorldConfig = Field(default_factory=WorldConfig, description="demo world used when root is empty")
    output: str | None = Field(None, description="checkpoint URI; empty = $PERSONA_DISTILL_HOME/students/pretrained-<world hash>")

    @model_validator(mode="before")
    @classmethod
    def _demo_captions(cls, data):
        """Without a dataset root: the demo world and its colour-free captions (as jobs/distill.py)."""
        return with_demo_captions(data) if isinstance(data, dict) and not data.get("root") else data


def default_output(cfg: PretrainJobConfig) -> str:
    import hashlib
    import json

    from distill import storage
    from distill.world.build import home

    digest = hashlib.blake2b(json.dumps(cfg.model_dump(mode="json", exclude={"output", "log_every"}),
                                        sort_keys=True).encode(), digest_size=4).hexdigest()
    return storage.join(home(), "students", f"pretrained-{digest}")


def main(argv: list[str] | None = None) -> None:
    cfg = load_config(PretrainJobConfig, argv)
    from distill.world import ensure_world

    root = cfg.root or ensure_world(cfg.world)
    out = cfg.output or default_output(cfg)
    report = caption_pretrain(PretrainConfig(**cfg.model_dump(exclude={"root", "world", "output"})), root, out)
    print(f"pretrained student: {report['checkpoint']}  checkpoint_id {report['checkpoint_id'][:16]}  "
          f"loss {report['first_loss']:.3f} -> {report['final_loss']:.3f}  {report['seconds']:.0f} s")


if __name__ == "__main__":
    main()
