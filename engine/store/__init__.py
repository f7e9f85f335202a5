"""Vector store: one interface (`VectorStore`), two backends.

- "embedded" (default): Qdrant's engine in-process via qdrant-edge-py, data under
  StoreConfig.path; single process (see engine/store/embedded.py for its limits).
- "server": a Qdrant server/cluster over HTTP (url), or for tests qdrant-client in this
  process: url=":memory:" (in-memory) or url="local:<dir>" (persisted in <dir>).

    store = open_store(StoreConfig.from_env())
    store.create_collection("products-20250101", dim=512, payload_indexes={"category": "keyword"})
    store.upsert("products-20250101", [Point(point_id("sku-1"), vec, {"category": "shoes"})])
    store.optimize("products-20250101")
    store.set_alias("products", "products-20250101")
    hits = store.search("products", query_vec, limit=10, filter=Filter(must={"category": "shoes"}))
"""

from __future__ import annotations

from engine.store.base import (
    CollectionExists,
    CollectionNotFound,
    DimensionMismatch,
    Filter,
    Hit,
    NoSparseVectors,
    Point,
    StoreConfig,
    StoreError,
    StoreUnavailable,
    VectorStore,
    point_id,
)
from engine.store.hybrid import FacetCounts, Fusion, Group, OrderBy, SparseVector, StoreQuery

__all__ = [
    "CollectionExists",
    "CollectionNotFound",
    "DimensionMismatch",
    "FacetCounts",
    "Filter",
    "Fusion",
    "Group",
    "Hit",
    "NoSparseVectors",
    "OrderBy",
    "Point",
    "SparseVector",
    "StoreQuery",
    "StoreConfig",
    "StoreError",
    "StoreUnavailable",
    "VectorStore",
    "open_store",
    "point_id",
]


def open_store(config: StoreConfig) -> VectorStore:
    """The backend that config.backend names, ready to use. Close it (or use `with`)."""
    if config.backend == "server":
        from engine.store.server import ServerStore  # imported lazily: each backend's deps stay optional

        return ServerStore(config)
    from engine.store.embedded import EmbeddedStore

    return EmbeddedStore(config)
