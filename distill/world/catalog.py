"""The demo catalog: merchandise = article x motif x colour, drawn from a seed.

Why this product space: a title like "green tote bag with a sunflower print" names three
independent factors a persona can care about (what it is, what is on it, which colour),
and each factor is visible in the 112 px image, so a pixel-only student can in principle
learn everything the title-reading teacher knows. Held-out motifs (never in train; each one's
products are all in validation or all in test) measure whether the student generalises beyond
the motifs it was trained on. Validation holds its own held-out motifs in the same proportion as
test, so a recipe tuned on validation is tuned for that part of the gain too, and test (the
lockbox) is not needed to see it.

Everything here is pure and deterministic: specs come from a seeded NumPy generator over a
sorted icon list, and rendering depends only on the spec.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image

from distill.seeding import sample_indices
from distill.world import icons

MOTIF_GROUPS: tuple[str, ...] = ("animals-nature", "food-drink", "activities", "travel-places", "objects")


@dataclass(frozen=True)
class Article:
    """A base product. ``anchor`` is where the motif sits: centre x, centre y, size (fractions)."""

    key: str
    name: str
    icon_hex: str
    anchor: tuple[float, float, float]


ARTICLES: tuple[Article, ...] = (
    Article("tshirt", "t-shirt", "1f455", (0.50, 0.56, 0.36)),
    Article("mug", "mug", "2615", (0.46, 0.62, 0.26)),
    Article("tote-bag", "tote bag", "1f6cd", (0.50, 0.68, 0.38)),
    Article("cap", "cap", "1f9e2", (0.58, 0.44, 0.28)),
    Article("notebook", "notebook", "1f4d3", (0.50, 0.64, 0.36)),
    Article("backpack", "backpack", "1f392", (0.50, 0.52, 0.36)),
    Article("socks", "socks", "1f9e6", (0.60, 0.42, 0.24)),
    Article("scarf", "scarf", "1f9e3", (0.42, 0.60, 0.24)),
    Article("dress", "dress", "1f457", (0.50, 0.76, 0.30)),
    Article("jacket", "jacket", "1f9e5", (0.50, 0.68, 0.28)),
    Article("tank-top", "tank top", "1f3bd", (0.50, 0.68, 0.34)),
    Article("pouch", "pouch", "1f45d", (0.50, 0.74, 0.30)),
)

COLOURS: dict[str, str] = {
    "red": "#d64541",
    "orange": "#f39c12",
    "yellow": "#f4d03f",
    "green": "#27ae60",
    "teal": "#16a5a5",
    "blue": "#2e86de",
    "purple": "#8e44ad",
    "pink": "#f78fb3",
    "brown": "#8d5524",
    "grey": "#95a5a6",
}

BACKGROUND = (250, 250, 250, 255)


@lru_cache(maxsize=1)
def motif_icons() -> tuple[icons.Icon, ...]:
    """Icons eligible as motifs: the motif groups, minus the articles themselves."""
    article_hexes = {a.icon_hex for a in ARTICLES}
    return tuple(i for i in icons.icons_in_groups(MOTIF_GROUPS) if i.hex not in article_hexes)


@lru_cache(maxsize=1)
def articles_by_key() -> dict[str, Article]:
    return {a.key: a for a in ARTICLES}


def indefinite(noun: str) -> str:
    """'a sunflower', 'an owl' (vowel-letter rule; good enough for emoji names)."""
    return ("an " if noun[:1].lower() in "aeiou" else "a ") + noun


def product_title(article: Article, motif: icons.Icon, colour: str) -> str:
    return f"{colour} {article.name} with {indefinite(motif.name)} print"


# The demo's pretraining captions: a title without its colour. The demo teacher reads whole titles,
# so a student caption-pretrained on them already knows everything the teacher does; leaving the
# colour out of the captions gives the teacher privileged knowledge, as a VLM's is over literal
# product captions (README, "Where the result stands").
DEMO_CAPTION_TEMPLATE = "{article} with a {motif} print"


def product_id(article: Article, motif: icons.Icon, colour: str) -> str:
    """Stable across seeds and sizes: the same product always has the same id."""
    return f"p-{article.key}-{motif.hex}-{colour}"


@dataclass(frozen=True)
class ProductSpec:
    """Everything needed to render and describe one product (no pixels)."""

    item_id: str
    title: str
    split: str
    part: str
    article: str
    motif_hex: str
    colour: str
    attributes: dict[str, str]


def _split_names(rng: np.random.Generator, n: int, fractions: tuple[float, float, float]) -> np.ndarray:
    cuts = np.cumsum(np.asarray(fractions) / sum(fractions))
    draws = rng.random(n)
    return np.array(["train", "val", "test"])[np.searchsorted(cuts, draws, side="right").clip(0, 2)]


def draw_products(seed: int, n_products: int, split_fractions: tuple[float, float, float],
                  heldout_motif_fraction: float, parts_per_split: int) -> tuple[list[ProductSpec], dict[str, list[str]]]:
    """Seeded product specs and the held-out motif hexes per split (``{"val": [...], "test": [...]}``).

    Non-held-out products are split by ``split_fractions``. ``heldout_motif_fraction`` of the
    motifs never reach train: they are divided between val and test in proportion to those
    splits' fractions, and every product of a val-held motif goes to val, of a test-held motif to
    test. So val and test are larger than their fractions, by design, and the share of their
    products whose motif is held out is the same in both (in expectation).
    Parts: each split's products, sorted by id, cut into ``parts_per_split`` near-equal parts.
    """
    motifs = motif_icons()
    colours = sorted(COLOURS)
    n_a, n_m, n_c = len(ARTICLES), len(motifs), len(colours)
    total = n_a * n_m * n_c
    if n_products > total:
        raise ValueError(f"n_products={n_products} exceeds the product space {total} "
                         f"({n_a} articles x {n_m} motifs x {n_c} colours)")
    rng = np.random.default_rng([seed, 0])
    n_held = int(round(heldout_motif_fraction * n_m))
    drawn = rng.choice(n_m, size=n_held, replace=False).tolist() if n_held else []
    _, val_frac, test_frac = split_fractions
    n_val = int(round(n_held * val_frac / (val_frac + test_frac))) if val_frac + test_frac > 0 else 0
    held_split = {m: ("val" if i < n_val else "test") for i, m in enumerate(drawn)}
    held = set(held_split)
    picks = sample_indices(total, n_products, rng)
    a_idx, rest = np.divmod(picks, n_m * n_c)
    m_idx, c_idx = np.divmod(rest, n_c)
    splits = _split_names(np.random.default_rng([seed, 1]), n_products, split_fractions)

    rows: list[tuple[str, str, str, str, str, str, dict[str, str]]] = []
    for a, m, c, split in zip(a_idx.tolist(), m_idx.tolist(), c_idx.tolist(), splits.tolist()):
        article, motif, colour = ARTICLES[a], motifs[m], colours[c]
        is_held = m in held
        attributes = {
            "article": article.name, "motif": motif.name, "motif_group": motif.group,
            "motif_subgroup": motif.subgroup, "colour": colour, "heldout_motif": str(is_held).lower(),
        }
        rows.append((product_id(article, motif, colour), product_title(article, motif, colour),
                     held_split[m] if is_held else split, article.key, motif.hex, colour, attributes))

    specs: list[ProductSpec] = []
    for split in ("train", "val", "test"):
        members = sorted((r for r in rows if r[2] == split), key=lambda r: r[0])
        for part, chunk in enumerate(np.array_split(np.arange(len(members)), parts_per_split)):
            for i in chunk.tolist():
                item_id, title, _, a_key, m_hex, colour, attrs = members[i]
                specs.append(ProductSpec(item_id, title, split, f"{split}-{part:05d}", a_key, m_hex, colour, attrs))
    return specs, {sp: sorted(motifs[m].hex for m, where in held_split.items() if where == sp) for sp in ("val", "test")}


def render_product(article_key: str, motif_hex: str, colour: str, size: int) -> bytes:
    """PNG bytes: the article recoloured in ``colour`` with the motif composited on it."""
    article = articles_by_key()[article_key]
    canvas = Image.new("RGBA", (size, size), BACKGROUND)
    base = icons.render_icon(article.icon_hex, size, COLOURS[colour])
    canvas.alpha_composite(base)
    cx, cy, frac = article.anchor
    motif_px = max(8, int(round(frac * size)))
    motif = icons.render_icon(motif_hex, motif_px)
    canvas.alpha_composite(motif, (int(round(cx * size - motif_px / 2)), int(round(cy * size - motif_px / 2))))
    buf = io.BytesIO()
    canvas.convert("RGB").save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def render_batch(batch: dict[str, np.ndarray], size: int) -> dict[str, np.ndarray]:
    """Ray Data ``map_batches`` body: (item_id, article, motif_hex, colour) -> (item_id, image)."""
    images = [render_product(a, m, c, size)
              for a, m, c in zip(batch["article"], batch["motif_hex"], batch["colour"])]
    return {"item_id": np.asarray(batch["item_id"]), "image": np.array(images, dtype=object)}
