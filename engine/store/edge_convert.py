"""Our store types -> qdrant-edge-py's: distances, payload schemas, filters, quantization, fusion, sparse vectors."""
from __future__ import annotations

from typing import Any

import qdrant_edge as qe

from engine.store.base import Filter, finite_or_none
from engine.store.hybrid import SparseVector

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
    """Our Filter -> qdrant_edge.Filter (must = exact / match-any, ranges = gte/lte, must_not = match-any)."""
    if flt is None or (not flt.must and not flt.ranges and not flt.must_not):
        return None
    conditions: list[Any] = [_edge_match(key, value) for key, value in flt.must.items()]
    for key, (gte, lte) in flt.ranges.items():
        rng = qe.RangeFloat(gte=finite_or_none(gte), lte=finite_or_none(lte))
        conditions.append(qe.FieldCondition(key, range=rng))
    excluded = [_edge_match(key, value) for key, value in flt.must_not.items()]
    return qe.Filter(must=conditions or None, must_not=excluded or None)


def _edge_match(key: str, value: Any) -> Any:
    if isinstance(value, list | tuple):
        return qe.FieldCondition(key, match=qe.MatchAny([v if isinstance(v, str) else int(v) for v in value]))
    return qe.FieldCondition(key, match=qe.MatchValue(value if isinstance(value, str) else int(value)))


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
