"""The deterministic offline demo world: OpenMoji merchandise, template personas, a known utility.

``ensure_world(WorldConfig())`` returns a dataset root (see ``distill.datasets``) holding a
catalog of article x motif x colour products with titles, template personas, and a manifest;
``truth.utility`` scores persona texts against titles with the shipped MiniLM, the hidden
truth the demo's teacher and benchmarks are measured against.
"""

from distill.world.build import (
    SplitFractions,
    WorldConfig,
    WorldJobConfig,
    WorldManifest,
    build_world,
    config_hash,
    default_root,
    ensure_world,
    read_manifest,
)
from distill.world.truth import title_embeddings, utility, world_utility

__all__ = [
    "SplitFractions", "WorldConfig", "WorldJobConfig", "WorldManifest", "build_world", "config_hash", "default_root",
    "ensure_world", "read_manifest", "title_embeddings", "utility", "world_utility",
]
