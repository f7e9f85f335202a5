"""Blue/green rebuild: a new collection is filled and indexed, then the alias is switched to it atomically.

Searches keep answering from the old collection through the alias for the whole job. The alias is
switched only to a collection that was read back from disk and searched once (engine.store.verify); the
old collection is dropped only after the switch (unless `keep_old`). A failed or cancelled job drops
its half-built collection and leaves the alias where it was. A job killed outright (SIGKILL,
power loss) leaves its build collection behind; the next `reindex` adopts the newest such
collection and resumes into it (unchanged rows are skipped, rows gone from the catalog pruned).
"""
from __future__ import annotations

import logging
import re
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from engine.diskspace import NEEDS, check_free
from engine.product import PAYLOAD_INDEXES
from engine.store import VectorStore, marks
from engine.store.verify import verify_collection

from .config import IndexerConfig
from .errors import IndexCancelled, IndexerError
from .pipeline import (ProgressFn, _open, build_embedder, check_dimension, check_rows_kept, ingest, load_backbone_for,
                       new_collection_name, store_dir)
from .report import IngestReport

log = logging.getLogger(__name__)


@dataclass
class ReindexReport:
    """What a reindex job did."""

    alias: str  # the alias that was (or would have been) switched
    collection: str  # the collection built by this job
    previous: str | None = None  # the collection the alias pointed at before
    switched: bool = False  # the alias now points at `collection`
    dropped_previous: bool = False  # the previous collection was dropped after the switch
    resumed: bool = False  # the job adopted a build collection a killed job left behind
    ingest: IngestReport | None = None  # the ingestion pass into `collection`
    optimize_seconds: float = 0.0  # time building the ANN index before the switch
    seconds: float = 0.0  # wall time of the job
    stages: list[str] = field(default_factory=list)  # stages completed, in order

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["ingest"] = self.ingest.to_json() if self.ingest else None
        return data

    def summary(self) -> str:
        head = (f"alias {self.alias!r} -> {self.collection}" + (f" (was {self.previous}" +
                (", dropped)" if self.dropped_previous else ", kept)") if self.previous else "")
                if self.switched else f"alias {self.alias!r} unchanged")
        return "\n".join([head + f"; {self.seconds:.1f}s, optimize {self.optimize_seconds:.1f}s"] +
                         ([self.ingest.summary()] if self.ingest else []))

# One reindex at a time per process: a second job would adopt the first one's build collection.
# (Across processes -- several workers on one Qdrant server -- the job system must serialise jobs.)
_RUNNING = threading.Lock()


def run_reindex(config: IndexerConfig, progress: ProgressFn | None = None, cancel: threading.Event | None = None,
                *, store: VectorStore | None = None, backbone=None) -> ReindexReport:
    """Rebuild the index behind `config.alias` from `config.catalog` and switch the alias to it.

    `progress` receives dicts (stage, done, total, rate, eta_s, counts) about twice a second;
    setting `cancel` stops the job (IndexCancelled) with the live alias untouched. Raises
    IndexerError when the job fails; `error.report` is the ReindexReport so far. `store` and
    `backbone` share what the caller (the web app) already has open / loaded.
    """
    if not _RUNNING.acquire(blocking=False):
        raise IndexerError("another reindex is running in this process; wait for it to finish (two jobs would "
                           "build into the same collection)")
    try:
        return _reindex(config, progress, cancel, store, backbone)
    finally:
        _RUNNING.release()



def _reindex(config: IndexerConfig, progress: ProgressFn | None, cancel: threading.Event | None,
             store: VectorStore | None, backbone) -> ReindexReport:
    start = time.perf_counter()
    backbone = backbone if backbone is not None else load_backbone_for(config)
    with _open(config, store) as st:
        previous = st.get_alias(config.alias)
        if previous is None and st.collection_exists(config.alias):
            raise IndexerError(
                f"{config.alias!r} is a collection, not an alias, so it cannot be switched atomically; "
                f"use another --collection name for the alias, or re-create it as an alias "
                f"(reindex under a new name, then drop the collection {config.alias!r})")
        embedder = build_embedder(config, backbone)  # fails before anything is created
        target, resumed = _build_target(st, config.alias, embedder.dim, store_dir(config), previous)
        report = ReindexReport(config.alias, target, previous=previous, resumed=resumed)
        bulk = marks.for_store(st)
        bulk.set_indexing(st, target, False)  # a bulk load: the ANN index is built once, before the switch
        _notify(progress, report, "build")
        try:
            report.ingest = ingest(config, st, target, embedder, progress, cancel, prune=True, stage="reindex")
            report.stages.append("ingest")
            _check_quality(config, report.ingest)
            _check(cancel)
            _notify(progress, report, "optimize")
            t0 = time.perf_counter()
            bulk.set_indexing(st, target, True)
            st.optimize(target)  # waits for the index
            report.optimize_seconds = time.perf_counter() - t0
            report.stages.append("optimize")
            _notify(progress, report, "verify")
            verify_collection(st, target, embedder.dim, report.ingest.accepted + report.ingest.unchanged)
            report.stages.append("verify")
            _check(cancel)
            st.set_alias(config.alias, target)  # the switch: searches move to the new collection atomically
            report.switched = True
            report.stages.append("switch")
        except BaseException as e:
            report.seconds = time.perf_counter() - start
            _abandon(st, target, config.alias)
            if isinstance(e, IndexerError):
                if isinstance(e, IndexCancelled) and report.ingest is None and isinstance(e.report, IngestReport):
                    report.ingest = e.report
                e.report = report
                raise
            if isinstance(e, Exception):
                raise IndexerError(f"reindex of {config.alias!r} failed ({type(e).__name__}: {e}); "
                                   f"the alias still points at {previous}", report) from e
            raise
        log.info("alias %s switched from %s to %s", config.alias, previous, target)
        if previous is not None and previous != target and not config.keep_old:
            report.dropped_previous = _drop_previous(st, previous, config.alias)
        report.seconds = time.perf_counter() - start
        _notify(progress, report, "done")
        return report


def _build_target(store: VectorStore, alias: str, dim: int, space: Path | None = None,
                  previous: str | None = None) -> tuple[str, bool]:
    """A build collection left by a killed job (newest first, same vector size), else a new one, after checking
    that `space` (the embedded store's directory) has room for a copy of `previous`."""
    pattern = re.compile(rf"^{re.escape(alias)}-\d{{8}}-\d{{6}}-\d{{3}}$")
    aliased = set(store.list_aliases().values())
    orphans = sorted((c for c in store.list_collections() if pattern.match(c) and c not in aliased), reverse=True)
    for name in orphans:
        try:
            check_dimension(store, name, dim)
        except IndexerError:
            continue
        log.info("resuming into %s, left by an unfinished reindex", name)
        for other in orphans:
            if other != name:
                log.warning("collection %s is another unfinished reindex build; drop it if no job is using it", other)
        return name, True
    name = new_collection_name(alias)
    if space is not None:
        points = store.count(previous) if previous is not None else 0
        check_free(space, NEEDS.new_collection() + points * NEEDS.per_point_bytes,
                   f"reindexing {alias!r} into a new collection beside the live one ({points} points)")
    store.create_collection(name, dim=dim, payload_indexes=PAYLOAD_INDEXES)
    return name, False


def _check_quality(config: IndexerConfig, ingest_report: IngestReport) -> None:
    check_rows_kept(config, ingest_report, "the alias was not switched")
    fraction = ingest_report.rejected / max(ingest_report.rows, 1)
    if fraction > config.max_reject_fraction:
        raise IndexerError(f"{ingest_report.rejected} of {ingest_report.rows} rows ({fraction:.0%}) were rejected, "
                           f"over max_reject_fraction={config.max_reject_fraction:.0%} "
                           f"(see {ingest_report.rejects_path}); "
                           "the alias was not switched. Fix the catalog or raise --max-reject-fraction")


def _check(cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise IndexCancelled("reindex cancelled; the alias was not switched")


def _abandon(store: VectorStore, target: str, alias: str) -> None:
    """Drop a half-built collection (never the live one)."""
    try:
        if store.get_alias(alias) != target:
            store.drop_collection(target)
            log.info("dropped the unfinished build collection %s", target)
    except Exception as e:  # noqa: BLE001 - cleanup must not mask the original failure; say what is left
        log.error("could not drop the unfinished build collection %s (%s); drop it by hand", target, e)


def _drop_previous(store: VectorStore, previous: str, alias: str) -> bool:
    others = [a for a, c in store.list_aliases().items() if c == previous and a != alias]
    if others:
        log.info("keeping %s: aliases %s still point at it", previous, others)
        return False
    return store.drop_collection(previous)


def _notify(progress: ProgressFn | None, report: ReindexReport, stage: str) -> None:
    if progress is not None:
        progress({"stage": stage, "alias": report.alias, "collection": report.collection,
                  "previous": report.previous, "switched": report.switched})
