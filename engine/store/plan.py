"""A `StoreQuery` as one backend-neutral request tree, built once; each backend converts it with a thin converter
(engine/store/edge_convert.py for qdrant-edge, engine/store/client_convert.py for qdrant-client).

    plan(query, limit, offset) -> Node     # the root: what ranks the result, fed by its prefetches

A plain query is one nearest node; a windowed one (hybrid, or sorted by a payload field) has the sides as
prefetches of `prefetch_limit` each, fused (Fusion) and/or ordered (OrderBy) at the root. Both backends
receive the same tree, so they cannot disagree on its shape (limits, filters, thresholds, fusion).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engine.store.base import Filter
    from engine.store.hybrid import StoreQuery

KINDS = ("dense", "sparse", "fusion", "order")


@dataclass(frozen=True)
class Node:
    kind: str  # "dense" / "sparse" (nearest to `vector`), "fusion" (of the prefetches) or "order" (by a payload field)
    limit: int  # points this node returns
    vector: Any = None  # dense: the query vector (np.ndarray); sparse: the SparseVector
    rule: Any = None  # fusion: the hybrid.Fusion; order: the hybrid.OrderBy
    filter: Filter | None = None  # points it considers
    score_threshold: float | None = None  # drops points scoring below it (this node's own score)
    prefetch: tuple[Node, ...] = ()  # where its candidates come from (fusion, order)
    offset: int = 0  # points skipped (the root only)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"plan node kind {self.kind!r} is not one of {KINDS}")


def plan(query: StoreQuery, limit: int, offset: int = 0) -> Node:
    """The request tree of `query` for `limit` points after `offset`."""
    sides = []
    if query.dense is not None:
        sides.append(Node("dense", limit, vector=query.dense))
    if query.sparse:
        sides.append(Node("sparse", limit, vector=query.sparse))
    flt, threshold = query.filter, query.score_threshold
    if not query.windowed:
        return dataclasses.replace(sides[0], offset=offset, filter=flt, score_threshold=threshold)
    # one side, ordered: its own scores are the ones to bound; hybrid: the fused score
    side_threshold = None if query.hybrid else threshold
    prefetch = tuple(dataclasses.replace(s, limit=query.prefetch_limit, filter=flt, score_threshold=side_threshold)
                     for s in sides)
    if query.hybrid:
        fused = Node("fusion", limit, rule=query.fusion, filter=flt, score_threshold=threshold, prefetch=prefetch)
        if query.order_by is None:
            return dataclasses.replace(fused, offset=offset)
        prefetch = (dataclasses.replace(fused, limit=query.window()),)
    return Node("order", limit, rule=query.order_by, filter=flt, prefetch=prefetch, offset=offset)
