"""Ingest a user's own catalog (images + CSV/JSONL) and personas (TXT/JSONL) into a dataset root.

Why two passes: validating the text files is cheap and catches the mistakes a user can fix at
once (a missing column, a duplicate id, a blank persona, a bad split), so we do all of it before
writing a byte. Images are the expensive part and a broken one is a fact of life, not a user
mistake, so a missing or corrupt image skips its row and lands in ``ingest_report.json``;
it never aborts a run half-way.

Atomicity follows ``distill.storage``: catalog parts and ``personas.parquet`` are written
first, ``ingest_report.json`` next and ``manifest.json`` last, so an output without a manifest
is recognisably incomplete. Every file is read and written through pyarrow filesystems, so
local paths, ``s3://`` and ``gs://`` work for inputs and output alike.

Images are normalised here, once (``distill.images.normalise_for_catalog``): every mode becomes
8-bit RGB (16-bit scaled, not clipped; transparency composited onto white), EXIF rotation is
applied and images over ``max_image_side`` are downscaled; an image that needed none of that keeps
its original bytes. The report counts each kind of conversion.

Splits: a row that names no split (the usual case for a user's own catalog, which has no
``split`` column) is placed by a seeded hash of its id (``split_fractions``, ``split_seed``), so
adding rows never moves the old ones and a rerun gives the same split; ``default_split`` puts
them all in one split instead.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import posixpath
import re
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from tqdm import tqdm

from distill import datasets, storage
from distill.errors import UserError
from distill.images import ImageError, describe_error, normalise_for_catalog
from distill.schemas import CATALOG_SCHEMA, PERSONA_SCHEMA, SPLITS, CatalogItem, Persona, Split
from distill.seeding import seed_for

IMAGE_EXTENSIONS: tuple[str, ...] = ("png", "jpg", "jpeg", "webp")
REQUIRED_CATALOG_COLUMNS: tuple[str, ...] = ("item_id", "title")
_RESERVED_CATALOG_COLUMNS = {"item_id", "title", "image", "split"}
_MAX_ERRORS_SHOWN = 20
REPORT_NAME = "ingest_report.json"


class IngestError(UserError, ValueError):
    """Input that cannot be ingested; the message names the file and the row (line) at fault."""


# Persona id columns read, in order of preference; other columns whose names look like ids are
# named in a warning (a user's ``uuid`` silently replaced by ``persona-<line>`` is a surprise).
PERSONA_ID_COLUMNS: tuple[str, ...] = ("persona_id", "id")
_ID_LIKE = re.compile(r"(^|[_\-\s.])(id|ids|uuid|guid|key)$|^(uid|pid|uuid|guid|key)$|(?-i:[a-z]Id)$", re.IGNORECASE)


class SplitFractions(BaseModel):
    """Shares of train / val / test for rows that name no split (normalised to sum to 1)."""

    model_config = ConfigDict(extra="forbid")
    train: float = Field(0.8, ge=0, description="share of rows without a split that go to train")
    val: float = Field(0.1, ge=0, description="share that go to val (the cycles' learning curve and early stop)")
    test: float = Field(0.1, ge=0, description="share that go to test (the held-out evaluation)")

    @model_validator(mode="after")
    def _not_all_zero(self) -> SplitFractions:
        if self.train + self.val + self.test <= 0:
            raise ValueError("split fractions must not all be zero")
        return self


def hash_split(kind: str, key: str, seed: int, fractions: SplitFractions) -> str:
    """The split of one row, from a seeded hash of its id: stable under added or removed rows.

    Why a hash and not a shuffle: a shuffle's assignment depends on every other row, so adding
    items to a catalog would move old ones between train and test and leak evaluation items into
    training; a hash of (seed, table, id) depends on the row alone.
    """
    u = seed_for("split", seed, kind, key) / float(1 << 63)
    total = fractions.train + fractions.val + fractions.test
    edge = 0.0
    for split in SPLITS:
        edge += getattr(fractions, split) / total
        if u < edge:
            return split
    return SPLITS[-1] if fractions.test > 0 else ("val" if fractions.val > 0 else "train")


class IngestConfig(BaseModel):
    """Ingest a user's catalog (a folder of images + CSV/JSONL) and/or personas (TXT/JSONL)."""

    model_config = ConfigDict(extra="forbid")

    images_dir: str | None = Field(
        None,
        description="URI of the folder holding the catalog images (local path, s3://, gs://). "
        "Defaults to the folder that holds catalog_file.",
    )
    catalog_file: str | None = Field(
        None,
        description="CSV (with header) or JSONL catalog: required item_id, title; optional image "
        "(path relative to images_dir, default <item_id>.png/.jpg/.jpeg/.webp), split; every other "
        "column is kept as a string attribute.",
    )
    personas_file: str | None = Field(
        None,
        description=".txt (one persona per non-blank line, ids persona-<line>) or .jsonl "
        "(text; optional persona_id or id, split; other id-like columns are named in a warning).",
    )
    output: str = Field(description="URI of the dataset root to write.")
    default_split: Split | None = Field(
        None, description="Split of rows that name none; empty = a seeded split by a hash of each "
        "row's id (split_fractions, split_seed), stable when rows are added.")
    split_fractions: SplitFractions = Field(
        default_factory=SplitFractions, description="Train/val/test shares for rows that name no split.")
    split_seed: int = Field(0, description="Seed of the hash split (another seed, another split).")
    max_image_side: int = Field(
        1024, ge=16,
        description="Longer side above which an image is downscaled and re-encoded; smaller "
        "PNG/JPEG/WebP images keep their original bytes.",
    )
    part_size: int = Field(
        512, ge=1,
        description="Catalog rows per Parquet part (memory holds at most one part per split).",
    )
    workers: int = Field(
        8, ge=1, description="Threads that read and decode images (I/O-bound on object stores)."
    )
    overwrite: bool = Field(
        False, description="Replace an existing dataset root instead of refusing to touch it."
    )
    dry_run: bool = Field(
        False, description="Validate the text files and check images exist, then stop without writing."
    )
    progress: bool = Field(True, description="Show a tqdm progress bar over images.")

    @model_validator(mode="after")
    def _needs_input(self) -> IngestConfig:
        if not self.catalog_file and not self.personas_file:
            raise ValueError("give catalog_file, personas_file or both")
        if self.images_dir and not self.catalog_file:
            raise ValueError("images_dir is only used with catalog_file")
        return self

    def split_of(self, kind: str, key: str, named: str | None) -> str:
        """A row's split: the one it names, else ``default_split``, else the hash split."""
        if named:
            return named
        if self.default_split:
            return self.default_split
        return hash_split(kind, key, self.split_seed, self.split_fractions)

    def resolved_images_dir(self) -> str:
        """``images_dir``, or the catalog file's folder when unset."""
        if self.images_dir:
            return self.images_dir
        assert self.catalog_file is not None
        return _parent_uri(self.catalog_file)


@dataclass(frozen=True)
class CatalogRow:
    """A validated catalog line, before its image is read."""

    line: int
    item_id: str
    title: str
    split: str
    image: str | None  # path relative to images_dir; None when the image is missing
    attributes: dict[str, str] | None
    hashed: bool = False  # the row named no split: placed by the hash split


@dataclass(frozen=True)
class SkippedRow:
    """A catalog row left out of the output, with the reason a user can act on."""

    line: int
    item_id: str
    image: str | None
    reason: str


@dataclass
class IngestReport:
    """What an ingest wrote (or, for a dry run, would write)."""

    output: str
    catalog_counts: dict[str, int] = field(default_factory=dict)
    persona_counts: dict[str, int] = field(default_factory=dict)
    catalog_parts: list[str] = field(default_factory=list)
    skipped: list[SkippedRow] = field(default_factory=list)
    reencoded: int = 0
    conversions: dict[str, int] = field(default_factory=dict)  # what re-encoding did, by kind
    split_rule: str | None = None  # how rows without a split were placed
    warnings: list[str] = field(default_factory=list)
    dry_run: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "output": self.output,
            "catalog_counts": self.catalog_counts,
            "persona_counts": self.persona_counts,
            "catalog_parts": self.catalog_parts,
            "skipped_count": len(self.skipped),
            "skipped": [asdict(s) for s in self.skipped],
            "reencoded": self.reencoded,
            "conversions": self.conversions,
            "split_rule": self.split_rule,
            "warnings": self.warnings,
            "dry_run": self.dry_run,
        }

    def summary(self) -> str:
        lines = [f"{'dry run: would write' if self.dry_run else 'wrote'} {self.output}"]
        if self.catalog_counts or self.skipped:
            if self.dry_run:  # images are read only when writing: only missing files are known yet
                lines.append(f"  catalog: {_fmt_counts(self.catalog_counts)} with an image file; "
                             f"{len(self.skipped)} skipped (missing), images checked when written")
            else:
                lines.append(f"  catalog: {_fmt_counts(self.catalog_counts)} in {len(self.catalog_parts)} "
                             f"part(s); {len(self.skipped)} skipped, {self.reencoded} re-encoded")
            for what, n in sorted(self.conversions.items()):
                lines.append(f"    {n} {what}")
            for s in self.skipped[:10]:
                lines.append(f"    line {s.line} item_id={s.item_id!r}: {s.reason}")
            if len(self.skipped) > 10:
                lines.append(f"    ... {len(self.skipped) - 10} more in {REPORT_NAME}")
        if self.persona_counts:
            lines.append(f"  personas: {_fmt_counts(self.persona_counts)}")
        if self.split_rule:
            lines.append(f"  {self.split_rule}")
        lines.extend(f"  warning: {w}" for w in self.warnings)
        return "\n".join(lines)


def _fmt_counts(counts: dict[str, int]) -> str:
    total = sum(counts.values())
    return f"{total} ({', '.join(f'{k} {v}' for k, v in sorted(counts.items())) or 'none'})"


# --------------------------------------------------------------------------- reading text files


def _parent_uri(uri: str) -> str:
    if "://" in uri:
        return posixpath.dirname(uri.rstrip("/"))
    return os.path.dirname(os.path.abspath(os.path.expanduser(uri)))


def _suffix(uri: str) -> str:
    return posixpath.splitext(uri.split("?", 1)[0])[1].lower()


def _binary_lines(stream: Any, chunk: int = 1 << 20) -> Iterator[bytes]:
    """Physical lines (ending kept) of a binary stream, read in chunks: memory holds one chunk."""
    rest = b""
    while True:
        block = stream.read(chunk)
        if not block:
            break
        *lines, rest = (rest + block).split(b"\n")
        for line in lines:
            yield line + b"\n"
    if rest:
        yield rest


def _decoded_lines(uri: str, stream: Any) -> Iterator[str]:
    """UTF-8 lines (a leading BOM dropped); a line that is not UTF-8 is an error naming it.

    Why decode line by line: a text wrapper decodes in blocks, so its error carries a position in
    a block and no line; a user needs the line to find the stray Latin-1 or Windows-1252 byte.
    """
    for lineno, raw in enumerate(_binary_lines(stream), start=1):
        try:
            yield raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
        except UnicodeDecodeError as err:
            raise IngestError(f"{uri} line {lineno}: not UTF-8 text (byte 0x{raw[err.start]:02x} at column "
                              f"{err.start + 1}); save the file as UTF-8") from None


@contextlib.contextmanager
def _open_text(uri: str) -> Iterator[Iterator[str]]:
    """The lines of a text file on any pyarrow filesystem (UTF-8, a leading BOM dropped)."""
    fs, path = storage.resolve(uri)
    info = fs.get_file_info(path)
    if info.type != pafs.FileType.File:
        raise IngestError(f"{uri}: file does not exist")
    with fs.open_input_stream(path) as stream:
        yield _decoded_lines(uri, stream)


def _iter_records(uri: str, required: tuple[str, ...]) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, record) from a CSV or JSONL file; a missing required column is an error.

    Line numbers are what a user sees in an editor: a CSV's header is line 1.
    """
    kind = _suffix(uri)
    with _open_text(uri) as text:
        if kind == ".csv":
            reader = csv.DictReader(text)
            header = [h.strip() for h in (reader.fieldnames or [])]
            missing = [c for c in required if c not in header]
            if missing:
                raise IngestError(f"{uri}: missing required column(s) {missing} (header has {header})")
            reader.fieldnames = header
            for rec in reader:
                if None in rec:  # more cells than header names
                    raise IngestError(f"{uri} line {reader.line_num}: more cells than header columns")
                yield reader.line_num, rec
        elif kind in (".jsonl", ".ndjson"):
            for lineno, raw in enumerate(text, start=1):
                if not raw.strip():
                    continue
                try:
                    rec = json.loads(raw)
                except json.JSONDecodeError as err:
                    raise IngestError(f"{uri} line {lineno}: not valid JSON ({err.msg})") from None
                if not isinstance(rec, dict):
                    raise IngestError(f"{uri} line {lineno}: expected a JSON object")
                missing = [c for c in required if rec.get(c) is None]
                if missing:
                    raise IngestError(f"{uri} line {lineno}: missing required column(s) {missing}")
                yield lineno, rec
        else:
            raise IngestError(f"{uri}: unsupported file type {kind!r} (expected .csv or .jsonl)")


def _as_str(value: Any) -> str:
    """Cell value as text: JSON scalars as written, nested values as JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return json.dumps(value) if isinstance(value, bool) else str(value)


def _validation_message(err: ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())


def _raise_collected(errors: list[str]) -> None:
    if not errors:
        return
    shown = errors[:_MAX_ERRORS_SHOWN]
    more = f"\n  ... and {len(errors) - len(shown)} more" if len(errors) > len(shown) else ""
    raise IngestError(f"{len(errors)} invalid row(s):\n  " + "\n  ".join(shown) + more)


# --------------------------------------------------------------------------- catalog


class _ImageIndex:
    """The relative paths of every file under ``images_dir``, listed once.

    Why list instead of probing: resolving ``<item_id>.<ext>`` by probing costs up to four
    requests per item on an object store; one recursive listing costs a few per thousand.
    """

    def __init__(self, images_dir: str) -> None:
        self.uri = images_dir
        self.fs, self.base = storage.resolve(images_dir)
        if self.fs.get_file_info(self.base).type != pafs.FileType.Directory:
            raise IngestError(f"{images_dir}: images_dir is not a folder")
        prefix = self.base.rstrip("/") + "/"
        self.files: set[str] = {
            info.path[len(prefix):]
            for info in self.fs.get_file_info(pafs.FileSelector(self.base, recursive=True))
            if info.type == pafs.FileType.File and info.path.startswith(prefix)
        }

    def find(self, item_id: str, explicit: str | None) -> tuple[str | None, str | None]:
        """(relative path, None) or (None, reason it is missing)."""
        if explicit:
            return (explicit, None) if explicit in self.files else (
                None, f"image {explicit!r} not found in {self.uri}")
        names = [f"{item_id}.{e}" for e in IMAGE_EXTENSIONS + tuple(x.upper() for x in IMAGE_EXTENSIONS)]
        found = [n for n in names if n in self.files]
        if len(found) == 1:
            return found[0], None
        if not found:
            return None, f"no image {item_id}.{{{','.join(IMAGE_EXTENSIONS)}}} in {self.uri}"
        return None, f"ambiguous image: {found} all exist in {self.uri}; name one in the image column"

    def read(self, rel: str) -> bytes:
        with self.fs.open_input_stream(posixpath.join(self.base, rel)) as f:
            return f.read()


def _parse_catalog_row(uri: str, line: int, rec: dict[str, Any], cfg: IngestConfig) -> CatalogRow:
    """Validate one catalog record with the shared ``CatalogItem`` contract."""
    def cell(name: str) -> str:
        v = rec.get(name)
        return "" if v is None else _as_str(v).strip()

    split = cfg.split_of("catalog", cell("item_id"), cell("split"))
    if split not in SPLITS:
        raise IngestError(f"{uri} line {line}: split {split!r} is not one of {list(SPLITS)}")
    image = cell("image") or None
    if image and (image.startswith("/") or "://" in image or ".." in image.split("/")):
        raise IngestError(f"{uri} line {line}: image {image!r} must be a path inside images_dir")
    attributes = {
        str(k).strip(): _as_str(v) for k, v in rec.items()
        if k and str(k).strip() not in _RESERVED_CATALOG_COLUMNS and v is not None and _as_str(v) != ""
    } or None
    try:
        item = CatalogItem(item_id=cell("item_id"), title=cell("title"), image=b"", split=split,
                           attributes=attributes)
    except ValidationError as err:
        raise IngestError(f"{uri} line {line}: {_validation_message(err)}") from None
    return CatalogRow(line, item.item_id, item.title, item.split, image, item.attributes,
                      hashed=not cell("split") and not cfg.default_split)


def _iter_catalog(cfg: IngestConfig) -> Iterator[CatalogRow | IngestError]:
    """Every catalog row, validated; a bad row is yielded as its error so all can be reported."""
    assert cfg.catalog_file is not None
    for line, rec in _iter_records(cfg.catalog_file, REQUIRED_CATALOG_COLUMNS):
        try:
            yield _parse_catalog_row(cfg.catalog_file, line, rec, cfg)
        except IngestError as err:
            yield err


@dataclass
class _CatalogPlan:
    rows: int
    skipped: list[SkippedRow]
    images: _ImageIndex
    counts: dict[str, int]  # rows with an image file, per split: what a dry run would write at most
    hash_split: bool  # some row named no split and was placed by the hash


def _validate_catalog(cfg: IngestConfig) -> _CatalogPlan:
    """Pass 1: check every row and find every image file, reading no image bytes."""
    assert cfg.catalog_file is not None
    images = _ImageIndex(cfg.resolved_images_dir())
    first_line: dict[str, int] = {}
    errors: list[str] = []
    skipped: list[SkippedRow] = []
    counts: Counter[str] = Counter()
    rows = 0
    hashed = False
    for row in _iter_catalog(cfg):
        if isinstance(row, IngestError):
            errors.append(str(row))
            continue
        rows += 1
        if row.item_id in first_line:
            errors.append(f"{cfg.catalog_file} line {row.line}: duplicate item_id {row.item_id!r} "
                          f"(first on line {first_line[row.item_id]})")
            continue
        first_line[row.item_id] = row.line
        hashed = hashed or row.hashed
        _, reason = images.find(row.item_id, row.image)
        if reason:
            skipped.append(SkippedRow(row.line, row.item_id, row.image, f"missing: {reason}"))
        else:
            counts[row.split] += 1
    _raise_collected(errors)
    if rows == 0:
        raise IngestError(f"{cfg.catalog_file}: no catalog rows")
    return _CatalogPlan(rows, skipped, images, dict(counts), hashed)


def _load_image(images: _ImageIndex, rel: str, max_side: int) -> tuple[bytes | None, list[str], str | None]:
    """(bytes, conversions, None) or (None, [], reason): never raises, so one bad file skips one row."""
    try:
        data = images.read(rel)
    except Exception as err:  # noqa: BLE001 - any read failure skips the row, with the reason
        return None, [], f"unreadable: {describe_error(err).removeprefix('corrupt image: ')}"
    try:
        out, changes = normalise_for_catalog(data, max_side)
        return out, changes, None
    except ImageError as err:
        return None, [], str(err)


class _PartWriter:
    """Buffers rows per split and writes ``<split>-<part>.parquet`` every ``part_size`` rows."""

    def __init__(self, root: str, part_size: int) -> None:
        self.root, self.part_size = root, part_size
        self.buffers: dict[str, list[dict[str, Any]]] = {s: [] for s in SPLITS}
        self.next_part: Counter[str] = Counter()
        self.counts: Counter[str] = Counter()
        self.parts: list[str] = []

    def add(self, row: CatalogRow, image: bytes) -> None:
        attrs = list(row.attributes.items()) if row.attributes else None
        self.buffers[row.split].append({"item_id": row.item_id, "title": row.title, "image": image,
                                        "split": row.split, "attributes": attrs})
        if len(self.buffers[row.split]) >= self.part_size:
            self._flush(row.split)

    def _flush(self, split: str) -> None:
        rows = self.buffers[split]
        if not rows:
            return
        name = f"{split}-{self.next_part[split]:05d}"
        datasets.write_catalog_part(pa.Table.from_pylist(rows, schema=CATALOG_SCHEMA), self.root, name)
        self.next_part[split] += 1
        self.counts[split] += len(rows)
        self.parts.append(name)
        self.buffers[split] = []

    def close(self) -> None:
        for split in SPLITS:
            self._flush(split)


def _chunks(it: Iterator[CatalogRow], size: int) -> Iterator[list[CatalogRow]]:
    chunk: list[CatalogRow] = []
    for row in it:
        chunk.append(row)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _write_catalog(cfg: IngestConfig, plan: _CatalogPlan, report: IngestReport) -> None:
    """Pass 2: stream rows again, read and check images in threads, write parts as they fill."""
    skip_lines = {s.line for s in plan.skipped}
    report.skipped.extend(plan.skipped)
    rows = (r for r in _iter_catalog(cfg) if isinstance(r, CatalogRow) and r.line not in skip_lines)
    writer = _PartWriter(cfg.output, cfg.part_size)
    conversions: Counter[str] = Counter()
    bar = tqdm(total=plan.rows, desc="images", unit="img", disable=not cfg.progress)
    bar.update(len(plan.skipped))

    def work(row: CatalogRow) -> tuple[bytes | None, list[str], str | None]:
        rel, _ = plan.images.find(row.item_id, row.image)
        assert rel is not None  # pass 1 skipped every row without an image
        return _load_image(plan.images, rel, cfg.max_image_side)

    with ThreadPoolExecutor(max_workers=cfg.workers) as pool, bar:
        # Chunks bound memory: at most one chunk of decoded images is in flight at a time.
        for chunk in _chunks(rows, max(cfg.workers * 4, 32)):
            for row, (data, changes, reason) in zip(chunk, pool.map(work, chunk)):
                bar.update(1)
                if data is None:
                    report.skipped.append(SkippedRow(row.line, row.item_id, row.image, reason or "?"))
                    continue
                report.reencoded += bool(changes)
                for what in changes:
                    conversions[what] += 1
                writer.add(row, data)
    writer.close()
    report.skipped.sort(key=lambda s: s.line)
    report.catalog_counts = dict(writer.counts)
    report.catalog_parts = writer.parts
    report.conversions = dict(conversions)


# --------------------------------------------------------------------------- personas


@dataclass
class _PersonaRead:
    personas: list[Persona]
    warnings: list[str]
    hash_split: bool  # some persona named no split and was placed by the hash


def _id_column_warnings(uri: str, seen: set[str], used: set[str], rows: int, missing: int) -> list[str]:
    """Warnings for id-like columns that are not read, and for rows that fell back to line ids."""
    out = []
    ignored = sorted(k for k in seen if k not in used and (k in PERSONA_ID_COLUMNS or _ID_LIKE.search(k)))
    if ignored:
        out.append(f"{uri}: column(s) {ignored} look like ids but are not read; persona ids come from "
                   f"{' or '.join(PERSONA_ID_COLUMNS)} (first present wins), else persona-<line>")
    if used and missing:
        out.append(f"{uri}: {missing} of {rows} rows have no {' or '.join(PERSONA_ID_COLUMNS)}: "
                   f"their ids are persona-<line>")
    return out


def _read_personas(cfg: IngestConfig) -> _PersonaRead:
    """All personas of a .txt or .jsonl file, validated; every bad line is reported at once."""
    uri = cfg.personas_file
    assert uri is not None
    kind = _suffix(uri)
    errors: list[str] = []
    personas: list[Persona] = []
    first_line: dict[str, int] = {}
    hashed = False

    def add(line: int, persona_id: str, text: str, split: str) -> None:
        nonlocal hashed
        if not text.strip():
            errors.append(f"{uri} line {line}: empty persona text")
            return
        hashed = hashed or not split and not cfg.default_split
        split = cfg.split_of("personas", persona_id.strip(), split)
        if split not in SPLITS:
            errors.append(f"{uri} line {line}: split {split!r} is not one of {list(SPLITS)}")
            return
        try:
            p = Persona(persona_id=persona_id, text=text, split=split)
        except ValidationError as err:
            errors.append(f"{uri} line {line}: {_validation_message(err)}")
            return
        if p.persona_id in first_line:
            errors.append(f"{uri} line {line}: duplicate persona_id {p.persona_id!r} "
                          f"(first on line {first_line[p.persona_id]})")
            return
        first_line[p.persona_id] = line
        personas.append(p)

    warnings: list[str] = []
    if kind == ".txt":
        with _open_text(uri) as text:
            for line, raw in enumerate(text, start=1):
                if raw.strip():
                    add(line, f"persona-{line}", raw, "")
    elif kind in (".jsonl", ".ndjson"):
        seen: set[str] = set()  # column names: bounded by the file's schema, not its length
        used: set[str] = set()
        rows = missing = 0
        for line, rec in _iter_records(uri, ("text",)):
            seen.update(str(k) for k in rec)
            column = next((c for c in PERSONA_ID_COLUMNS if rec.get(c) is not None), None)
            rows += 1
            if column is None:
                missing += 1
            else:
                used.add(column)
            add(line, _as_str(rec[column]).strip() if column else f"persona-{line}",
                _as_str(rec["text"]), _as_str(rec.get("split") or "").strip())
        warnings = _id_column_warnings(uri, seen, used, rows, missing)
    else:
        raise IngestError(f"{uri}: unsupported persona file type {kind!r} (expected .txt or .jsonl)")
    _raise_collected(errors)
    if not personas:
        raise IngestError(f"{uri}: no personas")
    return _PersonaRead(personas, warnings, hashed)


def _empty_split_warnings(what: str, counts: dict[str, int], cfg: IngestConfig) -> list[str]:
    """Which splits came out empty, and what that stops: distillation needs all three."""
    empty = [s for s in SPLITS if not counts.get(s)]
    if not empty or not counts:
        return []
    fix = (f"default_split={cfg.default_split!r} put every row without a split there; leave it unset for a "
           "seeded split" if cfg.default_split else "leave split cells empty for a seeded split, or adjust "
           "split_fractions")
    return [f"{what} split(s) {empty} are empty: jobs/distill.py needs train, val and test ({fix})"]


# --------------------------------------------------------------------------- the command


def _prepare_output(cfg: IngestConfig) -> None:
    """Refuse to mix with an existing dataset root, or clear it (manifest first) when asked."""
    root = cfg.output
    existing = [u for u in (datasets.manifest_path(root), datasets.catalog_dir(root),
                            datasets.personas_path(root), storage.join(root, REPORT_NAME))
                if storage.exists(u)]
    if not existing:
        return
    if not cfg.overwrite:
        raise IngestError(f"{root}: output already holds {existing}; pass overwrite=true to replace it")
    for uri in existing:  # the manifest goes first, so a crash here leaves an incomplete root
        storage.delete(uri)


def ingest(cfg: IngestConfig) -> IngestReport:
    """Validate everything, then write catalog parts, personas, the report and (last) the manifest."""
    report = IngestReport(output=cfg.output, dry_run=cfg.dry_run)
    plan = _validate_catalog(cfg) if cfg.catalog_file else None
    read = _read_personas(cfg) if cfg.personas_file else None
    personas = read.personas if read is not None else None
    if read is not None:
        report.persona_counts = dict(Counter(p.split for p in read.personas))
        report.warnings.extend(read.warnings)
    if plan is not None and len(plan.skipped) == plan.rows:
        raise IngestError(f"{cfg.catalog_file}: every one of the {plan.rows} rows lacks its image, "
                          f"e.g. line {plan.skipped[0].line}: {plan.skipped[0].reason}")
    if (plan is not None and plan.hash_split) or (read is not None and read.hash_split):
        f = cfg.split_fractions
        report.split_rule = (f"rows without a split: seeded hash of the id (train {f.train:g} / val {f.val:g} / "
                             f"test {f.test:g}, split_seed {cfg.split_seed}); adding rows never moves old ones")
    if cfg.dry_run:
        if plan is not None:
            report.skipped = plan.skipped
            report.catalog_counts = plan.counts
        report.warnings.extend(_empty_split_warnings("catalog", report.catalog_counts, cfg)
                               + _empty_split_warnings("persona", report.persona_counts, cfg))
        return report

    _prepare_output(cfg)
    storage.makedirs(cfg.output)
    if plan is not None:
        _write_catalog(cfg, plan, report)
    if personas is not None:
        table = pa.Table.from_pylist([p.model_dump() for p in personas], schema=PERSONA_SCHEMA)
        datasets.write_personas(table, cfg.output)
    report.warnings.extend(_empty_split_warnings("catalog", report.catalog_counts, cfg)
                           + _empty_split_warnings("persona", report.persona_counts, cfg))
    storage.write_json_atomic(report.to_json(), storage.join(cfg.output, REPORT_NAME))
    if plan is not None and not report.catalog_counts:
        raise IngestError(f"{cfg.catalog_file}: all {plan.rows} catalog rows were skipped; no manifest "
                          f"written, see {storage.join(cfg.output, REPORT_NAME)}")
    storage.write_json_atomic(_manifest(cfg, report), datasets.manifest_path(cfg.output))
    return report


def _manifest(cfg: IngestConfig, report: IngestReport) -> dict[str, Any]:
    return {
        "kind": "ingest",
        "created_at": datetime.now(timezone.utc).isoformat(),
        "config": cfg.model_dump(mode="json"),
        "catalog": None if cfg.catalog_file is None else {
            "counts": report.catalog_counts,
            "total": sum(report.catalog_counts.values()),
            "parts": report.catalog_parts,
            "skipped": len(report.skipped),
            "reencoded": report.reencoded,
            "conversions": report.conversions,
        },
        "personas": None if cfg.personas_file is None else {
            "counts": report.persona_counts,
            "total": sum(report.persona_counts.values()),
        },
        "report": REPORT_NAME,
    }
