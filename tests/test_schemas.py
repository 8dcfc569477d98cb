"""The Arrow schemas and pydantic row models describe the same rows, and ``conform`` guards them."""

from __future__ import annotations

import pyarrow as pa
import pytest
from pydantic import ValidationError

from distill.schemas import CATALOG_SCHEMA, PERSONA_SCHEMA, ROW_MODELS, CatalogItem, Persona, conform


@pytest.mark.parametrize("table", sorted(ROW_MODELS))
def test_schema_and_model_have_the_same_fields(table: str) -> None:
    schema, model = ROW_MODELS[table]
    assert schema.names == list(model.model_fields), table
    assert schema.metadata[b"persona_distill.table"] == table.encode()


@pytest.mark.parametrize("table", sorted(ROW_MODELS))
def test_conform_names_a_missing_column(table: str) -> None:
    schema, _ = ROW_MODELS[table]
    dropped = schema.names[0]
    partial = pa.table({f.name: pa.array([], f.type) for f in schema if f.name != dropped})
    with pytest.raises(ValueError, match=rf"missing column\(s\) \['{dropped}'\]"):
        conform(partial, schema)


def test_conform_selects_orders_and_casts() -> None:
    table = pa.table({"split": ["test"], "extra": [1], "text": ["a"], "persona_id": ["p1"]})
    out = conform(table, PERSONA_SCHEMA)
    assert out.schema.names == PERSONA_SCHEMA.names
    assert out.to_pylist() == [{"persona_id": "p1", "text": "a", "split": "test"}]


def test_row_models_reject_blank_and_bad_split() -> None:
    assert Persona(persona_id=" p ", text=" hi ").model_dump() == {"persona_id": "p", "text": "hi", "split": "test"}
    with pytest.raises(ValidationError):
        Persona(persona_id="p", text="   ")
    with pytest.raises(ValidationError):
        CatalogItem(item_id="a", title="t", image=b"", split="training")
    with pytest.raises(ValidationError):
        CatalogItem(item_id="a", title="t", image=b"", colour="red")  # extra fields forbidden
    item = CatalogItem(item_id="a", title="t", image=b"\x89PNG", attributes={"c": "r"})
    row = pa.Table.from_pylist([{**item.model_dump(), "attributes": list(item.attributes.items())}],
                               schema=CATALOG_SCHEMA)
    assert row.num_rows == 1
