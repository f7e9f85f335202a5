"""The ingestion pipeline: reader -> validate (main thread) -> decode (worker threads) -> embed -> write.

Rows are validated and de-duplicated in catalog order, then handed to a thread pool that reads,
hashes and decodes images while the main thread embeds and writes the previous ones; results are
consumed in submission order with a bounded window, so memory stays flat on any catalog size.
Rows whose content hash equals the one stored with their point are not decoded or embedded again.
Duplicate ids are found without a per-run id map: every point written or marked carries this run's id and its
catalog row (engine.product.RUN, ROW), so the store look-up before decoding tells a later row of the same id,
and the few rows between that look-up and their write are held in `in_flight` (bounded by the decode window).
"""
from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from engine.diskspace import NEEDS, check_free
from engine.product import PAYLOAD_INDEXES
from engine.vocabulary import Vocabulary, read_vocabulary, write_vocabulary
from engine.store import DimensionMismatch, VectorStore, open_store, point_id

from .config import IndexerConfig
from .decode import Decoded, Decoder, Rejected, Row, Unchanged, validate
from .embed import Embedder, make_embedder
from .errors import IndexCancelled, IndexerError
from .readers import open_catalog
from .report import IngestReport, Progress, RejectLog
from .write import Writer

log = logging.getLogger(__name__)

ProgressFn = Callable[[dict], None]


def run_index(config: IndexerConfig, progress: ProgressFn | None = None, cancel: threading.Event | None = None,
              *, store: VectorStore | None = None, backbone=None) -> IngestReport:
    """Ingest `config.catalog` into the collection behind `config.alias` (created on first use), in place.

    Incremental and resumable: unchanged rows are skipped, and a run killed at any point completes
    when run again. Pass `store` to share an open store (e.g. the web app's); otherwise one is opened
    from `config.store` and closed at the end. Pass `backbone` (already loaded, config.backbone's) to
    avoid loading it again.
    """
    backbone = backbone if backbone is not None else load_backbone_for(config)
    with _open(config, store) as st:
        embedder = build_embedder(config, backbone)
        collection = resolve_target(st, config.alias, embedder.dim, store_dir(config))
        return ingest(config, st, collection, embedder, progress, cancel, prune=config.prune, live=True)


@contextlib.contextmanager
def _open(config: IndexerConfig, store: VectorStore | None) -> Iterator[VectorStore]:
    """`store`, else the one config.store names; on the Ray path (config.ray_workers) inside a Ray session."""
    with contextlib.ExitStack() as stack:
        if config.ray_workers:
            from .ray_pipeline import open_store_for_ray, ray_session

            stack.enter_context(ray_session(config))
            if store is None:
                store = stack.enter_context(open_store_for_ray(config))
        if store is None:
            store = stack.enter_context(open_store(config.store))
        yield store


def load_backbone_for(config: IndexerConfig):
    from engine.loading import load_backbone

    return load_backbone(config.backbone, device=config.device, with_diffusion=False)


def build_embedder(config: IndexerConfig, backbone) -> Embedder:
    if config.threads and not config.onnx:
        import torch

        torch.set_num_threads(config.threads)
    return make_embedder(backbone, onnx=config.onnx, quantize=config.quantize, cache_dir=config.onnx_cache,
                         threads=config.threads, device=config.device, min_recall=config.min_recall,
                         eval_set=lambda: eval_set(config, backbone.image_size))


def eval_set(config: IndexerConfig, image_size: int) -> tuple[np.ndarray, list[str]]:
    """The first `config.eval_images` decodable catalog images (uint8) and their titles."""
    decoder = Decoder(image_root(config), image_size, "eval", config.limits, config.allow_urls, config.url_timeout_s,
                      config.allow_private_urls)
    pixels, titles = [], []
    for raw in open_catalog(config.catalog):
        row = validate(raw)
        if isinstance(row, Row) and isinstance(result := decoder(row), Decoded):
            pixels.append(result.pixels)
            titles.append(row.title)
            if len(pixels) >= config.eval_images:
                break
    empty = np.zeros((0, image_size, image_size, 3), np.uint8)
    return (np.stack(pixels) if pixels else empty), titles


def image_root(config: IndexerConfig) -> Path:
    return config.image_root if config.image_root is not None else config.catalog.resolve().parent


def new_collection_name(alias: str) -> str:
    """`<alias>-YYYYmmdd-HHMMSS-mmm` (UTC): sorts by creation time."""
    now = datetime.now(timezone.utc)
    return f"{alias}-{now:%Y%m%d-%H%M%S}-{now.microsecond // 1000:03d}"


def store_dir(config: IndexerConfig) -> Path | None:
    """The directory the embedded store writes to (its free space is checked before writes); None: a server's."""
    return Path(config.store.path) if config.store.backend == "embedded" else None


def resolve_target(store: VectorStore, alias: str, dim: int, space: Path | None = None) -> str:
    """The collection `alias` points at; on first use, a new collection with the alias set to it (after checking
    the free space of `space`, the embedded store's directory)."""
    target = store.get_alias(alias)
    if target is None and store.collection_exists(alias):
        target = alias  # a plain collection of that name (made by hand): write into it
    if target is None:
        target = new_collection_name(alias)
        if space is not None:
            check_free(space, NEEDS.new_collection(), f"creating collection {target!r}")
        store.create_collection(target, dim=dim, payload_indexes=PAYLOAD_INDEXES)
        store.set_alias(alias, target)
        log.info("created collection %s and pointed alias %s at it", target, alias)
    check_dimension(store, target, dim)
    return target


def check_dimension(store: VectorStore, collection: str, dim: int) -> None:
    probe = np.zeros(dim, np.float32)
    probe[0] = 1.0
    try:
        store.search(collection, probe, limit=1)
    except DimensionMismatch as e:
        raise IndexerError(f"collection {collection!r} holds vectors of another size than this backbone's "
                           f"({dim}): {e}. Rebuild it for this backbone with `coinage reindex`") from e


def ingest(config: IndexerConfig, store: VectorStore, collection: str, embedder: Embedder,
           progress: ProgressFn | None = None, cancel: threading.Event | None = None, prune: bool = False,
           stage: str = "index", live: bool = False) -> IngestReport:
    """One pass over the catalog into `collection` (a collection name, not an alias).

    `live`: `collection` is the one searches use (`coinage index`), so the pass refuses, unless `config.force`,
    to end with a catalog that yielded no usable row, and to prune more than `config.max_prune_fraction` of it.
    """
    reader = open_catalog(config.catalog)
    # counted before the rejects file is opened: an unreadable catalog leaves nothing open
    if config.ray_workers:
        from .ray_pipeline import consume_on_ray, read_plan

        plan = read_plan(reader)  # the count, with where each read range starts
        total = plan.total
    else:
        total = reader.count()
    report = IngestReport(collection=collection, catalog=str(config.catalog), embedder=embedder.description)
    rejects_path = config.rejects_path or Path("var/indexer") / f"rejects-{collection}-{int(time.time())}.jsonl"
    rejects = RejectLog(rejects_path, report)
    bar = Progress(report, total, progress, config.progress_bar, stage)
    writer = Writer(store, collection, run_id=uuid.uuid4().hex)  # marks for the sweep and duplicate ids
    run = _Run(config, report, rejects, bar, writer, embedder, cancel)
    start = time.perf_counter()
    try:
        if config.ray_workers:
            vocabulary = consume_on_ray(config, store, writer, embedder, report, rejects, bar, plan, cancel)
        else:
            run.consume_catalog(reader)
            vocabulary = run.vocabulary
        guarded = live and not config.force
        if guarded:
            check_rows_kept(config, report, ("nothing was pruned: pruning now would delete every point of "
                                             f"{collection!r}. Fix the catalog, or pass --force to prune deliberately")
                            if prune else "fix the catalog (or pass --force to accept an empty run)")
        finish(config, report, writer, vocabulary, prune, guarded)
    except IndexCancelled as e:
        e.report = report
        raise
    finally:
        report.seconds = time.perf_counter() - start
        rejects.close()
        bar.close()
    if progress is not None:
        progress(bar.snapshot())  # the final counts (done == total)
    log.info("ingested %s into %s: %d embedded, %d unchanged, %d rejected in %.1fs", config.catalog, collection,
             report.accepted, report.unchanged, report.rejected, report.seconds)
    return report


def finish(config: IndexerConfig, report: IngestReport, writer: Writer, vocabulary: Vocabulary, prune: bool,
           guarded: bool) -> None:
    """After the catalog pass (in process or on Ray): store the vocabulary, then prune by sweep. The vocabulary is
    the whole catalog's words; without pruning, the words of rows still in the collection but not in this catalog
    stay too (merged)."""
    from .ray_store import on_store  # the Ray path's store proxy: the artifact functions run beside the store

    t0 = time.perf_counter()
    if not prune:
        vocabulary = vocabulary.merge(on_store(writer.store, read_vocabulary, writer.collection)[1] or Vocabulary())
    on_store(writer.store, write_vocabulary, writer.collection, vocabulary)
    report.vocabulary_words = len(vocabulary.counts)
    if prune:
        if guarded:
            check_prune_share(config, writer.collection, writer.stale(), writer.store.count(writer.collection))
        report.pruned = writer.sweep()
    report.stage_seconds["write"] += time.perf_counter() - t0


def check_rows_kept(config: IndexerConfig, report: IngestReport, consequence: str) -> None:
    """Refuse a pass whose catalog yielded no usable row (empty, or every row rejected): acting on it (pruning
    the live index, switching the alias to an empty build) would empty the index searches use."""
    if report.accepted + report.unchanged == 0:
        where = f", see {report.rejects_path}" if report.rejected else ""
        raise IndexerError(f"no row of {config.catalog} could be indexed ({report.rows} rows read, "
                           f"{report.rejected} rejected{where}); {consequence}", report)


def check_prune_share(config: IndexerConfig, collection: str, stale: int, total: int) -> None:
    """Refuse to prune more than `config.max_prune_fraction` of the live collection in one run."""
    if total and stale > config.max_prune_fraction * total:
        raise IndexerError(f"pruning would delete {stale} of the {total} points of {collection!r} "
                           f"({stale / total:.0%}), over max_prune_fraction={config.max_prune_fraction:.0%}; "
                           "nothing was pruned. Check the catalog is complete, or pass --force (or raise "
                           "--max-prune-fraction) to prune deliberately")


class _Run:
    """State of one pass (kept off the module: no globals)."""

    def __init__(self, config: IndexerConfig, report: IngestReport, rejects: RejectLog, bar: Progress,
                 writer: Writer, embedder: Embedder, cancel: threading.Event | None):
        self.config = config
        self.report = report
        self.rejects = rejects
        self.bar = bar
        self.writer = writer
        self.embedder = embedder
        self.cancel = cancel
        self.space = store_dir(config)
        self.decoder = Decoder(image_root(config), embedder.image_size, embedder.key, config.limits,
                               config.allow_urls, config.url_timeout_s, config.allow_private_urls)
        # point id -> row of the rows between the store look-up and their write or mark (bounded by the decode window
        # and the batches): with the run marks in the store (engine.product.ROW) they find duplicate ids
        self.in_flight: dict[str, int] = {}
        self.kept: list[str] = []  # point ids of rejected rows in the chunk being read: their old points stay
        self.to_mark: dict[str, int] = {}  # point id -> row of unchanged rows, marked as seen in batches
        self.batch: list[Decoded] = []
        self.vocabulary = Vocabulary()  # words of every valid row (changed or not): the catalog's spelling list
        self.stage = report.stage_seconds

    def consume_catalog(self, reader) -> None:
        cfg = self.config
        window = max(2 * cfg.batch_size, 8 * cfg.workers)
        chunk_size = max(64, 2 * cfg.batch_size)
        pending: deque[Future] = deque()
        with ThreadPoolExecutor(cfg.workers, thread_name_prefix="indexer-decode") as pool:
            try:
                for chunk in self._validated_chunks(reader, chunk_size):
                    t0 = time.perf_counter()
                    known = self.writer.known([r.point_id for r in chunk] + self.kept)
                    self.writer.mark({pid: None for pid in self.kept if self._unmarked(known.get(pid))})
                    self.kept = []
                    self.stage["lookup"] += time.perf_counter() - t0
                    for row in chunk:
                        k = known.get(row.point_id)
                        if (first := self._first_row(row, k)) is not None:
                            self._reject(Rejected(row.row, row.id, f"duplicate id: first seen at row {first}"))
                            continue
                        self.in_flight[row.point_id] = row.row
                        self.vocabulary.add(row.payload())
                        pending.append(pool.submit(self.decoder, row, k and k.hash, k and k.stamp))
                    while len(pending) > window:
                        self._take(pending.popleft())
                while pending:
                    self._take(pending.popleft())
                self._flush()
                self._flush_marks(0)
            finally:
                for fut in pending:
                    fut.cancel()

    def _validated_chunks(self, reader, size: int) -> Iterator[list[Row]]:
        chunk: list[Row] = []
        rows = iter(reader)
        while True:
            self._check_cancel()
            t0 = time.perf_counter()
            raw = next(rows, None)
            if raw is None:
                self.stage["read"] += time.perf_counter() - t0
                break
            self.report.rows += 1
            row = validate(raw)
            self.stage["read"] += time.perf_counter() - t0
            if isinstance(row, Rejected):
                if row.id is not None:
                    self.kept.append(point_id(row.id))
                self._reject(row)
            else:
                chunk.append(row)
            if len(chunk) + len(self.kept) >= size:
                yield chunk
                chunk = []
        if chunk or self.kept:
            yield chunk

    def _first_row(self, row: Row, known) -> int | None:
        """The earlier catalog row of this run holding `row`'s id (a row in flight, else the run mark the store
        holds for its point); None: the first."""
        first = self.in_flight.get(row.point_id)
        return first if first is not None else (known.seen_by(self.writer.run_id) if known is not None else None)

    def _take(self, fut: Future) -> None:
        t0 = time.perf_counter()
        result = fut.result()
        self.report.wait_decode_seconds += time.perf_counter() - t0
        self.stage["decode"] += result.seconds
        if isinstance(result, Rejected):
            self._keep_rejected(result)
            if result.id is not None:  # its id is free: a later row with it is indexed
                self.in_flight.pop(point_id(result.id), None)
            self._reject(result)
        elif isinstance(result, Unchanged):
            if result.restamp is not None:
                self.writer.restamp(result.row.point_id, result.row.row, result.restamp)
                self.in_flight.pop(result.row.point_id, None)
            else:
                self.to_mark[result.row.point_id] = result.row.row
                self._flush_marks(self.config.batch_size * 8)
            self.report.unchanged += 1
            self.bar.advance()
        else:
            self.batch.append(result)
            if len(self.batch) >= self.config.batch_size:
                self._flush()

    def _flush(self) -> None:
        if not self.batch:
            return
        batch, self.batch = self.batch, []
        if self.space is not None:  # before the write: a full disk kills the embedded engine (SIGBUS)
            check_free(self.space, NEEDS.batch(len(batch)), f"writing {len(batch)} points into "
                       f"{self.report.collection!r} (indexing stopped there; run again to resume)")
        t0 = time.perf_counter()
        vectors = self.embedder.encode(np.stack([r.pixels for r in batch]))
        t1 = time.perf_counter()
        self.writer.write(batch, vectors)
        for r in batch:  # written with this run's mark and row: the store now answers for them
            self.in_flight.pop(r.row.point_id, None)
        self.stage["embed"] += t1 - t0
        self.stage["write"] += time.perf_counter() - t1
        self.report.accepted += len(batch)
        self.bar.advance(len(batch))
        self._check_cancel()

    def _flush_marks(self, above: int) -> None:
        if len(self.to_mark) > above:
            t0 = time.perf_counter()
            self.writer.mark(self.to_mark)
            for pid in self.to_mark:
                self.in_flight.pop(pid, None)
            self.to_mark = {}
            self.stage["write"] += time.perf_counter() - t0

    def _keep_rejected(self, rejected: Rejected) -> None:
        """A row whose image now fails keeps its old point (if any) through the sweep."""
        if self.writer.run_id is not None and rejected.id is not None:
            pid = point_id(rejected.id)
            self.writer.mark({p: None for p, k in self.writer.known([pid]).items() if self._unmarked(k)})

    def _unmarked(self, known) -> bool:
        """An old point this run has not marked yet (one it marked holds the row that saw it: keep that)."""
        return known is not None and known.run != self.writer.run_id

    def _reject(self, rejected: Rejected) -> None:
        self.rejects.add(rejected.row, rejected.id, rejected.reason)
        self.bar.advance()

    def _check_cancel(self) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise IndexCancelled(f"indexing into {self.report.collection!r} was cancelled after "
                                 f"{self.report.accepted} rows; run it again to resume")
