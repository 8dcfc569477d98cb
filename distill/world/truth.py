"""The demo world's hidden utility: how much a persona wants a product, known exactly.

It is the cosine similarity between the persona text and the product *title* under the
shipped MiniLM sentence encoder: exactly what the text-oracle teacher sees before it adds
position bias or noise. So a tournament winner can be scored against the true best product,
and the student (which only sees pixels) is measured against a truth it never observes.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from distill import datasets, storage
from distill.text_encoder import shared_encoder

TITLE_EMBEDDINGS_SCHEMA = pa.schema(
    [
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("embedding", pa.list_(pa.float32()), nullable=False),
    ],
    metadata={"persona_distill.table": "title_embeddings", "persona_distill.version": "1"},
)


def utility(persona_texts: list[str], titles: list[str]) -> np.ndarray:
    """(P, N) float32 cosine similarities of each persona text to each product title."""
    enc = shared_encoder()
    return enc.encode(list(persona_texts)) @ enc.encode(list(titles)).T


def title_embeddings_path(root: str) -> str:
    """Beside the catalog, never inside it: the catalog table stays model-agnostic."""
    return storage.join(root, "truth", "title_embeddings.parquet")


def title_embeddings(root: str) -> tuple[list[str], np.ndarray]:
    """(item_ids, (N, dim) unit vectors) for a world's whole catalog, cached under the root.

    The cache is keyed by the set of item ids, so a rebuilt world with other products
    recomputes it; the first call costs one encoder pass over all titles.
    """
    catalog = datasets.read_catalog(root, columns=["item_id", "title"])
    ids = catalog.column("item_id").to_pylist()
    path = title_embeddings_path(root)
    if storage.exists(path):
        cached = storage.read_table(path, schema=TITLE_EMBEDDINGS_SCHEMA)
        cached_ids = cached.column("item_id").to_pylist()
        if set(cached_ids) == set(ids):
            matrix = np.asarray(cached.column("embedding").to_pylist(), dtype=np.float32)
            return cached_ids, matrix
    matrix = shared_encoder().encode(catalog.column("title").to_pylist())
    table = pa.table({"item_id": ids, "embedding": [row for row in matrix]}, schema=TITLE_EMBEDDINGS_SCHEMA)
    storage.write_table_atomic(table, path, TITLE_EMBEDDINGS_SCHEMA)
    return ids, matrix


def world_utility(root: str, persona_texts: list[str], item_ids: list[str]) -> np.ndarray:
    """(P, N) utilities of ``item_ids`` of the world at ``root``, using the cached title embeddings."""
    ids, matrix = title_embeddings(root)
    index = {item_id: i for i, item_id in enumerate(ids)}
    try:
        rows = [index[i] for i in item_ids]
    except KeyError as err:
        raise KeyError(f"item {err.args[0]!r} is not in the world at {root!r}") from None
    return shared_encoder().encode(list(persona_texts)) @ matrix[rows].T
