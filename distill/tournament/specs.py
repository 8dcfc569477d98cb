"""Who plays whom: tournament specs from a dataset root (personas x one seeded candidate sample).

The library API every caller of the engine uses to turn a dataset root into ``TournamentSpec``s:
the tournament job, the evaluation sets (``distill.eval_sets``) and the benchmarks. Only the
``item_id`` column of the catalog split is read here; judges get their columns later, for the
sampled candidates only (``payload.py``).
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field

from distill import datasets, storage
from distill.errors import DataError, MissingInputError
from distill.schemas import Split
from distill.seeding import rng_for, sample_rows, seed_for
from distill.tournament.engine import TournamentSpec
from distill.tournament.payload import CatalogSource, read_items, sample_ids
from distill.world import WorldConfig


class DataConfig(BaseModel):
    """Which personas play and which catalog they pick from."""

    model_config = ConfigDict(extra="forbid")
    root: str | None = Field(None, description="Dataset root (from jobs/ingest.py) as a URI; empty = the built-in demo world, built on first use.")
    world: WorldConfig = Field(default_factory=WorldConfig, description="The demo world to build/use when root is empty.")
    persona_split: Split = Field("test", description="Split the personas come from.")
    catalog_split: Split = Field("test", description="Split of the catalog every tournament ranks.")
    persona_ids: list[str] | None = Field(None, description="Play only these personas (overrides max_personas).")
    max_personas: int | None = Field(8, ge=1, description="Play the first N personas of the split (seeded sample); empty = all.")
    max_candidates: int | None = Field(None, ge=1, description="Seeded subsample of the catalog split per run; empty = the whole split.")


def _personas(root: str, cfg: DataConfig, seed: int) -> pa.Table:
    personas = datasets.read_personas(root, split=cfg.persona_split)
    if cfg.persona_ids:
        wanted = set(cfg.persona_ids)
        personas = personas.filter(pc.is_in(personas["persona_id"], pa.array(sorted(wanted))))
        found = set(personas["persona_id"].to_pylist())
        if wanted - found:
            raise DataError(f"data.persona_ids: id(s) not in split {cfg.persona_split!r}: {sorted(wanted - found)[:5]}")
    else:
        personas = sample_rows(personas, cfg.max_personas, rng_for(seed, "personas"))
    if personas.num_rows == 0:
        raise DataError(f"no personas in split {cfg.persona_split!r} of {root!r}")
    return personas


def job_specs(root: str, cfg: DataConfig, seed: int) -> tuple[list[TournamentSpec], CatalogSource]:
    """Tournament specs (every persona against one seeded candidate sample) and where the catalog is.

    Only the ``item_id`` column of the catalog split is read, by one Ray task per part; the
    judge's columns are read later, for the sampled candidates only (``payload.py``). All specs
    share one candidate tuple, so the driver holds personas + candidates, not their product.
    """
    from distill.ray_utils import init_ray

    personas = _personas(root, cfg, seed)
    init_ray()
    source = CatalogSource(datasets.catalog_dir(root), split=cfg.catalog_split)
    if not storage.exists(source.uri):
        raise MissingInputError(f"no catalog under {root!r} (expected {source.uri!r})")
    ids = tuple(sample_ids(source, cfg.max_candidates, seed_for(seed, "candidates")))
    if not ids:
        raise DataError(f"no catalog items in split {cfg.catalog_split!r} of {root!r}")
    specs = [TournamentSpec(tournament_id=pid, persona_id=pid, persona_text=text, candidate_ids=ids)
             for pid, text in zip(personas["persona_id"].to_pylist(), personas["text"].to_pylist())]
    return specs, source


def build_specs(root: str, cfg: DataConfig, seed: int) -> tuple[list[TournamentSpec], pa.Table]:
    """``job_specs`` plus the candidates' rows (item_id, title, image) in memory, for callers that
    need the images themselves at small size (``bench/tournament.py``); everything else passes the
    ``CatalogSource`` to the engine and reads by id."""
    specs, source = job_specs(root, cfg, seed)
    return specs, read_items(source, list(specs[0].candidate_ids), ["title", "image"])
