"""Our store types -> qdrant-client's models: filters, sparse vectors, and the request tree (engine.store.plan)."""
from __future__ import annotations

from typing import Any

from qdrant_client import models

from engine.store.base import Filter, finite_or_none
from engine.store.hybrid import SPARSE_VECTOR, SparseVector
from engine.store.plan import Node

DIRECTION = {"asc": models.Direction.ASC, "desc": models.Direction.DESC}


def to_qdrant_filter(flt: Filter | None) -> models.Filter | None:
    """Our Filter -> qdrant_client.models.Filter (must / must_not = exact or match-any, ranges = gte/lte)."""
    if flt is None or (not flt.must and not flt.ranges and not flt.must_not):
        return None
    conditions: list[models.Condition] = [_match(key, value) for key, value in flt.must.items()]
    for key, (gte, lte) in flt.ranges.items():
        rng = models.Range(gte=finite_or_none(gte), lte=finite_or_none(lte))
        conditions.append(models.FieldCondition(key=key, range=rng))
    excluded: list[models.Condition] = [_match(key, value) for key, value in flt.must_not.items()]
    return models.Filter(must=conditions or None, must_not=excluded or None)


def _match(key: str, value: Any) -> models.FieldCondition:
    if isinstance(value, list | tuple):
        match: Any = models.MatchAny(any=[v if isinstance(v, str) else int(v) for v in value])
    else:
        match = models.MatchValue(value=value if isinstance(value, str) else int(value))
    return models.FieldCondition(key=key, match=match)


def client_sparse(vector: SparseVector) -> models.SparseVector:
    return models.SparseVector(indices=list(vector.indices), values=list(vector.values))


def to_client_args(root: Node, search_params: models.SearchParams | None) -> dict[str, Any]:
    """The request tree as query_points arguments (prefetch, query, using, query_filter, search_params,
    score_threshold, limit, offset); `search_params` apply to the dense nodes (HNSW ef, quantization rescoring)."""
    query, using, params = _client_query(root, search_params)
    return {"prefetch": [_client_prefetch(p, search_params) for p in root.prefetch] or None, "query": query,
            "using": using, "query_filter": to_qdrant_filter(root.filter), "search_params": params,
            "score_threshold": root.score_threshold, "limit": root.limit, "offset": root.offset}


def to_client_request(root: Node, search_params: models.SearchParams | None) -> models.QueryRequest:
    """The request tree as one request of query_batch_points (the same fields as to_client_args)."""
    args = to_client_args(root, search_params)
    return models.QueryRequest(prefetch=args["prefetch"], query=args["query"], using=args["using"],
                               filter=args["query_filter"], params=args["search_params"],
                               score_threshold=args["score_threshold"], limit=args["limit"], offset=args["offset"],
                               with_payload=True)


def _client_prefetch(node: Node, search_params: models.SearchParams | None) -> models.Prefetch:
    query, using, params = _client_query(node, search_params)
    return models.Prefetch(prefetch=[_client_prefetch(p, search_params) for p in node.prefetch] or None, query=query,
                           using=using, filter=to_qdrant_filter(node.filter), params=params, limit=node.limit,
                           score_threshold=node.score_threshold)


def _client_query(node: Node, search_params: models.SearchParams | None) -> tuple[Any, str | None, Any]:
    if node.kind == "dense":
        return node.vector.tolist(), None, search_params
    if node.kind == "sparse":
        return client_sparse(node.vector), SPARSE_VECTOR, None
    if node.kind == "fusion":
        fusion = node.rule
        if fusion.method == "rrf":
            return models.RrfQuery(rrf=models.Rrf(k=fusion.rrf_k, weights=list(fusion.weights)
                                                  if fusion.weights else None)), None, None
        return models.FusionQuery(fusion=models.Fusion.DBSF), None, None
    order = models.OrderBy(key=node.rule.key, direction=DIRECTION[node.rule.direction])
    return models.OrderByQuery(order_by=order), None, None
