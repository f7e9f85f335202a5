"""Stage 4, write: embedded rows -> points in the vector store; also the lookups that make runs incremental.

A point is (point_id(row id), vector, BM25 vector of the row's text, payload + content hash (engine.product.HASH),
source stamp and run mark). Upserts are idempotent (same id, same
content), so a run killed at any moment and run again ends with the same points as a clean run.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from engine.lexical import embed_document
from engine.product import HASH, ROW, RUN, STAMP
from engine.store import Point, VectorStore, marks

from .decode import Decoded

log = logging.getLogger(__name__)


def make_points(rows: Sequence[Decoded], vectors: np.ndarray, sparse: bool = True,
                run_id: str | None = None) -> list[Point]:
    """Points of embedded rows; with `sparse`, each also carries the BM25 vector of its text; `run_id` marks them
    as seen by that run (engine.product.RUN)."""
    if len(rows) != len(vectors):
        raise ValueError(f"{len(rows)} rows but {len(vectors)} vectors")
    points = []
    for r, v in zip(rows, vectors):
        payload = r.row.payload()
        points.append(Point(r.row.point_id, np.asarray(v, np.float32), {**payload, **bookkeeping(r, run_id)},
                            embed_document(payload) if sparse else None))
    return points


def bookkeeping(row: Decoded, run_id: str | None) -> dict[str, str]:
    """The internal payload fields of a written row: content hash, source stamp, run mark and its catalog row."""
    fields: dict[str, str | int] = {HASH: row.hash}
    if row.stamp is not None:
        fields[STAMP] = row.stamp
    if run_id is not None:
        fields[RUN] = run_id
        fields[ROW] = row.row.row
    return fields


@dataclass(frozen=True)
class Known:
    """What the store holds for a row's point: the incremental check compares it with the row."""

    hash: str  # content hash (engine.product.HASH)
    stamp: str | None  # source stamp (engine.product.STAMP); None: stored before stamps
    run: str | None = None  # the run mark (engine.product.RUN) of the last run that saw the point
    row: int | None = None  # the catalog row that run saw it at (engine.product.ROW)

    def seen_by(self, run_id: str | None) -> int | None:
        """The catalog row at which run `run_id` already saw this point (a later row with its id is a
        duplicate); None when that run has not seen it."""
        return self.row if run_id is not None and self.run == run_id and self.row is not None else None


class Writer:
    """Writes into one collection (a real collection name, not an alias: it must not move mid-run).

    `run_id`: this run's mark; every point written or `mark`ed carries it with its catalog row (engine.product.ROW:
    a later row of the same id is reported as its duplicate), and `sweep` deletes the points without it. None: no
    marks."""

    def __init__(self, store: VectorStore, collection: str, run_id: str | None = None, sparse: bool | None = None):
        self.store = store
        self.collection = collection
        self.run_id = run_id
        self.marks = marks.for_store(store)
        self.written = 0
        self.sparse = store.has_sparse(collection) if sparse is None else sparse
        if not self.sparse:
            log.warning("collection %s was built without BM25 vectors: name search and typo correction need "
                        "`coinage reindex`; writing image vectors only", collection)

    def known(self, point_ids: Sequence[str]) -> dict[str, Known]:
        """point id -> what the collection holds, for the ids it holds (with a content hash)."""
        if not point_ids:
            return {}
        found = self.store.retrieve(self.collection, list(point_ids))
        return {p.id: Known(p.payload[HASH], p.payload.get(STAMP), p.payload.get(RUN), p.payload.get(ROW))
                for p in found if p.payload.get(HASH)}

    def write(self, rows: Sequence[Decoded], vectors: np.ndarray) -> None:
        self.store.upsert(self.collection, make_points(rows, vectors, self.sparse, self.run_id))
        self.written += len(rows)

    def write_points(self, points: Sequence[Point]) -> None:
        """Points made elsewhere (make_points in a Ray worker), uploaded in bulk (engine.store.marks.bulk_upsert)."""
        self.marks.bulk_upsert(self.store, self.collection, points)
        self.written += len(points)

    def mark(self, rows: dict[str, int | None]) -> None:
        """Mark existing points (point id -> catalog row) as seen by this run at that row: unchanged rows, and
        (row None: kept, but holding no row of this run) rejected rows whose old point stays. One request."""
        if self.run_id is not None and rows:
            self.marks.set_payloads(self.store, self.collection,
                                    {pid: {RUN: self.run_id, ROW: row} for pid, row in rows.items()})

    def restamp(self, point_id: str, row: int, stamp: str) -> None:
        """Store a new source stamp on an unchanged point (same bytes, new size or mtime), seen at `row`."""
        values = {STAMP: stamp} if self.run_id is None else {STAMP: stamp, RUN: self.run_id, ROW: row}
        self.marks.set_payload(self.store, self.collection, [point_id], values)

    def stale(self) -> int:
        """How many points this run did not mark (what `sweep` would delete)."""
        return self.marks.count_unmarked(self.store, self.collection, RUN, self._run())

    def sweep(self) -> int:
        """Delete, by one filter, every point this run did not mark; returns how many."""
        stale = self.stale()
        if stale:
            self.marks.delete_unmarked(self.store, self.collection, RUN, self._run())
            log.info("pruned %d points of %s that are no longer in the catalog", stale, self.collection)
        return stale

    def _run(self) -> str:
        if self.run_id is None:
            raise ValueError("this Writer has no run_id: pass one to prune by mark and sweep")
        return self.run_id
