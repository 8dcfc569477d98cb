"""The demo world: icons, catalog, personas, hidden utility, build cache."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from distill import datasets
from distill.world import WorldConfig, build_world, ensure_world, read_manifest, utility
from distill.world import catalog, icons
from distill.world.personas import draw_personas

SMALL = WorldConfig(name="test", n_products=600, n_personas=100)
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def small_world(tmp_path_factory, ray_local) -> str:
    """The small world built through Ray Data, as jobs build it."""
    root = str(tmp_path_factory.mktemp("world") / "ray")
    build_world(SMALL, root, use_ray=True, progress=False)
    return root


def _rows(table):
    return sorted(table.to_pylist(), key=lambda r: r.get("item_id") or r["persona_id"])


def test_base_icons_drop_sequences_tones_flags_and_private_use():
    base = icons.base_icons()
    assert 1300 <= len(base) <= 1500
    cps = [i.codepoint for i in base]
    assert len(set(cps)) == len(cps)
    assert not any(0x1F3FB <= c <= 0x1F3FF or 0x1F1E6 <= c <= 0x1F1FF or 0xE000 <= c <= 0xF8FF for c in cps)
    cat = icons.icon("1F408")
    assert (cat.name, cat.group, cat.subgroup) == ("cat", "animals-nature", "animal-mammal")
    assert icons.icon(0x1F33B).name == "sunflower"
    assert all(i.name for i in base)


def test_recolour_changes_colour_layer_only():
    svg = icons.svg_text("1f455")
    green = icons.recolour_svg(svg, "#27ae60")
    assert green != svg
    line_layer = svg[svg.index('<g id="line">'):]
    assert green.endswith(line_layer)  # black outlines untouched
    a = icons.render_icon("1f455", 64, "#27ae60")
    b = icons.render_icon("1f455", 64, "#d64541")
    assert a.size == (64, 64) and a.mode == "RGBA"
    assert a.tobytes() != b.tobytes()
    assert icons.render_icon("1f455", 64, "#27ae60") is a  # cached per (icon, size, colour)


def test_motifs_exclude_articles_and_are_plentiful():
    motif_hexes = {m.hex for m in catalog.motif_icons()}
    assert not motif_hexes & {a.icon_hex for a in catalog.ARTICLES}
    # the default world must be able to draw >= 20,000 distinct products
    assert len(catalog.ARTICLES) * len(motif_hexes) * len(catalog.COLOURS) >= 20_000
    assert {m.group for m in catalog.motif_icons()} == set(catalog.MOTIF_GROUPS)


@pytest.mark.slow
def test_same_seed_same_world_any_executor_other_seed_differs(small_world, tmp_path):
    serial = str(tmp_path / "serial")
    build_world(SMALL, serial, use_ray=False, progress=False)
    assert _rows(datasets.read_catalog(serial)) == _rows(datasets.read_catalog(small_world))
    assert _rows(datasets.read_personas(serial)) == _rows(datasets.read_personas(small_world))

    other = str(tmp_path / "other")
    build_world(SMALL.model_copy(update={"seed": 1}), other, use_ray=False, progress=False)
    assert (set(datasets.read_catalog(other, columns=["item_id"]).column("item_id").to_pylist())
            != set(datasets.read_catalog(serial, columns=["item_id"]).column("item_id").to_pylist()))
    assert (datasets.read_personas(other).column("text").to_pylist()
            != datasets.read_personas(serial).column("text").to_pylist())


@pytest.mark.slow
def test_catalog_counts_ids_titles_and_attributes(small_world):
    table = datasets.read_catalog(small_world)
    manifest = read_manifest(small_world)
    assert manifest is not None and manifest.config == SMALL
    assert table.num_rows == SMALL.n_products == sum(manifest.catalog_counts.values())
    ids = table.column("item_id").to_pylist()
    titles = table.column("title").to_pylist()
    assert len(set(ids)) == len(ids) and len(set(titles)) == len(titles)
    for split, n in manifest.catalog_counts.items():
        assert datasets.read_catalog(small_world, split=split).num_rows == n > 0
    row = table.slice(0, 1).to_pylist()[0]
    attrs = dict(row["attributes"])
    assert set(attrs) == {"article", "motif", "motif_group", "motif_subgroup", "colour", "heldout_motif"}
    assert row["title"] == f"{attrs['colour']} {attrs['article']} with {catalog.indefinite(attrs['motif'])} print"
    assert row["item_id"].startswith("p-") and row["item_id"].endswith(attrs["colour"])


@pytest.mark.slow
def test_heldout_motifs_never_in_train_and_val_holds_them_like_test(small_world):
    """The lockbox's held-out-motif part has a counterpart in validation, in the same proportion."""
    manifest = read_manifest(small_world)
    by_split = {sp: set(m) for sp, m in manifest.heldout_motifs_by_split.items()}
    assert by_split["val"] and by_split["test"] and not by_split["val"] & by_split["test"]
    assert set(manifest.heldout_motifs) == by_split["val"] | by_split["test"]
    held_count = {"train": 0, "val": 0, "test": 0}
    for row in datasets.read_catalog(small_world, columns=["split", "attributes"]).to_pylist():
        attrs = dict(row["attributes"])
        is_held = attrs["heldout_motif"] == "true"
        assert is_held == (attrs["motif"] in by_split["val"] | by_split["test"])
        if is_held:
            held_count[row["split"]] += 1
            assert attrs["motif"] in by_split[row["split"]]
    assert held_count["train"] == 0
    share = {sp: held_count[sp] / manifest.catalog_counts[sp] for sp in ("val", "test")}
    assert share["val"] > 0.05 and share["test"] > 0.05
    assert abs(share["val"] - share["test"]) < 0.5 * max(share.values()), share


@pytest.mark.slow
def test_images_are_pngs_of_the_configured_size_and_differ(small_world):
    images = datasets.read_catalog(small_world, split="val", columns=["image"]).column("image").to_pylist()
    for data in images[:20]:
        image = Image.open(io.BytesIO(data))
        assert image.format == "PNG" and image.size == (112, 112)
    assert len(set(images)) == len(images)
    base = catalog.render_product("tote-bag", "1f33b", "green", 112)
    assert base != catalog.render_product("tote-bag", "1f33b", "red", 112)
    assert base != catalog.render_product("tote-bag", "1f408", "green", 112)
    assert base != catalog.render_product("mug", "1f33b", "green", 112)
    assert base == catalog.render_product("tote-bag", "1f33b", "green", 112)


@pytest.mark.slow
def test_personas_unique_nonempty_and_split(small_world):
    table = datasets.read_personas(small_world)
    texts = table.column("text").to_pylist()
    ids = table.column("persona_id").to_pylist()
    assert table.num_rows == SMALL.n_personas
    assert len(set(texts)) == len(texts) and len(set(ids)) == len(ids)
    assert all(t.strip() for t in texts)
    counts = {s: datasets.read_personas(small_world, split=s).num_rows for s in ("train", "val", "test")}
    assert counts == {"train": 80, "val": 10, "test": 10}
    assert draw_personas(0, 100, (0.8, 0.1, 0.1)) == draw_personas(0, 100, (0.8, 0.1, 0.1))


def test_truth_prefers_the_matching_motif():
    u = utility(["A gift for a friend who is a devoted cat lover", "Someone who dreams of space travel"],
                ["green t-shirt with a cat print", "green t-shirt with a rocket print"])
    assert u.shape == (2, 2)
    assert u[0, 0] > u[0, 1]
    assert u[1, 1] > u[1, 0]


def test_ensure_world_builds_once_and_rebuilds_on_config_change(tmp_path):
    root = str(tmp_path / "cached")
    cfg = WorldConfig(name="cache", n_products=60, n_personas=12)
    assert ensure_world(cfg, root, use_ray=False, progress=False) == root
    manifest_file = datasets.manifest_path(root)
    first = (os.stat(manifest_file).st_mtime_ns, read_manifest(root).created_at)
    assert ensure_world(cfg, root, use_ray=False, progress=False) == root
    assert (os.stat(manifest_file).st_mtime_ns, read_manifest(root).created_at) == first

    bigger = cfg.model_copy(update={"n_products": 80})
    ensure_world(bigger, root, use_ray=False, progress=False)
    assert read_manifest(root).config == bigger
    assert datasets.read_catalog(root).num_rows == 80


def test_default_root_is_keyed_by_config(monkeypatch, tmp_path):
    from distill.world import default_root

    monkeypatch.setenv("PERSONA_DISTILL_HOME", str(tmp_path))
    a, b = default_root(WorldConfig()), default_root(WorldConfig(seed=3))
    assert a != b and a.startswith(str(tmp_path / "worlds" / "demo-"))
    assert default_root(WorldConfig()) == a


def test_world_job_prints_resolved_config():
    out = subprocess.run([sys.executable, str(REPO / "jobs" / "world.py"), "--print-config", "world.seed=7"],
                         capture_output=True, text=True, check=True, cwd="/")
    assert "seed: 7" in out.stdout and "n_products: 24000" in out.stdout


@pytest.mark.slow
def test_default_world_size(ray_local):
    root = ensure_world(WorldConfig())
    manifest = read_manifest(root)
    assert sum(manifest.catalog_counts.values()) >= 20_000
    assert sum(manifest.persona_counts.values()) >= 2_000
    assert datasets.read_catalog(root, columns=["item_id"]).num_rows >= 20_000
    assert manifest.heldout_motifs
