"""Run marks for mark-and-sweep pruning: set payload fields on known points, count and delete the unmarked ones.

An indexing run writes its run id into the payload field `field` of every point its catalog still holds (the
points it writes carry it; unchanged ones get it through `set_payload`); afterwards one delete by filter
(`field` is not this run's id, or missing) removes the rest. No id list of the collection is ever held in memory.

These are the few bulk operations the indexer needs beyond engine.store.base.VectorStore, kept here (one function
per operation, one branch per backend) so the store interface itself stays as it is.
"""
from __future__ import annotations

from typing import Any, Sequence

from engine.store.base import VectorStore, check_point_ids


def set_payload(store: VectorStore, collection: str, ids: Sequence[str], values: dict[str, Any]) -> None:
    """Merge `values` into the payload of the points `ids` (which must exist) of `collection`."""
    point_ids = check_point_ids(ids)
    if not point_ids:
        return
    if _is_embedded(store):
        import qdrant_edge as qe

        with store._rw.read():
            col = store._get(collection)
            store._apply(col, qe.UpdateOperation.set_payload(point_ids, values), "set payload")
        return
    store._call("set payload", collection, store._client.set_payload, collection_name=collection,
                payload=values, points=point_ids, wait=True)


def count_unmarked(store: VectorStore, collection: str, field: str, mark: str) -> int:
    """Points of `collection` whose payload `field` is not `mark` (or is missing)."""
    if _is_embedded(store):
        import qdrant_edge as qe

        with store._rw.read():
            col = store._get(collection)
            return int(col.shard.count(qe.CountRequest(exact=True, filter=_edge_unmarked(field, mark))))
    result = store._call("count", collection, store._client.count, collection_name=collection,
                         count_filter=_client_unmarked(field, mark), exact=True)
    return int(result.count)


def delete_unmarked(store: VectorStore, collection: str, field: str, mark: str) -> None:
    """Delete, in one request, the points of `collection` whose payload `field` is not `mark` (or is missing)."""
    if _is_embedded(store):
        import qdrant_edge as qe

        with store._rw.read():
            col = store._get(collection)
            store._apply(col, qe.UpdateOperation.delete_points_by_filter(_edge_unmarked(field, mark)), "delete")
        return
    from qdrant_client import models

    store._call("delete", collection, store._client.delete, collection_name=collection,
                points_selector=models.FilterSelector(filter=_client_unmarked(field, mark)), wait=True)


def _is_embedded(store: VectorStore) -> bool:
    from engine.store.embedded import EmbeddedStore

    if isinstance(store, EmbeddedStore):
        return True
    from engine.store.server import ServerStore

    if isinstance(store, ServerStore):
        return False
    raise TypeError(f"run marks support the embedded and server stores, not {type(store).__name__}")


def _edge_unmarked(field: str, mark: str):
    import qdrant_edge as qe

    return qe.Filter(must_not=[qe.FieldCondition(field, match=qe.MatchValue(mark))])


def _client_unmarked(field: str, mark: str):
    from qdrant_client import models

    return models.Filter(must_not=[models.FieldCondition(key=field, match=models.MatchValue(value=mark))])
