"""Read a freshly built collection back, as a new reader would, and search it once, before an alias points at it.

A collection can be written without error and still be unreadable: the embedded engine replays its WAL when a
shard opens, and one payload nested ~126 levels deep made that replay fail (serde's recursion limit), so a
reindex that switched to it lost the whole index. `verify_collection` closes the embedded shard (flushed) so the
next call reopens it from disk, then counts, searches and reads payloads and vectors back; the server backend
is read through its API. Any failure is a StoreError naming the collection: the caller keeps the old alias.
"""
from __future__ import annotations

import numpy as np

from .base import StoreError, VectorStore

SAMPLE = 16  # points searched for and read back


def verify_collection(store: VectorStore, collection: str, dim: int, min_points: int = 0) -> None:
    """Reopen `collection` from disk (embedded), check it holds at least `min_points` (those just written), search
    it and read a sample back."""
    try:
        reopen = getattr(store, "frozen_collection", None)
        if reopen is not None:
            with reopen(collection):
                pass  # flushed and closed: the next call loads the shard from its files (WAL replay included)
        count = store.count(collection)
        if count < min_points:
            raise StoreError(f"it holds {count} points where {min_points} were written")
        probe = np.zeros(dim, np.float32)
        probe[0] = 1.0
        hits = store.search(collection, probe, limit=min(SAMPLE, max(count, 1)))
        if count and not hits:
            raise StoreError(f"a search over its {count} points found nothing")
        points = store.retrieve(collection, [h.id for h in hits], with_vectors=True)
        if len(points) != len(hits) or any(p.vector is None for p in points):
            raise StoreError(f"{len(hits)} points found by search read back as {len(points)} with vectors")
        if points and not store.search(collection, np.asarray(points[0].vector, np.float32), limit=1):
            raise StoreError("a search with one of its own vectors found nothing")
    except Exception as e:
        raise StoreError(f"collection {collection!r} failed its read-back check ({type(e).__name__}: {e}); it was "
                         "not put in service. Look for a catalog row the store cannot read back (e.g. deeply nested "
                         "attributes) and rebuild") from e
