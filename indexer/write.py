"""Stage 4, write: embedded rows -> points in the vector store; also the lookups that make runs incremental.

A point is (point_id(row id), vector, BM25 vector of the row's text, payload + content hash (engine.product.HASH)). Upserts are idempotent (same id, same
content), so a run killed at any moment and run again ends with the same points as a clean run.
"""
from __future__ import annotations

import logging
from typing import Sequence

import numpy as np

from engine.lexical import embed_document
from engine.product import HASH
from engine.store import Point, VectorStore

from .decode import Decoded

log = logging.getLogger(__name__)


def make_points(rows: Sequence[Decoded], vectors: np.ndarray, sparse: bool = True) -> list[Point]:
    """Points of embedded rows; with `sparse`, each also carries the BM25 vector of its text."""
    if len(rows) != len(vectors):
        raise ValueError(f"{len(rows)} rows but {len(vectors)} vectors")
    points = []
    for r, v in zip(rows, vectors):
        payload = r.row.payload()
        points.append(Point(r.row.point_id, np.asarray(v, np.float32), {**payload, HASH: r.hash},
                            embed_document(payload) if sparse else None))
    return points


class Writer:
    """Writes into one collection (a real collection name, not an alias: it must not move mid-run)."""

    def __init__(self, store: VectorStore, collection: str):
        self.store = store
        self.collection = collection
        self.written = 0
        self.sparse = store.has_sparse(collection)
        if not self.sparse:
            log.warning("collection %s was built without BM25 vectors: name search and typo correction need "
                        "`coinage reindex`; writing image vectors only", collection)

    def known_hashes(self, point_ids: Sequence[str]) -> dict[str, str]:
        """point id -> stored content hash, for the ids the collection holds."""
        if not point_ids:
            return {}
        found = self.store.retrieve(self.collection, list(point_ids))
        return {p.id: p.payload.get(HASH) for p in found if p.payload.get(HASH)}

    def write(self, rows: Sequence[Decoded], vectors: np.ndarray) -> None:
        self.store.upsert(self.collection, make_points(rows, vectors, self.sparse))
        self.written += len(rows)

    def stale(self, keep: set[str]) -> list[str]:
        """Ids of the points whose id is not in `keep` (what pruning would delete)."""
        return [pid for pid in self.store.scroll_ids(self.collection) if pid not in keep]

    def delete(self, stale: list[str]) -> int:
        """Delete the `stale` points (from `stale()`); returns how many."""
        if stale:
            self.store.delete(self.collection, stale)
            log.info("pruned %d points of %s that are no longer in the catalog", len(stale), self.collection)
        return len(stale)
