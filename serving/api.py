"""The HTTP contract of the search endpoint: request and response models, limits, error bodies.

Everything a client can send is checked here, before any model runs, and every status the
server can answer is declared in the OpenAPI (``ERRORS``):

* types are strict: ``k`` is an integer (``"3"`` and ``true`` are 422; ``3.0`` is an integer in
  JSON Schema and accepted), floats must be finite;
* a persona holds at least one visible character (``distill.schemas.check_persona_text``, the
  rule ingest applies too; the OpenAPI publishes it as a ``pattern``) and at most
  ``PERSONA_MAX_CHARS`` characters (the one limit ingest and the judges share); a lone surrogate
  is a 422;
* a 422 body always renders: inputs that JSON cannot carry (NaN, infinity, lone surrogates)
  are replaced by their ``repr`` in the error list;
* a body that is not JSON where JSON is expected is a 415 (``text/plain`` included); bytes that
  are not UTF-8 JSON are a 400; an image of another type is a 415, an oversized one a 413.
"""

# (no `from __future__ import annotations`: FastAPI reads the real types)

import json
import math
from typing import Annotated, Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints

from distill.schemas import PERSONA_MAX_CHARS, PERSONA_VISIBLE_PATTERN, check_persona_text

MAX_K = 1000
MAX_BATCH = 64
MAX_FILTER_KEYS = 16
MAX_FILTER_VALUES = 64
MAX_IMAGE_BYTES = 8 * 2**20
IMAGE_TYPES = ("image/png", "image/jpeg", "image/webp")
JSON_ROUTES = ("/v1/search", "/v1/search/batch", "/v1/search/vector", "/v1/search/item")
RETRY_AFTER_S = 1


def _strict_int(v: Any) -> Any:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ValueError("must be a JSON integer (not a string or boolean)")
    if isinstance(v, float):
        if not math.isfinite(v) or not v.is_integer():
            raise ValueError("must be a finite integer")
        return int(v)
    return v


def _strict_str(v: Any) -> Any:
    if not isinstance(v, str):
        raise ValueError("must be a JSON string")
    return v


# constraints before the validator, so the OpenAPI states them as minimum / maximum
K = Annotated[int, Field(ge=1, le=MAX_K, description="number of products to return"), BeforeValidator(_strict_int)]
PersonaText = Annotated[
    str, Field(min_length=1, max_length=PERSONA_MAX_CHARS, json_schema_extra={"pattern": PERSONA_VISIBLE_PATTERN},
               description=f"free-text persona: 1-{PERSONA_MAX_CHARS} characters, at least one of them visible"),
    BeforeValidator(_strict_str), AfterValidator(check_persona_text)]
AttrText = Annotated[str, StringConstraints(min_length=1, max_length=256), BeforeValidator(_strict_str)]
FilterValue = AttrText | Annotated[list[AttrText], Field(min_length=1, max_length=MAX_FILTER_VALUES)]
Filters = Annotated[dict[AttrText, FilterValue], Field(max_length=MAX_FILTER_KEYS, description=(
    "attribute filters applied inside the search: every key must match one of its values, e.g. "
    '{"article": "mug"} or {"colour": ["red", "blue"]}; k hits come back whenever k items match'))]
FILTER_EXAMPLE = {"article": ["mug", "tote bag"]}


class SearchRequest(BaseModel):
    """A shopper's persona and how many products to return."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"persona": "a gift for a mother who loves gardening", "k": 10},
        {"persona": "a coffee-loving software engineer", "k": 5, "filters": FILTER_EXAMPLE}]})

    persona: PersonaText
    k: K = 10
    filters: Filters | None = None


class BatchSearchRequest(BaseModel):
    """Several personas in one request (each gets its own top-k)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"personas": ["a teenager obsessed with space and rockets", "a quiet librarian who likes owls"], "k": 5}]})

    personas: list[PersonaText] = Field(min_length=1, max_length=MAX_BATCH)
    k: K = 10
    filters: Filters | None = None


FiniteFloat = Annotated[float, BeforeValidator(lambda v: _finite(v))]


def _finite(v: Any) -> Any:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ValueError("must be a finite JSON number")
    return float(v)


class VectorSearchRequest(BaseModel):
    """A query embedding (the index's dimension; normalised here, scores are cosines)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"vector": [0.1, -0.2, 0.3], "k": 10}]})

    vector: list[FiniteFloat] = Field(min_length=1, max_length=8192, description=(
        "query embedding with the index's dimension (stated in this OpenAPI as minItems/maxItems)"))
    k: K = 10
    filters: Filters | None = None


class ItemSearchRequest(BaseModel):
    """More like this: the products nearest to an indexed product (itself excluded)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"item_id": "sku-0007", "k": 10}]})

    item_id: AttrText
    k: K = 10
    filters: Filters | None = None


class Item(BaseModel):
    item_id: str
    title: str | None = None
    image_uri: str | None = None
    attributes: dict[str, str] | None = None


class Hit(Item):
    rank: int = Field(description="1-based rank")
    score: float = Field(description="cosine similarity of query and product embeddings")


class SearchResponse(BaseModel):
    hits: list[Hit]
    index_version: str
    checkpoint_id: str
    took_ms: float


class HitList(BaseModel):
    hits: list[Hit]


class BatchSearchResponse(BaseModel):
    results: list[HitList] = Field(description="one hit list per persona, in request order")
    index_version: str
    checkpoint_id: str
    took_ms: float


class Health(BaseModel):
    status: str
    index_version: str | None = None
    layout: str | None = None
    detail: dict[str, str] | None = None


class Problem(BaseModel):
    detail: Any = Field(description="what was wrong (a message, or FastAPI's list of field errors)")


_RETRY_HEADER = {"Retry-After": {"description": "seconds to wait before retrying (on shedding)",
                                 "schema": {"type": "string"}}}
ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": Problem, "description": "the body is not UTF-8 JSON"},
    415: {"model": Problem, "description": "wrong Content-Type (JSON routes take application/json)"},
    422: {"model": Problem, "description": "the request does not match the schema (types, limits, blank persona)"},
    503: {"model": Problem, "description": "past capacity (shed: retry after Retry-After seconds) or a "
                                           "replica the search needs is restarting", "headers": _RETRY_HEADER},
}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {c: ERRORS[c] for c in codes}


def _renderable(obj: Any) -> Any:
    """Replace what JSON cannot carry (NaN, inf, lone surrogates, bytes, objects) by a repr."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return repr(obj)
    if isinstance(obj, str):
        try:
            obj.encode("utf-8")
            return obj
        except UnicodeEncodeError:
            return obj.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(obj, (bool, int, float)) or obj is None:
        return obj
    if isinstance(obj, dict):
        return {str(_renderable(k)): _renderable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_renderable(v) for v in obj]
    return _renderable(str(obj))


async def validation_error_handler(request: Request, exc: RequestValidationError) -> JSONResponse:
    """FastAPI's 422 body, made renderable whatever the input held."""
    errs = []
    for e in exc.errors():
        e = {k: v for k, v in e.items() if k in ("type", "loc", "msg", "input", "ctx")}
        if isinstance(e.get("input"), (bytes, bytearray)):
            e["input"] = f"<{len(e['input'])} bytes>"
        errs.append(_renderable(e))
    return JSONResponse(status_code=422, content={"detail": errs})


def media_type_problem(path: str, method: str, content_type: str | None) -> tuple[int, str] | None:
    """(status, message) when a POST's Content-Type does not fit its route, else None."""
    if method != "POST":
        return None
    ct = (content_type or "").split(";")[0].strip().lower()
    if any(path.endswith(r) for r in JSON_ROUTES):
        if ct and ct != "application/json" and not ct.endswith("+json"):
            return 415, f"{path} takes application/json, not {ct!r}"
    elif path.endswith("/v1/search/image"):
        if ct not in IMAGE_TYPES:
            return 415, f"{path} takes one of {', '.join(IMAGE_TYPES)}, not {ct or 'no Content-Type'!r}"
    return None


def image_problem(data: bytes, content_type: str) -> tuple[int, str] | None:
    """(status, message) for an upload that is too large, empty, not the declared type or undecodable."""
    import io

    from PIL import Image

    if len(data) > MAX_IMAGE_BYTES:
        return 413, f"image is {len(data):,} bytes; the limit is {MAX_IMAGE_BYTES:,}"
    if not data:
        return 422, "empty image body"
    want = {"image/png": "PNG", "image/jpeg": "JPEG", "image/webp": "WEBP"}[content_type]
    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.format != want:
                return 415, f"the body is {im.format or 'not an image'}, the Content-Type says {content_type}"
            if im.width * im.height > 40_000_000:
                return 413, f"image is {im.width}x{im.height} pixels; the limit is 40 megapixels"
            im.load()
    except Exception as err:  # noqa: BLE001 - any decoder failure is the client's bad image
        return 422, f"the body is not a decodable {want} image ({type(err).__name__})"
    return None


IMAGE_BODY = {"required": True, "content": {t: {"schema": {"type": "string", "format": "binary"}} for t in IMAGE_TYPES},
              "description": f"the image's bytes (PNG, JPEG or WebP, at most {MAX_IMAGE_BYTES // 2**20} MiB)"}


def json_dumps(obj: Any) -> str:
    return json.dumps(obj, allow_nan=False)
