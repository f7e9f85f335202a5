"""Our store types -> qdrant-edge-py's: distances, payload schemas, filters, quantization, fusion, sparse vectors,
and the request tree (engine.store.plan)."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import qdrant_edge as qe

from engine.store.base import Filter, finite_or_none
from engine.store.hybrid import SPARSE_VECTOR, SparseVector
from engine.store.plan import Node

DISTANCE = {"cosine": qe.Distance.Cosine, "dot": qe.Distance.Dot, "euclid": qe.Distance.Euclid}
SCHEMA = {
    "keyword": qe.PayloadSchemaType.Keyword,
    "integer": qe.PayloadSchemaType.Integer,
    "float": qe.PayloadSchemaType.Float,
}
FUSION_QUERY = {"dbsf": lambda f: qe.Fusion.Dbsf(),
                "rrf": lambda f: qe.Fusion.Rrf(k=f.rrf_k, weights=list(f.weights) if f.weights else None)}
DIRECTION = {"asc": qe.Direction.Asc, "desc": qe.Direction.Desc}


def to_edge_filter(flt: Filter | None) -> qe.Filter | None:
    """Our Filter -> qdrant_edge.Filter (must / must_not = exact or match-any, ranges = gte/lte)."""
    if flt is None or (not flt.must and not flt.ranges and not flt.must_not):
        return None
    conditions: list[Any] = [_edge_match(key, value) for key, value in flt.must.items()]
    for key, (gte, lte) in flt.ranges.items():
        rng = qe.RangeFloat(gte=finite_or_none(gte), lte=finite_or_none(lte))
        conditions.append(qe.FieldCondition(key, range=rng))
    excluded = [_edge_match(key, value) for key, value in flt.must_not.items()]
    return qe.Filter(must=conditions or None, must_not=excluded or None)


def _edge_match(key: str, value: Any) -> qe.FieldCondition:
    if isinstance(value, list | tuple):
        return qe.FieldCondition(key, match=qe.MatchAny([v if isinstance(v, str) else int(v) for v in value]))
    return qe.FieldCondition(key, match=qe.MatchValue(value if isinstance(value, str) else int(value)))


def to_edge_request(root: Node, dense_params: Callable[[Node], qe.SearchParams | None]) -> qe.QueryRequest:
    """The request tree (engine.store.plan) as a qdrant-edge QueryRequest; `dense_params(node)` gives a dense
    node's search params (HNSW ef, exact scoring, quantization rescoring: the collection's own)."""
    query, params = _edge_query(root, dense_params)
    return qe.QueryRequest(prefetches=[_edge_prefetch(p, dense_params) for p in root.prefetch] or None, query=query,
                           params=params, filter=to_edge_filter(root.filter), score_threshold=root.score_threshold,
                           limit=root.limit, offset=root.offset, with_payload=True)


def _edge_prefetch(node: Node, dense_params: Callable[[Node], qe.SearchParams | None]) -> qe.Prefetch:
    query, params = _edge_query(node, dense_params)
    return qe.Prefetch(limit=node.limit, query=query, params=params, filter=to_edge_filter(node.filter),
                       score_threshold=node.score_threshold,
                       prefetches=[_edge_prefetch(p, dense_params) for p in node.prefetch] or None)


def _edge_query(node: Node, dense_params: Callable[[Node], qe.SearchParams | None]) -> tuple[Any, Any]:
    if node.kind == "dense":
        return qe.Query.Nearest(node.vector.tolist()), dense_params(node)
    if node.kind == "sparse":
        return qe.Query.Nearest(edge_sparse(node.vector), using=SPARSE_VECTOR), None
    if node.kind == "fusion":
        return FUSION_QUERY[node.rule.method](node.rule), None
    return qe.OrderBy(node.rule.key, DIRECTION[node.rule.direction]), None


def quantization_config(quantization: str) -> qe.ScalarQuantizationConfig | None:
    """StoreConfig.quantization -> the shard's quantization config (None: fp32 vectors only)."""
    if quantization == "none":
        return None
    return qe.ScalarQuantizationConfig(type=qe.ScalarType.Int8, quantile=0.99, always_ram=True)


def dense_part(vector: Any) -> Any:
    """The unnamed dense vector of a retrieved point (a dict when the point also has a sparse vector)."""
    return vector.get("") if isinstance(vector, dict) else vector


def edge_sparse(vector: SparseVector) -> qe.SparseVector:
    return qe.SparseVector(list(vector.indices), list(vector.values))
