"""Hybrid queries: value types and the backend-independent parts (grouping, over-fetch, facet counts).

A `StoreQuery` names a dense (CLIP) vector, a sparse (BM25) vector or both. Both: each runs as a
prefetch with the filter, and the store fuses them (Fusion.Rrf / Fusion.Dbsf) -- in the engine,
not here. `order_by` sorts the fused candidates by a payload field instead (Qdrant's OrderBy);
`score_threshold` drops the candidates scoring below it first (Qdrant's score_threshold, on the fused
prefetch when the query is ordered).

Results per product: `VectorStore.query_groups` returns photo hits grouped by a payload key
(product_id). The server backend uses Qdrant's `query_points_groups`; the embedded engine has no
group-by, so it over-fetches points and groups them here (`overfetch_groups`): the fetch grows
4x per round until the page is full or the engine returned fewer points than asked (nothing
more matches), so a page is never short while more products exist, in at most
log4(points / first fetch) + 1 rounds.

The search service uses neither `query_groups` nor `facets`: it fetches each side's window with `query` and
groups, fuses, counts and pages in Python (engine/query/candidates.py, engine/query/fusion.py), the same on
both backends. They stay for other callers.

Facets count products, not photos: `count_facets` takes the candidate points a query retrieved
(the fused prefetch window) and counts each value once per distinct product. Qdrant's own facet
counts points, i.e. photos (8 per product in the demo world), and cannot be restricted to the
candidates of a vector query.
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from engine.store.base import Filter, Hit

SPARSE_VECTOR = "text"  # name of the sparse (BM25) vector in every collection built with one
FUSIONS = ("rrf", "dbsf")  # Qdrant's Reciprocal Rank Fusion and Distribution-Based Score Fusion
DIRECTIONS = ("asc", "desc")


@dataclass(frozen=True)
class SparseVector:
    indices: tuple[int, ...]  # token ids (BM25 hashes), distinct
    values: tuple[float, ...]  # weight of each token (documents: BM25 term frequency; queries: 1.0)

    def __post_init__(self) -> None:
        if len(self.indices) != len(self.values):
            raise ValueError(f"sparse vector has {len(self.indices)} indices but {len(self.values)} values")
        if len(set(self.indices)) != len(self.indices):
            raise ValueError("sparse vector indices must be distinct")
        if not all(math.isfinite(float(v)) for v in self.values):
            raise ValueError("sparse vector values must be finite")

    def __bool__(self) -> bool:
        return bool(self.indices)


@dataclass(frozen=True)
class Fusion:
    # "rrf" (reciprocal rank fusion) or "dbsf" (distribution-based score fusion)
    method: str = "rrf"
    # rrf: the k of 1/(k + rank); larger flattens the ranks' influence
    rrf_k: int = 60
    # rrf: weight of the dense and of the sparse prefetch; None = equal. dbsf has no weights in Qdrant.
    weights: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if self.method not in FUSIONS:
            raise ValueError(f"fusion method {self.method!r} is not supported; use one of {FUSIONS}")
        if not isinstance(self.rrf_k, numbers.Integral) or self.rrf_k < 1:
            raise ValueError(f"fusion rrf_k must be an int >= 1, got {self.rrf_k!r}")
        if self.weights is not None:
            if len(self.weights) != 2 or any(not math.isfinite(w) or w < 0 for w in self.weights):
                raise ValueError(f"fusion weights must be two finite numbers >= 0 (dense, sparse), got {self.weights}")
            if self.method != "rrf":
                raise ValueError("fusion weights apply to 'rrf' only; Qdrant's dbsf takes none")


@dataclass(frozen=True)
class OrderBy:
    key: str  # payload field with a float/integer index (e.g. "price")
    direction: str = "asc"  # "asc" or "desc"

    def __post_init__(self) -> None:
        if self.direction not in DIRECTIONS:
            raise ValueError(f"order direction {self.direction!r} is not supported; use one of {DIRECTIONS}")


@dataclass
class StoreQuery:
    dense: np.ndarray | None = None  # CLIP query vector; None: lexical only
    sparse: SparseVector | None = None  # BM25 query vector; None or empty: dense only
    filter: Filter | None = None  # applies to every prefetch (and so to the result)
    fusion: Fusion = field(default_factory=Fusion)  # how a dense + sparse query is fused
    prefetch_limit: int = 256  # candidates each side contributes before fusion (and before order_by)
    order_by: OrderBy | None = None  # sort the candidates by a payload field instead of by score
    # drop candidates scoring below this (the fused score when hybrid) before they are ranked or ordered
    score_threshold: float | None = None

    def __post_init__(self) -> None:
        if self.dense is None and not self.sparse:
            raise ValueError("a store query needs a dense vector, a non-empty sparse vector, or both")
        if not isinstance(self.prefetch_limit, numbers.Integral) or self.prefetch_limit < 1:
            raise ValueError(f"prefetch_limit must be an int >= 1, got {self.prefetch_limit!r}")
        if self.score_threshold is not None and not math.isfinite(self.score_threshold):
            raise ValueError(f"score_threshold must be a finite number or None, got {self.score_threshold!r}")

    @property
    def hybrid(self) -> bool:
        return self.dense is not None and bool(self.sparse)

    @property
    def windowed(self) -> bool:
        """Whether the candidates are a prefetch window (hybrid or ordered) rather than the whole collection."""
        return self.hybrid or self.order_by is not None

    def window(self) -> int:
        """Most candidate points the query can return: the union of its prefetches (when windowed)."""
        return self.prefetch_limit * (2 if self.hybrid else 1)


@dataclass
class Group:
    key: Any  # the group-by value (product id)
    hits: list[Hit]  # its photos, best first (at most group_size)

    @property
    def score(self) -> float:
        return self.hits[0].score


@dataclass
class FacetCounts:
    # field -> value -> distinct products having it (among the candidates)
    values: dict[str, dict[Any, int]]
    # field -> [(low, high, products)] for the range facets asked for
    ranges: dict[str, list[tuple[float | None, float | None, int]]]
    products: int  # distinct products among the candidates
    points: int  # candidate points (photos) counted
    complete: bool  # False when the candidate window was full (more points could match)


def group_hits(hits: Sequence[Hit], key: str, group_size: int) -> list[Group]:
    """Hits grouped by payload `key` in order of each group's first (best) hit; hits without the key are dropped."""
    groups: dict[Any, Group] = {}
    for hit in hits:
        value = hit.payload.get(key)
        if value is None:
            continue
        group = groups.get(_hashable(value))
        if group is None:
            groups[_hashable(value)] = Group(value, [hit])
        elif len(group.hits) < group_size:
            group.hits.append(hit)
    return list(groups.values())


def overfetch_groups(fetch: Callable[[int], list[Hit]], key: str, want: int, group_size: int,
                     first: int | None = None) -> list[Group]:
    """The first `want` groups from a ranked point list the engine can only return flat.

    `fetch(n)` returns the best n points (fewer when fewer match). The fetch grows 4x per round until
    `want` groups are complete or the engine ran out of points."""
    check_group_args(want, group_size)
    n = max(first or want * group_size, want, 16)
    while True:
        hits = fetch(n)
        groups = group_hits(hits, key, group_size)
        if len(hits) < n:  # everything that matches is in: the groups are complete
            return groups[:want]
        if len(groups) >= want:  # the first `want` groups and their order are final
            return groups[:want]
        n *= 4


def check_group_args(limit: int, group_size: int) -> None:
    for name, value in (("group limit", limit), ("group_size", group_size)):
        if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")


def count_facets(hits: Sequence[Hit], group_by: str, fields: Sequence[str],
                 ranges: Mapping[str, Sequence[tuple[float | None, float | None]]], complete: bool) -> FacetCounts:
    """Per-product counts of each field's values and of each range bucket [low, high), over the candidate hits.

    A product counts once per value (its photos share category, colour and price); a list value counts
    each element."""
    seen: dict[str, dict[Any, set]] = {f: {} for f in fields}
    range_seen: dict[str, list[set]] = {f: [set() for _ in buckets] for f, buckets in ranges.items()}
    products = set()
    for hit in hits:
        product = hit.payload.get(group_by)
        if product is None:
            continue
        products.add(_hashable(product))
        for name in fields:
            value = payload_value(hit.payload, name)
            for v in value if isinstance(value, list) else [value]:
                if v is not None:
                    seen[name].setdefault(_hashable(v), set()).add(_hashable(product))
        for name, buckets in ranges.items():
            value = payload_value(hit.payload, name)
            if not isinstance(value, numbers.Real) or isinstance(value, bool):
                continue
            for i, (low, high) in enumerate(buckets):
                if (low is None or value >= low) and (high is None or value < high):
                    range_seen[name][i].add(_hashable(product))
    values = {f: dict(sorted(((v, len(s)) for v, s in seen[f].items()), key=lambda kv: (-kv[1], str(kv[0]))))
              for f in fields}
    counted = {f: [(lo, hi, len(range_seen[f][i])) for i, (lo, hi) in enumerate(buckets)]
               for f, buckets in ranges.items()}
    return FacetCounts(values, counted, len(products), len(hits), complete)


def payload_value(payload: Mapping[str, Any], path: str) -> Any:
    """A payload field by dotted path ("attributes.colour"); None when absent."""
    value: Any = payload
    for part in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def _hashable(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value
