"""Run marks for mark-and-sweep pruning: set payload fields on known points, count and delete the unmarked ones.

An indexing run writes its run id into the payload field `field` of every point its catalog still holds (the
points it writes carry it; unchanged ones get it through `set_payload`); afterwards one delete by filter
(`field` is not this run's id, or missing) removes the rest. No id list of the collection is ever held in memory.

Also the bulk path's upload (no per-batch look-ups) and indexing deferred during a bulk load. These are the few
bulk operations the indexer needs beyond engine.store.base.VectorStore, kept here (one function
per operation, one branch per backend) so the store interface itself stays as it is.
"""
from __future__ import annotations

from typing import Any, Sequence

from engine.store.base import Point, StoreError, VectorStore, check_point_ids

UPLOAD_BATCH = 256  # points per upload request
UPLOAD_RETRIES = 3  # retries of a failed upload request (transport errors)
DEFAULT_INDEXING_THRESHOLD_KB = 10_000  # Qdrant's default optimizers.indexing_threshold, restored after a bulk load


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


def set_payloads(store: VectorStore, collection: str, values: dict[str, dict[str, Any]]) -> None:
    """Merge `values[id]` into the payload of each point `id` (which must exist) of `collection`: one request (a
    batch of set-payload operations), for marks that differ per point (the run mark's catalog row)."""
    point_ids = check_point_ids(list(values))
    if not point_ids:
        return
    if _is_embedded(store):
        import qdrant_edge as qe

        with store._rw.read():
            col = store._get(collection)
            for pid, v in zip(point_ids, values.values()):
                store._apply(col, qe.UpdateOperation.set_payload([pid], v), "set payload")
        return
    from qdrant_client import models

    ops = [models.SetPayloadOperation(set_payload=models.SetPayload(payload=v, points=[pid]))
           for pid, v in zip(point_ids, values.values())]
    store._call("set payload", collection, store._client.batch_update_points, collection_name=collection,
                update_operations=ops, wait=True)


def count_unmarked(store: VectorStore, collection: str, field: str, mark: str) -> int:
    """Points of `collection` whose payload `field` is not `mark` (or is missing)."""
    if _is_embedded(store):
        import qdrant_edge as qe

        with store._rw.read():
            col = store._get(collection)
            try:
                return int(col.shard.count(qe.CountRequest(exact=True, filter=_edge_unmarked(field, mark))))
            except BaseException as e:  # the engine panics (pyo3 PanicException) on a payload it cannot decode
                if type(e).__name__ != "PanicException":
                    raise
                raise StoreError(f"collection {collection!r} cannot be read back ({e}); its points cannot be "
                                 "filtered, so it must not be searched: rebuild it from a valid catalog") from None
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


def bulk_upsert(store: VectorStore, collection: str, points: Sequence[Point]) -> None:
    """Upsert without the per-call collection look-ups of VectorStore.upsert (vector size, sparse config): the
    bulk path checked the collection once. Server: qdrant-client's upload_points, retried on transport errors."""
    if _is_embedded(store):
        store.upsert(collection, points)
        return
    from qdrant_client import models

    from engine.store.hybrid import SPARSE_VECTOR
    from engine.store.client_convert import client_sparse as _client_sparse

    structs = [models.PointStruct(id=p.id, payload=p.payload, vector=(
        {"": p.vector.tolist(), SPARSE_VECTOR: _client_sparse(p.sparse)} if p.sparse else p.vector.tolist()))
        for p in check_points(points)]
    store._call("upload points", collection, store._client.upload_points, collection_name=collection,
                points=structs, batch_size=UPLOAD_BATCH, max_retries=UPLOAD_RETRIES, wait=True)


def check_points(points: Sequence[Point]) -> Sequence[Point]:
    for p in points:
        if p.vector is None or not isinstance(p.payload, dict):
            raise ValueError(f"point {p.id!r} needs a vector and a dict payload")
    check_point_ids([p.id for p in points])
    return points


def set_indexing(store: VectorStore, collection: str, on: bool) -> None:
    """Server: turn the HNSW indexing of `collection` off for a bulk load into a new build collection, and on
    again before the switch (`store.optimize` then waits for the index). Embedded: nothing to do (the shard
    builds its index in `optimize`)."""
    if _is_embedded(store):
        return
    from qdrant_client import models

    threshold = DEFAULT_INDEXING_THRESHOLD_KB if on else 0  # 0: no segment is indexed
    store._call("update collection", collection, store._client.update_collection, collection_name=collection,
                optimizers_config=models.OptimizersConfigDiff(indexing_threshold=threshold))


def for_store(store: Any):
    """This module, or the forwarder of a store proxy (indexer.ray_store.RemoteStore.marks) with its functions."""
    import sys

    return getattr(store, "marks", sys.modules[__name__])


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
