"""Build (or reuse) a demo world as a dataset root: catalog parts, personas, manifest last.

A world is identified by its config: the default root is
``$PERSONA_DISTILL_HOME/worlds/<name>-<8-hex config hash>``, and ``ensure_world`` rebuilds
only when ``manifest.json`` is missing or records another config. Rendering runs as a Ray
Data ``map_batches`` over product specs (pure functions of the spec), while the driver
writes each catalog part atomically once all its rows have arrived, so the output is
byte-identical whatever order Ray returns batches in.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import defaultdict
from datetime import datetime, timezone
from typing import Iterator, Literal

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, model_validator

from distill import datasets, storage
from distill.runs import home
from distill.schemas import CATALOG_SCHEMA, PERSONA_SCHEMA, SPLITS
from distill.world import catalog, personas

# Bump when a code change alters what a given config produces; it is part of the cache key.
WORLD_FORMAT_VERSION = 2  # 2: validation holds its own held-out motifs

ATTRIBUTION = ("Product images composited from OpenMoji (https://openmoji.org), "
               "the open-source emoji and icon project, licensed CC BY-SA 4.0.")


class SplitFractions(BaseModel):
    """Relative sizes of train / val / test (normalised, so 8/1/1 equals .8/.1/.1)."""

    model_config = ConfigDict(extra="forbid")

    train: float = Field(0.8, ge=0, description="share of products (not held out) and personas in train")
    val: float = Field(0.1, ge=0, description="share in validation (early stopping, model selection)")
    test: float = Field(0.1, ge=0, description="share in test; held-out-motif products are added on top (as in val)")

    @model_validator(mode="after")
    def _positive(self) -> "SplitFractions":
        if self.train + self.val + self.test <= 0:
            raise ValueError("split fractions must not all be zero")
        return self

    def as_tuple(self) -> tuple[float, float, float]:
        return (self.train, self.val, self.test)


class WorldConfig(BaseModel):
    """What a demo world contains. Every field is part of the world's identity (its cache key)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field("demo", min_length=1, pattern=r"^[A-Za-z0-9_.-]+$",
                      description="label used in the default root directory name")
    seed: int = Field(0, description="seed of every random draw (products, splits, held-out motifs, personas)")
    n_products: int = Field(24_000, ge=10, description="distinct products (article x motif x colour) in the catalog")
    n_personas: int = Field(2_400, ge=3, description="distinct template personas")
    image_size: int = Field(112, ge=32, le=512, description="product image side in pixels (PNG)")
    splits: SplitFractions = Field(default_factory=SplitFractions,
                                   description="train/val/test fractions for products and personas")
    heldout_motif_fraction: float = Field(0.2, ge=0, le=0.5, description=(
        "share of motifs never in train: divided between val and test by their fractions (0.2 = 10 % each at "
        "the default fractions), all of one motif's products in one of them"))
    parts_per_split: int = Field(4, ge=1, le=1024, description="Parquet parts written per catalog split")


class WorldManifest(BaseModel):
    """``manifest.json`` of a world root; written last, so it exists only for a complete world."""

    kind: Literal["world"] = "world"
    format_version: int = Field(description="WORLD_FORMAT_VERSION of the code that built it")
    config: WorldConfig = Field(description="the config the world was built from")
    config_hash: str = Field(description="8-hex hash of config and format version (the cache key)")
    catalog_counts: dict[str, int] = Field(description="products per split")
    persona_counts: dict[str, int] = Field(description="personas per split")
    n_motifs: int = Field(description="motifs the products were drawn from")
    heldout_motifs: list[str] = Field(description="held-out motif names (never in train; val's and test's together)")
    heldout_motifs_by_split: dict[str, list[str]] = Field(default_factory=dict, description="the held-out motif names whose products are in val, and in test")
    articles: list[str] = Field(description="base article names")
    colours: list[str] = Field(description="colour names")
    build_seconds: float = Field(description="wall-clock seconds the build took")
    created_at: str = Field(description="UTC ISO-8601 build time")
    attribution: str = Field(ATTRIBUTION, description="image licence notice (OpenMoji, CC BY-SA 4.0)")


def config_hash(cfg: WorldConfig) -> str:
    """8-hex digest of the config and the format version: equal worlds share it."""
    payload = json.dumps({"v": WORLD_FORMAT_VERSION, "config": cfg.model_dump(mode="json")}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:8]


def default_root(cfg: WorldConfig) -> str:
    return storage.join(home(), "worlds", f"{cfg.name}-{config_hash(cfg)}")


def read_manifest(root: str) -> WorldManifest | None:
    """The world manifest at ``root``, or None when absent or not a (current) world manifest."""
    path = datasets.manifest_path(root)
    if not storage.exists(path):
        return None
    try:
        return WorldManifest.model_validate(storage.read_json(path))
    except (ValueError, TypeError):
        return None


def _clear(root: str) -> None:
    """Remove what a previous (possibly partial) build left; the manifest goes first."""
    storage.delete(datasets.manifest_path(root))
    storage.delete(datasets.catalog_dir(root))
    storage.delete(datasets.personas_path(root))
    storage.delete(storage.join(root, "truth"))


def _render_stream(items: list[dict[str, str]], size: int, use_ray: bool,
                   batch_size: int) -> Iterator[dict[str, np.ndarray]]:
    """Batches of (item_id, image) in any order: Ray Data tasks, or in-process when ``use_ray`` is off."""
    if not use_ray:
        for start in range(0, len(items), batch_size):
            chunk = items[start:start + batch_size]
            yield catalog.render_batch({k: np.array([it[k] for it in chunk]) for k in chunk[0]}, size)
        return
    import ray

    from distill.ray_utils import init_ray

    init_ray()
    n_blocks = max(1, min(200, -(-len(items) // batch_size)))
    ds = ray.data.from_items(items, override_num_blocks=n_blocks).map_batches(
        catalog.render_batch, fn_kwargs={"size": size}, batch_size=batch_size, batch_format="numpy")
    yield from ds.iter_batches(batch_size=None, batch_format="numpy")


def _catalog_table(specs: list[catalog.ProductSpec], images: dict[str, bytes]) -> pa.Table:
    return pa.table(
        {
            "item_id": [s.item_id for s in specs],
            "title": [s.title for s in specs],
            "image": [images[s.item_id] for s in specs],
            "split": [s.split for s in specs],
            "attributes": pa.array([list(s.attributes.items()) for s in specs], type=CATALOG_SCHEMA.field("attributes").type),
        },
        schema=CATALOG_SCHEMA,
    )


def build_world(cfg: WorldConfig, root: str, use_ray: bool = True, batch_size: int = 256,
                progress: bool = True) -> WorldManifest:
    """Build the world ``cfg`` at ``root`` from scratch and return its manifest.

    ``use_ray`` and ``batch_size`` change how fast, never what: the tables are identical.
    """
    from tqdm.auto import tqdm

    started = time.perf_counter()
    _clear(root)
    storage.makedirs(root)

    fractions = cfg.splits.as_tuple()
    specs, held_by_split = catalog.draw_products(cfg.seed, cfg.n_products, fractions,
                                              cfg.heldout_motif_fraction, cfg.parts_per_split)
    persona_rows = personas.draw_personas(cfg.seed, cfg.n_personas, fractions)
    datasets.write_personas(
        pa.table({"persona_id": [r[0] for r in persona_rows], "text": [r[1] for r in persona_rows],
                  "split": [r[2] for r in persona_rows]}, schema=PERSONA_SCHEMA), root)

    by_part: dict[str, list[catalog.ProductSpec]] = defaultdict(list)
    part_of: dict[str, str] = {}
    for spec in specs:
        by_part[spec.part].append(spec)
        part_of[spec.item_id] = spec.part
    pending: dict[str, dict[str, bytes]] = defaultdict(dict)
    items = [{"item_id": s.item_id, "article": s.article, "motif_hex": s.motif_hex, "colour": s.colour}
             for s in specs]
    with tqdm(total=len(items), desc=f"world {cfg.name}: rendering", unit="img", disable=not progress) as bar:
        for batch in _render_stream(items, cfg.image_size, use_ray, batch_size):
            for item_id, image in zip(batch["item_id"].tolist(), batch["image"].tolist()):
                part = part_of[str(item_id)]
                pending[part][str(item_id)] = bytes(image)
                if len(pending[part]) == len(by_part[part]):
                    datasets.write_catalog_part(_catalog_table(by_part[part], pending.pop(part)), root, part)
            bar.update(len(batch["item_id"]))
    if pending:
        raise RuntimeError(f"rendering lost products in parts {sorted(pending)}")

    motif_names = {m.hex: m.name for m in catalog.motif_icons()}
    manifest = WorldManifest(
        format_version=WORLD_FORMAT_VERSION,
        config=cfg,
        config_hash=config_hash(cfg),
        catalog_counts={s: sum(1 for p in specs if p.split == s) for s in SPLITS},
        persona_counts={s: sum(1 for r in persona_rows if r[2] == s) for s in SPLITS},
        n_motifs=len(catalog.motif_icons()),
        heldout_motifs=sorted(motif_names[h] for hexes in held_by_split.values() for h in hexes),
        heldout_motifs_by_split={sp: sorted(motif_names[h] for h in hexes) for sp, hexes in held_by_split.items()},
        articles=[a.name for a in catalog.ARTICLES],
        colours=sorted(catalog.COLOURS),
        build_seconds=round(time.perf_counter() - started, 3),
        created_at=datetime.now(timezone.utc).isoformat(),
    )
    storage.write_json_atomic(manifest.model_dump(mode="json"), datasets.manifest_path(root))
    return manifest


def ensure_world(cfg: WorldConfig | None = None, root: str | None = None, use_ray: bool = True,
                 progress: bool = True) -> str:
    """The root of world ``cfg``, building it only if no complete world with that config is there."""
    cfg = cfg or WorldConfig()
    root = root or default_root(cfg)
    with storage.build_lock(root):
        existing = read_manifest(root)
        if (existing is None or existing.format_version != WORLD_FORMAT_VERSION
                or existing.config != cfg):
            build_world(cfg, root, use_ray=use_ray, progress=progress)
    return root


class WorldJobConfig(BaseModel):
    """Build the deterministic demo world (catalog, personas, manifest) into a dataset root."""

    model_config = ConfigDict(extra="forbid")

    world: WorldConfig = Field(default_factory=WorldConfig, description="what the world contains")
    root: str | None = Field(None, description="output dataset root URI; default "
                             "$PERSONA_DISTILL_HOME/worlds/<name>-<config hash>")
    use_ray: bool = Field(True, description="render with Ray Data tasks (False: in-process, same output)")
