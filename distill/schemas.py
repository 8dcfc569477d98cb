"""Data contracts: the Arrow schemas every Parquet file is written with, and pydantic row models.

Why both: Arrow schemas make the files self-describing and stable across writers (Ray Data,
pyarrow, a user's own Spark job); pydantic row models validate data where it crosses a
boundary (ingest, job configs, HTTP). ``tests/test_schemas.py`` keeps the two in step.
"""

from __future__ import annotations

from typing import Literal

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, field_validator

# The one persona length limit, shared by ingest, the judges and the HTTP endpoint (whose OpenAPI
# states it). Why 2,000 characters: about 500 tokens, room for a rich description yet a small
# fraction of a VLM judge's prompt budget (the k images cost far more); text encoders truncate
# much earlier anyway (CLIP at 77 tokens, MiniLM at 256), so longer text only costs judge time.
PERSONA_MAX_CHARS = 2000
# A persona must hold at least one visible character: blank, no-break-space-only or control-only
# text is rejected alike by ingest and the endpoint, whose OpenAPI publishes this very pattern
# (written so that JSON Schema's ECMA regex and Python's `re` agree on it).
PERSONA_VISIBLE_PATTERN = r"[^\s\ufeff\x00-\x1f\x7f-\x9f]"


def check_persona_text(text: str) -> str:
    """The persona stripped; ValueError if it has no visible character or holds a lone surrogate."""
    import re

    if any("\ud800" <= c <= "\udfff" for c in text):
        raise ValueError("must be valid Unicode (it holds a lone surrogate)")
    if not re.search(PERSONA_VISIBLE_PATTERN, text):
        raise ValueError("must hold a visible character (not only spaces or control characters)")
    return text.strip()

Split = Literal["train", "val", "test"]
SPLITS: tuple[str, ...] = ("train", "val", "test")

CATALOG_SCHEMA = pa.schema(
    [
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("title", pa.string(), nullable=False),
        pa.field("image", pa.binary(), nullable=False),  # encoded PNG/JPEG/WebP bytes
        pa.field("split", pa.string(), nullable=False),
        pa.field("attributes", pa.map_(pa.string(), pa.string()), nullable=True),
    ],
    metadata={"persona_distill.table": "catalog", "persona_distill.version": "1"},
)

PERSONA_SCHEMA = pa.schema(
    [
        pa.field("persona_id", pa.string(), nullable=False),
        pa.field("text", pa.string(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
    ],
    metadata={"persona_distill.table": "personas", "persona_distill.version": "1"},
)

# One row per judged match. ``candidate_ids`` is the order shown in the first view;
# ``scores`` is the (view-averaged) preference distribution aligned with it. ``view_label_mass``
# is, per view, the probability the judge's model put on the k option labels *before* they were
# renormalised into ``view_scores`` (null where a judge has no such number, e.g. the text oracle):
# a view with little mass is a confident-looking distribution over answers the model rarely gives.
MATCH_SCHEMA = pa.schema(
    [
        pa.field("match_key", pa.string(), nullable=False),
        pa.field("tournament_id", pa.string(), nullable=False),
        pa.field("persona_id", pa.string(), nullable=False),
        pa.field("round", pa.int32(), nullable=False),
        pa.field("match_index", pa.int32(), nullable=False),
        pa.field("candidate_ids", pa.list_(pa.string()), nullable=False),
        pa.field("scores", pa.list_(pa.float32()), nullable=True),
        pa.field("winner_id", pa.string(), nullable=False),
        pa.field("view_orders", pa.list_(pa.list_(pa.int16())), nullable=False),
        pa.field("view_scores", pa.list_(pa.list_(pa.float32())), nullable=True),
        pa.field("view_label_mass", pa.list_(pa.float32()), nullable=True),
        pa.field("teacher_calls", pa.int32(), nullable=False),
        pa.field("judge_id", pa.string(), nullable=False),
        pa.field("prompt_version", pa.string(), nullable=False),
        pa.field("error", pa.string(), nullable=True),
        pa.field("attempt_id", pa.string(), nullable=False),
    ],
    metadata={"persona_distill.table": "matches", "persona_distill.version": "1"},
)

TOURNAMENT_SCHEMA = pa.schema(
    [
        pa.field("tournament_id", pa.string(), nullable=False),
        pa.field("persona_id", pa.string(), nullable=False),
        pa.field("n_candidates", pa.int32(), nullable=False),
        pa.field("k", pa.int32(), nullable=False),
        pa.field("n_rounds", pa.int32(), nullable=False),
        pa.field("n_matches", pa.int32(), nullable=False),
        pa.field("teacher_calls", pa.int32(), nullable=False),
        pa.field("winner_id", pa.string(), nullable=False),
        pa.field("seed", pa.int64(), nullable=False),
    ],
    metadata={"persona_distill.table": "tournaments", "persona_distill.version": "1"},
)

# The round in which each candidate lost; the winner's row has a null round.
ELIMINATION_SCHEMA = pa.schema(
    [
        pa.field("tournament_id", pa.string(), nullable=False),
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("eliminated_in_round", pa.int32(), nullable=True),
    ],
    metadata={"persona_distill.table": "eliminations", "persona_distill.version": "1"},
)


class CatalogItem(BaseModel):
    """One product as a user hands it to ingest (image bytes are validated separately)."""

    model_config = ConfigDict(extra="forbid")

    item_id: str = Field(min_length=1, max_length=256)
    title: str = Field(min_length=1, max_length=2000)
    image: bytes
    split: Split = "test"
    attributes: dict[str, str] | None = None

    @field_validator("item_id", "title")
    @classmethod
    def _not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must not be blank")
        return v.strip()


class Persona(BaseModel):
    """One shopper description."""

    model_config = ConfigDict(extra="forbid")

    persona_id: str = Field(min_length=1, max_length=256)
    text: str = Field(min_length=1, max_length=PERSONA_MAX_CHARS)
    split: Split = "test"

    @field_validator("persona_id")
    @classmethod
    def _not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must not be blank")
        return v.strip()

    @field_validator("text")
    @classmethod
    def _visible(cls, v: str) -> str:
        return check_persona_text(v)


class MatchRecord(BaseModel):
    """A judged match, as read back from ``matches`` Parquet."""

    match_key: str
    tournament_id: str
    persona_id: str
    round: int
    match_index: int
    candidate_ids: list[str]
    scores: list[float] | None
    winner_id: str
    view_orders: list[list[int]]
    view_scores: list[list[float]] | None
    view_label_mass: list[float | None] | None = None
    teacher_calls: int
    judge_id: str
    prompt_version: str
    error: str | None
    attempt_id: str


class TournamentResult(BaseModel):
    """A finished tournament."""

    tournament_id: str
    persona_id: str
    n_candidates: int
    k: int
    n_rounds: int
    n_matches: int
    teacher_calls: int
    winner_id: str
    seed: int


class Elimination(BaseModel):
    tournament_id: str
    item_id: str
    eliminated_in_round: int | None


ROW_MODELS: dict[str, tuple[pa.Schema, type[BaseModel]]] = {
    "catalog": (CATALOG_SCHEMA, CatalogItem),
    "personas": (PERSONA_SCHEMA, Persona),
    "matches": (MATCH_SCHEMA, MatchRecord),
    "tournaments": (TOURNAMENT_SCHEMA, TournamentResult),
    "eliminations": (ELIMINATION_SCHEMA, Elimination),
}


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """Select and cast ``table`` to ``schema``; a missing column is a clear error."""
    missing = [f.name for f in schema if f.name not in table.column_names]
    if missing:
        raise ValueError(
            f"table is missing column(s) {missing}; expected {schema.names}, got {table.column_names}"
        )
    return table.select(schema.names).cast(schema)
