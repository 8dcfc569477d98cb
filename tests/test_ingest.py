"""Ingest of a user's catalog and personas, on small real files made in tmp_path.

The inputs are real PNG/JPEG/WebP images, CSV/JSONL catalogs and TXT/JSONL persona files, so
what is tested is what a user hands us; the output is read back with ``distill.datasets``.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs
import pytest
from PIL import Image
from pydantic import ValidationError

from distill import datasets, storage
from distill.images import ImageError, normalise_for_catalog
from distill.ingest import REPORT_NAME, IngestConfig, IngestError, ingest

REPO = Path(__file__).resolve().parents[1]


def _image_bytes(fmt: str, size: tuple[int, int] = (24, 16), color: str = "red") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, fmt)
    return buf.getvalue()


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    import csv

    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def _write_jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@pytest.fixture
def shop(tmp_path: Path) -> dict[str, Path]:
    """A catalog of five rows: three good images, one corrupt file, one missing image."""
    img = tmp_path / "img"
    (img / "sub").mkdir(parents=True)
    (img / "a.png").write_bytes(_image_bytes("PNG", color="red"))
    (img / "b.jpg").write_bytes(_image_bytes("JPEG", color="blue"))
    (img / "sub" / "photo-c.webp").write_bytes(_image_bytes("WEBP", color="green"))
    good = _image_bytes("PNG")
    (img / "d.png").write_bytes(good[: len(good) // 2])  # truncated: verify() or decode fails
    catalog = _write_csv(
        tmp_path / "items.csv",
        ["item_id", "title", "split", "image", "color", "price"],
        [
            ["a", "red mug", "train", "", "red", "9.5"],
            ["b", "blue cap", "", "", "blue", ""],
            ["c", "green tote", "val", "sub/photo-c.webp", "green", "12"],
            ["d", "broken cushion", "train", "", "grey", "3"],
            ["e", "ghost notebook", "test", "", "", ""],
        ],
    )
    personas = tmp_path / "personas.txt"
    personas.write_text("a gardener who loves mugs\n\n   \nan avid hiker\n")
    return {"root": tmp_path, "img": img, "catalog": catalog, "personas": personas}


def _cfg(shop: dict[str, Path], **kw: Any) -> IngestConfig:
    """The shop's config; rows naming no split go to test (the seeded hash split has its own tests)."""
    base: dict[str, Any] = dict(images_dir=str(shop["img"]), catalog_file=str(shop["catalog"]),
                                personas_file=str(shop["personas"]), output=str(shop["root"] / "out"),
                                progress=False, default_split="test")
    base.update(kw)
    return IngestConfig(**base)


def test_csv_round_trip_skips_corrupt_and_missing_images(shop: dict[str, Path]) -> None:
    out = str(shop["root"] / "out")
    report = ingest(_cfg(shop, part_size=1))

    cat = datasets.read_catalog(out).to_pylist()
    by_id = {r["item_id"]: r for r in cat}
    assert sorted(by_id) == ["a", "b", "c"]
    assert by_id["a"]["title"] == "red mug" and by_id["a"]["split"] == "train"
    assert by_id["b"]["split"] == "test"  # blank split cell -> default_split
    assert by_id["c"]["split"] == "val"
    assert dict(by_id["a"]["attributes"]) == {"color": "red", "price": "9.5"}
    assert dict(by_id["b"]["attributes"]) == {"color": "blue"}  # empty cells dropped
    for row, color in (("a", (255, 0, 0)), ("c", (0, 128, 0))):
        decoded = Image.open(io.BytesIO(by_id[row]["image"])).convert("RGB")
        assert decoded.size == (24, 16)
        assert all(abs(x - y) < 12 for x, y in zip(decoded.getpixel((5, 5)), color))
    # Small PNG/JPEG/WebP keep their original bytes.
    assert by_id["a"]["image"] == (shop["img"] / "a.png").read_bytes()
    assert report.reencoded == 0
    assert sorted(datasets.read_catalog(out, split="train")["item_id"].to_pylist()) == ["a"]

    skipped = {s.item_id: s for s in report.skipped}
    assert set(skipped) == {"d", "e"}
    assert skipped["d"].line == 5 and skipped["d"].reason.startswith("corrupt image")
    assert skipped["e"].line == 6 and skipped["e"].reason.startswith("missing")

    on_disk = storage.read_json(storage.join(out, REPORT_NAME))
    assert on_disk["skipped_count"] == 2
    assert [(s["line"], s["item_id"]) for s in on_disk["skipped"]] == [(5, "d"), (6, "e")]
    manifest = storage.read_json(datasets.manifest_path(out))
    assert manifest["catalog"]["counts"] == {"train": 1, "test": 1, "val": 1}
    assert manifest["catalog"]["skipped"] == 2
    assert manifest["personas"]["counts"] == {"test": 2}
    assert len(storage.list_files(datasets.catalog_dir(out), ".parquet")) == 3  # part_size=1

    personas = datasets.read_personas(out).to_pylist()
    assert [(p["persona_id"], p["text"], p["split"]) for p in personas] == [
        ("persona-1", "a gardener who loves mugs", "test"),
        ("persona-4", "an avid hiker", "test"),
    ]


def test_jsonl_catalog_and_personas(shop: dict[str, Path]) -> None:
    root = shop["root"]
    catalog = _write_jsonl(root / "items.jsonl", [
        {"item_id": 101, "title": "red mug", "split": "train", "image": "a.png", "size": 3,
         "tags": ["x", "y"], "gift": True},
        {"item_id": "b", "title": "blue cap"},
    ])
    personas = _write_jsonl(root / "p.jsonl", [
        {"persona_id": "lori", "text": "Lori, a reserved mechanic", "split": "val", "age": 41},
        {"text": "a student who cycles"},
    ])
    out = str(root / "out2")
    ingest(_cfg(shop, catalog_file=str(catalog), personas_file=str(personas), output=out,
                default_split="train"))
    by_id = {r["item_id"]: r for r in datasets.read_catalog(out).to_pylist()}
    assert set(by_id) == {"101", "b"}
    assert dict(by_id["101"]["attributes"]) == {"size": "3", "tags": '["x", "y"]', "gift": "true"}
    assert by_id["b"]["split"] == "train" and by_id["b"]["attributes"] is None
    assert datasets.read_personas(out).to_pylist() == [
        {"persona_id": "lori", "text": "Lori, a reserved mechanic", "split": "val"},
        {"persona_id": "persona-2", "text": "a student who cycles", "split": "train"},
    ]


def test_large_images_are_downscaled(tmp_path: Path) -> None:
    png, jpg = _image_bytes("PNG", (300, 100)), _image_bytes("JPEG", (100, 300))
    out_png, re_png = normalise_for_catalog(png, 64)
    out_jpg, re_jpg = normalise_for_catalog(jpg, 64)
    assert re_png == re_jpg == ["downscaled"]
    assert Image.open(io.BytesIO(out_png)).format == "PNG"
    assert Image.open(io.BytesIO(out_png)).size == (64, 21)
    assert Image.open(io.BytesIO(out_jpg)).format == "JPEG"  # photos stay JPEG
    assert max(Image.open(io.BytesIO(out_jpg)).size) == 64
    gif = io.BytesIO()
    Image.new("P", (10, 10)).save(gif, "GIF")
    out_gif, re_gif = normalise_for_catalog(gif.getvalue(), 64)
    assert re_gif and Image.open(io.BytesIO(out_gif)).format == "PNG"  # only PNG/JPEG/WebP stored
    with pytest.raises(ImageError):
        normalise_for_catalog(b"not an image at all", 64)


@pytest.mark.parametrize(
    "case, expected",
    [
        ("duplicate_id", [r"items\.csv line 3: duplicate item_id 'a' \(first on line 2\)"]),
        ("missing_column", [r"items\.csv", r"missing required column\(s\) \['title'\]"]),
        ("bad_split", [r"items\.csv line 2: split 'training' is not one of"]),
        ("blank_title", [r"items\.csv line 2: title"]),
        ("empty_persona", [r"p\.jsonl line 2: empty persona text"]),
        ("duplicate_persona", [r"p\.jsonl line 2: duplicate persona_id 'x' \(first on line 1\)"]),
        ("persona_missing_text", [r"p\.jsonl line 1: missing required column\(s\) \['text'\]"]),
        ("bad_json", [r"p\.jsonl line 1: not valid JSON"]),
    ],
)
def test_bad_input_names_file_and_row(shop: dict[str, Path], case: str, expected: list[str]) -> None:
    root = shop["root"]
    catalog_rows = {
        "duplicate_id": (["item_id", "title"], [["a", "mug"], ["a", "cap"]]),
        "missing_column": (["item_id", "name"], [["a", "mug"]]),
        "bad_split": (["item_id", "title", "split"], [["a", "mug", "training"]]),
        "blank_title": (["item_id", "title"], [["a", "  "]]),
    }
    persona_lines = {
        "empty_persona": '{"text": "ok"}\n{"text": "   "}\n',
        "duplicate_persona": '{"persona_id": "x", "text": "a"}\n{"persona_id": "x", "text": "b"}\n',
        "persona_missing_text": '{"persona_id": "x"}\n',
        "bad_json": '{"text": \n',
    }
    kw: dict[str, Any] = {}
    if case in catalog_rows:
        kw["catalog_file"] = str(_write_csv(root / "items.csv", *catalog_rows[case]))
    else:
        (root / "p.jsonl").write_text(persona_lines[case])
        kw["personas_file"] = str(root / "p.jsonl")
    with pytest.raises(IngestError) as err:
        ingest(_cfg(shop, **kw))
    for pattern in expected:
        assert err.match(pattern)
    assert not (root / "out").exists()  # validation happens before any write


def test_all_row_errors_reported_at_once(shop: dict[str, Path]) -> None:
    catalog = _write_csv(shop["root"] / "items.csv", ["item_id", "title", "split"],
                         [["a", "mug", ""], ["b", "mug", "nope"], ["c", "", ""], ["a", "cap", ""]])
    with pytest.raises(IngestError, match="3 invalid row") as err:
        ingest(_cfg(shop, catalog_file=str(catalog)))
    assert all(f"line {n}" in str(err.value) for n in (3, 4, 5))
    assert "duplicate item_id 'a' (first on line 2)" in str(err.value)


def test_missing_files_and_config_rules(shop: dict[str, Path]) -> None:
    with pytest.raises(IngestError, match=r"nope\.csv: file does not exist"):
        ingest(_cfg(shop, catalog_file=str(shop["root"] / "nope.csv")))
    with pytest.raises(IngestError, match="images_dir is not a folder"):
        ingest(_cfg(shop, images_dir=str(shop["root"] / "no-such-dir")))
    with pytest.raises(IngestError, match=r"unsupported file type '\.xlsx'"):
        (shop["root"] / "x.xlsx").write_text("")
        ingest(_cfg(shop, catalog_file=str(shop["root"] / "x.xlsx")))
    with pytest.raises(ValueError, match="catalog_file, personas_file or both"):
        IngestConfig(output="x")
    assert all(f.description for f in IngestConfig.model_fields.values())


def test_either_part_alone_and_existing_output(shop: dict[str, Path]) -> None:
    out = str(shop["root"] / "out")
    ingest(_cfg(shop, catalog_file=None, images_dir=None))
    assert datasets.read_personas(out).num_rows == 2
    assert not storage.exists(datasets.catalog_dir(out))
    with pytest.raises(IngestError, match="already holds"):
        ingest(_cfg(shop, personas_file=None))
    ingest(_cfg(shop, personas_file=None, overwrite=True))
    assert datasets.read_catalog(out).num_rows == 3
    assert not storage.exists(datasets.personas_path(out))  # the old root was replaced whole
    assert storage.read_json(datasets.manifest_path(out))["personas"] is None


def test_images_dir_defaults_to_catalog_folder_and_all_missing_fails(shop: dict[str, Path]) -> None:
    catalog = _write_csv(shop["img"] / "items.csv", ["item_id", "title"], [["a", "mug"]])
    report = ingest(_cfg(shop, images_dir=None, catalog_file=str(catalog), personas_file=None))
    assert report.catalog_counts == {"test": 1}
    catalog = _write_csv(shop["root"] / "none.csv", ["item_id", "title"], [["zz", "mug"]])
    with pytest.raises(IngestError, match="line 2: missing: no image zz"):
        ingest(_cfg(shop, catalog_file=str(catalog), output=str(shop["root"] / "o3")))


def test_dry_run_writes_nothing(shop: dict[str, Path]) -> None:
    report = ingest(_cfg(shop, dry_run=True))
    assert report.persona_counts == {"test": 2}
    assert [s.item_id for s in report.skipped] == ["e"]  # only missing files are known before reading
    assert not (shop["root"] / "out").exists()


def test_crash_half_way_leaves_no_manifest(shop: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    from distill import ingest as ingest_mod

    def boom(*_a: Any, **_k: Any) -> str:
        raise RuntimeError("disk full")

    monkeypatch.setattr(ingest_mod.datasets, "write_personas", boom)
    with pytest.raises(RuntimeError):
        ingest(_cfg(shop))
    out = str(shop["root"] / "out")
    assert storage.list_files(datasets.catalog_dir(out), ".parquet")  # catalog parts got written
    assert not storage.exists(datasets.manifest_path(out))  # ...but the root is marked incomplete


def test_non_local_filesystem(shop: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """Inputs and output on an in-memory object store, through the same pyarrow-filesystem code.

    ``mock://`` URIs make a fresh empty filesystem per call, so one shared ``_MockFileSystem``
    stands in for a bucket: no local-path shortcuts (os.replace, os.path) are taken.
    """
    mock = pafs._MockFileSystem()
    real_resolve = storage.resolve

    def resolve(uri: str) -> tuple[pafs.FileSystem, str]:
        if uri.startswith("mock://"):
            return mock, uri[len("mock://"):]
        return real_resolve(uri)

    monkeypatch.setattr(storage, "resolve", resolve)
    for path in [*shop["img"].rglob("*"), shop["catalog"], shop["personas"]]:
        if path.is_file():
            rel = path.relative_to(shop["root"]).as_posix()
            mock.create_dir(f"bucket/{Path(rel).parent.as_posix()}")
            with mock.open_output_stream(f"bucket/{rel}") as f:
                f.write(path.read_bytes())
    out = "mock://bucket/datasets/shop"
    report = ingest(IngestConfig(images_dir="mock://bucket/img", catalog_file="mock://bucket/items.csv",
                                 personas_file="mock://bucket/personas.txt", output=out, progress=False,
                                 default_split="test"))
    assert report.catalog_counts == {"train": 1, "test": 1, "val": 1}
    assert sorted(datasets.read_catalog(out)["item_id"].to_pylist()) == ["a", "b", "c"]
    assert datasets.read_personas(out).num_rows == 2
    assert storage.read_json(datasets.manifest_path(out))["catalog"]["skipped"] == 2
    assert mock.get_file_info("bucket/datasets/shop/ingest_report.json").type == pafs.FileType.File


def test_file_uri_output(shop: dict[str, Path]) -> None:
    out = (shop["root"] / "viauri").as_uri()
    ingest(_cfg(shop, output=out, images_dir=shop["img"].as_uri()))
    assert datasets.read_catalog(out).num_rows == 3


def _run_job(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(REPO / "jobs" / "ingest.py"), *args],
                          capture_output=True, text=True, timeout=120, cwd="/")


def test_job_end_to_end(shop: dict[str, Path]) -> None:
    out = shop["root"] / "jobout"
    cfg = shop["root"] / "ingest.yaml"
    cfg.write_text(f"images_dir: {shop['img']}\ncatalog_file: {shop['catalog']}\noutput: {out}\ndefault_split: test\n")
    done = _run_job("--config", str(cfg), f"personas_file={shop['personas']}", "progress=false")
    assert done.returncode == 0, done.stderr
    assert "catalog: 3" in done.stdout and "2 skipped" in done.stdout
    assert "line 5 item_id='d': corrupt image" in done.stdout
    assert (out / "manifest.json").exists()
    assert datasets.read_personas(str(out)).num_rows == 2

    bad = _write_csv(shop["root"] / "bad.csv", ["item_id"], [["a"]])
    done = _run_job(f"catalog_file={bad}", f"images_dir={shop['img']}", f"output={out}x")
    assert done.returncode == 2
    assert "bad.csv" in done.stderr and "'title'" in done.stderr
    done = _run_job("output=x", "part_size=0")
    assert done.returncode != 0 and "part_size" in done.stderr


# --------------------------------------------------------------------------- a user's own data (issue 18)


def _plain_catalog(root: Path, ids: list[str]) -> Path:
    """A catalog as users write it: no split column, one PNG per item."""
    img = root / "img"
    img.mkdir(exist_ok=True)
    for i in ids:
        if not (img / f"{i}.png").exists():
            (img / f"{i}.png").write_bytes(_image_bytes("PNG", color="red"))
    return _write_csv(root / "items.csv", ["item_id", "title"], [[i, f"thing {i}"] for i in ids])


def _splits(out: str) -> dict[str, str]:
    return dict(zip(*datasets.read_catalog(out, columns=["item_id", "split"]).to_pydict().values()))


def test_rows_without_a_split_get_a_seeded_hash_split_that_adding_rows_never_moves(tmp_path: Path) -> None:
    ids = [f"sku-{i:03d}" for i in range(120)]
    catalog = _plain_catalog(tmp_path, ids)
    personas = tmp_path / "p.txt"
    personas.write_text("".join(f"persona number {i}\n" for i in range(60)))
    base = dict(images_dir=str(tmp_path / "img"), catalog_file=str(catalog), personas_file=str(personas),
                progress=False)
    first = ingest(IngestConfig(**base, output=str(tmp_path / "a")))
    assert set(first.catalog_counts) == set(first.persona_counts) == {"train", "val", "test"}
    assert first.catalog_counts["train"] > first.catalog_counts["val"] + first.catalog_counts["test"]
    assert first.split_rule and "seeded hash" in first.split_rule and not first.warnings
    assert "train" in first.summary() and "seeded hash" in first.summary()
    old = _splits(str(tmp_path / "a"))

    # the same file again: the same split; 40 more rows: no old row moves
    again = ingest(IngestConfig(**base, output=str(tmp_path / "b")))
    assert _splits(str(tmp_path / "b")) == old and again.persona_counts == first.persona_counts
    _plain_catalog(tmp_path, ids + [f"sku-{i:03d}" for i in range(120, 160)])
    grown = _splits(str(tmp_path / "c")) if ingest(IngestConfig(**base, output=str(tmp_path / "c"))) else {}
    assert len(grown) == 160 and {i: grown[i] for i in ids} == old
    # another seed is another split; default_split still puts everything in one split
    reseeded = ingest(IngestConfig(**base, output=str(tmp_path / "d"), split_seed=1))
    assert _splits(str(tmp_path / "d")) != grown and sum(reseeded.catalog_counts.values()) == 160
    one = ingest(IngestConfig(**base, output=str(tmp_path / "e"), default_split="test"))
    assert one.catalog_counts == {"test": 160} and one.split_rule is None
    assert any("['train', 'val'] are empty" in w for w in one.warnings)


def test_split_fractions_are_validated_and_followed(tmp_path: Path) -> None:
    catalog = _plain_catalog(tmp_path, [f"i{i}" for i in range(200)])
    report = ingest(IngestConfig(catalog_file=str(catalog), images_dir=str(tmp_path / "img"), progress=False,
                                 output=str(tmp_path / "o"), split_fractions={"train": 0.5, "val": 0, "test": 0.5}))
    assert set(report.catalog_counts) == {"train", "test"} and 70 < report.catalog_counts["train"] < 130
    assert any("['val'] are empty" in w for w in report.warnings)
    with pytest.raises(ValidationError, match="must not all be zero"):
        IngestConfig(personas_file="p.txt", output="o", split_fractions={"train": 0, "val": 0, "test": 0})


def test_persona_ids_come_from_persona_id_or_id_and_other_id_columns_are_named(tmp_path: Path) -> None:
    ids = _write_jsonl(tmp_path / "ids.jsonl", [{"id": "lori-7", "text": "Lori, a mechanic"},
                                                {"id": 12, "text": "a baker"}])
    report = ingest(IngestConfig(personas_file=str(ids), output=str(tmp_path / "a"), progress=False))
    assert sorted(datasets.read_personas(str(tmp_path / "a"))["persona_id"].to_pylist()) == ["12", "lori-7"]
    assert not [w for w in report.warnings if "ids" in w]

    other = _write_jsonl(tmp_path / "other.jsonl", [{"uuid": "u-1", "text": "a", "age": 3, "valid": 1},
                                                    {"uuid": "u-2", "text": "b", "customerId": "c9"}])
    report = ingest(IngestConfig(personas_file=str(other), output=str(tmp_path / "b"), progress=False))
    assert datasets.read_personas(str(tmp_path / "b"))["persona_id"].to_pylist() == ["persona-1", "persona-2"]
    id_warnings = [w for w in report.warnings if "ids" in w]
    assert len(id_warnings) == 1 and "['customerId', 'uuid'] look like ids" in id_warnings[0]
    assert "warning: " in report.summary() and "other.jsonl" in report.summary()

    both = _write_jsonl(tmp_path / "both.jsonl", [{"persona_id": "p1", "id": "x1", "text": "a"},
                                                  {"text": "b"}])
    report = ingest(IngestConfig(personas_file=str(both), output=str(tmp_path / "c"), progress=False))
    assert datasets.read_personas(str(tmp_path / "c"))["persona_id"].to_pylist() == ["p1", "persona-2"]
    assert any("['id'] look like ids" in w for w in report.warnings)
    assert any("1 of 2 rows have no persona_id or id" in w for w in report.warnings)


def _gradient16() -> bytes:
    import numpy as np

    grad = np.linspace(0, 65535, 64 * 256).reshape(64, 256).astype(np.uint16)
    buf = io.BytesIO()
    Image.fromarray(grad).save(buf, "PNG")
    assert Image.open(io.BytesIO(buf.getvalue())).mode == "I;16"  # what users hand us
    return buf.getvalue()


def _logo_rgba() -> bytes:
    """A mostly transparent logo: a red square on a transparent (black underneath) canvas."""
    im = Image.new("RGBA", (40, 40), (0, 0, 0, 0))
    im.paste((255, 0, 0, 255), (15, 15, 25, 25))
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


def test_images_are_normalised_to_8bit_rgb_once_and_counted(tmp_path: Path) -> None:
    import numpy as np

    img = tmp_path / "img"
    img.mkdir()
    (img / "grad.png").write_bytes(_gradient16())
    (img / "logo.png").write_bytes(_logo_rgba())
    grey = io.BytesIO()
    Image.new("L", (20, 20), 128).save(grey, "JPEG")
    (img / "grey.jpg").write_bytes(grey.getvalue())
    (img / "plain.png").write_bytes(_image_bytes("PNG"))
    catalog = _write_csv(tmp_path / "items.csv", ["item_id", "title"],
                         [["grad", "gradient"], ["logo", "logo"], ["grey", "grey"], ["plain", "plain"]])
    report = ingest(IngestConfig(catalog_file=str(catalog), images_dir=str(img), output=str(tmp_path / "o"),
                                 progress=False, default_split="test"))
    rows = {r["item_id"]: r["image"] for r in datasets.read_catalog(str(tmp_path / "o")).to_pylist()}
    modes = {k: Image.open(io.BytesIO(v)).mode for k, v in rows.items()}
    assert modes == {"grad": "RGB", "logo": "RGB", "grey": "RGB", "plain": "RGB"}
    grad = np.asarray(Image.open(io.BytesIO(rows["grad"])))
    assert (grad == 255).mean() < 0.01 and grad[:, :, 0].min() == 0  # scaled, not clipped to white
    assert np.abs(grad[:, :, 0].astype(int).ravel() - np.linspace(0, 255, grad[:, :, 0].size)).max() <= 1
    logo = Image.open(io.BytesIO(rows["logo"]))
    assert logo.getpixel((2, 2)) == (255, 255, 255) and logo.getpixel((20, 20)) == (255, 0, 0)
    assert rows["plain"] == (img / "plain.png").read_bytes()  # already 8-bit RGB: bytes kept
    assert report.reencoded == 3
    assert report.conversions == {"16-bit greyscale scaled to 8-bit RGB": 1,
                                  "RGBA with transparency composited onto white": 1, "L converted to RGB": 1}
    assert "1 16-bit greyscale scaled to 8-bit RGB" in report.summary()


def test_student_judge_and_ingest_see_the_same_pixels() -> None:
    """One decode (distill.images.prepare_image) behind the student, the VLM judge and ingest."""
    import numpy as np
    import torch

    from distill.images import prepare_image
    from distill.student import decode_images

    for raw in (_gradient16(), _logo_rgba()):
        shared = np.asarray(prepare_image(raw))
        student = decode_images([raw], lambda im: torch.from_numpy(np.asarray(im).copy()))[0].numpy()
        stored, _ = normalise_for_catalog(raw, 1024)
        assert np.array_equal(student, shared)
        assert np.array_equal(np.asarray(prepare_image(stored)), shared)
    logo = np.asarray(prepare_image(_logo_rgba()))
    assert tuple(logo[2, 2]) == (255, 255, 255)  # transparent -> white for every model, not black


def test_the_shared_decode_imports_without_torch() -> None:
    """The judge actor in the vLLM venv and the driver import it without pulling torch in."""
    code = ("import sys; import distill.images, distill.judges.vlm; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert done.returncode == 0, done.stderr


def _oversize_png(width: int, height: int) -> bytes:
    """A PNG header declaring a huge image (only the header: Pillow refuses it on open)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def test_skip_reasons_name_over_size_and_carry_no_memory_addresses(tmp_path: Path) -> None:
    img = tmp_path / "img"
    img.mkdir()
    (img / "huge.png").write_bytes(_oversize_png(40_000, 40_000))
    (img / "junk.png").write_bytes(b"this is not an image")
    (img / "ok.png").write_bytes(_image_bytes("PNG"))
    catalog = _write_csv(tmp_path / "items.csv", ["item_id", "title"], [["huge", "h"], ["junk", "j"], ["ok", "o"]])
    report = ingest(IngestConfig(catalog_file=str(catalog), images_dir=str(img), output=str(tmp_path / "o"),
                                 progress=False))
    reasons = {s.item_id: s.reason for s in report.skipped}
    assert reasons["huge"].startswith("over-size image") and "corrupt" not in reasons["huge"]
    assert reasons["junk"].startswith("corrupt")
    assert not any("0x" in r for r in reasons.values()), reasons


def test_a_csv_that_is_not_utf8_names_file_and_line(tmp_path: Path) -> None:
    catalog = tmp_path / "items.csv"
    catalog.write_bytes("item_id,title\na,mug\nb,caf\xe9 cap\n".encode("latin-1"))
    with pytest.raises(IngestError, match=r"items\.csv line 3: not UTF-8 text \(byte 0xe9"):
        ingest(IngestConfig(catalog_file=str(catalog), output=str(tmp_path / "o"), progress=False))
    personas = tmp_path / "p.txt"
    personas.write_bytes("a gardener\n\na caf\xe9 owner\n".encode("cp1252"))
    done = _run_job(f"personas_file={personas}", f"output={tmp_path / 'o'}")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [f"ingest failed: {personas} line 3: not UTF-8 text "
                                                "(byte 0xe9 at column 6); save the file as UTF-8"]


def test_dry_run_prints_the_catalog_as_well_as_the_personas(shop: dict[str, Path]) -> None:
    report = ingest(_cfg(shop, dry_run=True, default_split=None))
    assert sum(report.catalog_counts.values()) == 4  # a, b, c, d have a file; e is missing
    done = _run_job(f"images_dir={shop['img']}", f"catalog_file={shop['catalog']}",
                    f"personas_file={shop['personas']}", f"output={shop['root'] / 'dry'}", "dry_run=true")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("dry run: would write")
    assert any(line.strip().startswith("catalog: 4 (") for line in lines), done.stdout
    assert any(line.strip().startswith("personas: 2 (") for line in lines), done.stdout
    assert not (shop["root"] / "dry").exists()
