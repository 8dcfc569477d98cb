"""Search over loaded shards in one process: plain, filtered, by stored vector; exact merge.

One class, :class:`LocalIndex`, answers every query kind the endpoint offers, over the shards it
holds: all of them in the one-hop layout (the ingress replica), one in the sharded layout (a
shard replica), all of them in the bench's in-process ceiling. Keeping one code path is what
makes "both layouts return identical results" a property rather than a hope.

Filters (``{"article": "mug"}``, or a list of accepted values per key; every key must match) are
applied *inside* the search with a FAISS ``IDSelector`` over the matching labels, so ``k`` hits
come back whenever ``k`` items match. When an approximate index still returns fewer (an IVF
whose probed cells hold fewer matches), or when few items match, the matching items' vectors
are scored exactly instead, which is also the cheapest plan for a small subset.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from serving.index import IndexManifest, Shard, merge_topk, shard_of

Filters = Mapping[str, str | Sequence[str]]
EXACT_BELOW = 4096  # matching items scored exactly (no selector) below this many per shard


def filter_key(filters: Filters | None) -> tuple | None:
    """A hashable, order-free form of a filter (None for no filter)."""
    if not filters:
        return None
    return tuple(sorted((k, (v,) if isinstance(v, str) else tuple(sorted(set(v)))) for k, v in filters.items()))


class ShardView:
    """A loaded shard plus what filtered and by-vector queries need (label postings, reconstruction)."""

    def __init__(self, shard: Shard):
        self.shard = shard
        self.index = shard.index
        self._labels: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self._direct_map = False
        attrs = shard.attributes
        if attrs is not None and len(attrs) and attrs.null_count < len(attrs):
            offsets = attrs.offsets.to_numpy()
            self._entry_row = np.repeat(np.arange(len(attrs)), np.diff(offsets))
            start, stop = int(offsets[0]), int(offsets[-1])
            self._keys = attrs.keys.slice(start, stop - start)
            self._values = attrs.items.slice(start, stop - start)
        else:
            self._entry_row = None

    def attributes_of(self, row: int) -> dict[str, str] | None:
        a = self.shard.attributes
        if a is None or not a[row].is_valid:
            return None
        return dict(a[row].as_py())

    def item(self, item_id: str) -> dict | None:
        row = self.shard._row.get(item_id)
        if row is None:
            return None
        return {"item_id": item_id, "title": self.shard.titles[row], "image_uri": self.shard.image_uris[row],
                "attributes": self.attributes_of(row)}

    def labels(self, key: tuple) -> np.ndarray:
        """Sorted FAISS labels of the items matching a filter key (cached, bounded)."""
        hit = self._labels.get(key)
        if hit is not None:
            self._labels.move_to_end(key)
            return hit
        if self._entry_row is None:
            rows = np.zeros(0, np.int64)
        else:
            keep = None
            for name, values in key:
                mask = pc.and_(pc.equal(self._keys, name), pc.is_in(self._values, value_set=pa.array(values)))
                rows_k = np.unique(self._entry_row[np.asarray(mask.fill_null(False))])
                keep = rows_k if keep is None else np.intersect1d(keep, rows_k, assume_unique=True)
            rows = keep.astype(np.int64)
        self._labels[key] = rows
        while len(self._labels) > 256:
            self._labels.popitem(last=False)
        return rows

    def vectors(self, labels: np.ndarray) -> np.ndarray:
        """Stored vectors of some labels (IVF indexes get their direct map on first use)."""
        import faiss

        if not self._direct_map:
            try:
                faiss.extract_index_ivf(self.index).make_direct_map()
            except RuntimeError:  # not an IVF index: reconstruct works as is
                pass
            self._direct_map = True
        labels = np.asarray(labels, dtype=np.int64)
        if len(labels) == 0:
            return np.zeros((0, self.index.d), np.float32)
        return np.ascontiguousarray(self.index.reconstruct_batch(labels), dtype=np.float32)

    def _ids(self, labels: np.ndarray) -> list[list[str | None]]:
        ids = self.shard.item_ids
        return [[ids[j] if j >= 0 else None for j in row] for row in labels]

    def search(self, q: np.ndarray, k: int, key: tuple | None = None) -> tuple[np.ndarray, list[list[str | None]]]:
        if key is None:
            return self.shard.search(q, k)
        allowed = self.labels(key)
        kk = min(k, len(allowed))
        if kk == 0:
            return np.zeros((len(q), 0), np.float32), [[] for _ in range(len(q))]
        if len(allowed) > EXACT_BELOW:
            scores, labels = self.index.search(q, kk, params=self._params(allowed))
            if (labels >= 0).sum(axis=1).min() >= kk:
                return scores, self._ids(labels)
        # exact over the matching items: few of them, or the ANN probed too few of them
        sims = q @ self.vectors(allowed).T
        top = np.argsort(-sims, axis=1, kind="stable")[:, :kk]
        return np.take_along_axis(sims, top, axis=1), self._ids(allowed[top])

    def _params(self, allowed: np.ndarray):
        import faiss

        sel = faiss.IDSelectorBatch(allowed)
        if isinstance(self.index, faiss.IndexIVF):
            params = faiss.SearchParametersIVF(sel=sel, nprobe=self.index.nprobe)
        elif isinstance(self.index, faiss.IndexHNSW):
            params = faiss.SearchParametersHNSW(sel=sel, efSearch=self.index.hnsw.efSearch)
        else:
            params = faiss.SearchParameters(sel=sel)
        params._keep = sel  # the selector must outlive the call
        return params


class LocalIndex:
    """Some (or all) shards of one index version, loaded in this process."""

    def __init__(self, root: str, manifest: IndexManifest, shards: Sequence[int] | None = None, verify: bool = True,
                 search_params: str | None = None, omp_threads: int | None = None):
        self.manifest = manifest
        self.shard_ids = list(range(manifest.n_shards)) if shards is None else list(shards)
        self.views = {s: ShardView(Shard(root, manifest, s, verify=verify, search_params=search_params,
                                         omp_threads=omp_threads)) for s in self.shard_ids}

    @property
    def version(self) -> str:
        return self.manifest.version

    def __len__(self) -> int:
        return sum(len(v.shard) for v in self.views.values())

    def _owner(self, item_id: str) -> ShardView | None:
        return self.views.get(shard_of(item_id, self.manifest.n_shards))

    def item(self, item_id: str) -> dict | None:
        view = self._owner(item_id)
        return view.item(item_id) if view else None

    def vector_of(self, item_id: str) -> np.ndarray | None:
        view = self._owner(item_id)
        row = view.shard._row.get(item_id) if view else None
        return None if row is None else view.vectors(np.array([row]))[0]

    def search(self, q: np.ndarray, k: int, filters: Filters | None = None) -> tuple[np.ndarray, list[list[str]]]:
        """Exact merge of the held shards' top-k (scores [nq, <=k], ids [nq][<=k])."""
        q = np.ascontiguousarray(q, dtype=np.float32).reshape(-1, self.manifest.dim)
        key = filter_key(filters)
        return merge_topk((v.search(q, k, key) for v in self.views.values()), k)

    def search_many(self, q: np.ndarray, ks: Sequence[int], filters: Sequence[Filters | None]
                    ) -> list[tuple[np.ndarray, list[str]]]:
        """Per query row its own k and filter; rows sharing a filter go to FAISS as one batch."""
        groups: dict[tuple | None, list[int]] = {}
        for r, f in enumerate(filters):
            groups.setdefault(filter_key(f), []).append(r)
        out: list = [None] * len(ks)
        for key, rows in groups.items():
            kmax = max(ks[r] for r in rows)
            sub = np.ascontiguousarray(q[rows], dtype=np.float32)
            scores, ids = merge_topk((v.search(sub, kmax, key) for v in self.views.values()), kmax)
            for i, r in enumerate(rows):
                n = min(ks[r], len(ids[i]))
                out[r] = (scores[i, :n], ids[i][:n])
        return out

    def records(self, ids) -> dict[str, dict]:
        return {iid: self.item(iid) for top in ids for iid in top}
