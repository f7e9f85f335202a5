"""The bulk path on Ray Data: the catalog as a dataset of row ranges -> read -> prepare -> embed -> upload.

The driver reads the catalog once, as counting its rows would, for up to MAX_CHECKPOINTS checkpoints at product
boundaries, each with the byte offset reading resumes at (indexer.readers.CatalogReader.checkpoints); the read
ranges run from checkpoint to checkpoint, at most about RANGE_ROWS rows each, so a task reads only its own rows and
a worker's memory does not grow with the catalog. The ids the catalog repeats are found before the pass by a
group-by on Ray (indexer.ray_duplicates).

The driver only coordinates: it finds the checkpoints, builds the dataset, and reduces the upload stage's
one-record-per-batch summaries (counts, rejected rows, word counts) into the report, the rejects file and the
spelling vocabulary. Ray schedules the stages, back-pressures them and retries the tasks of a worker that dies;
a retried batch writes the same points again (upserts are idempotent by point id), and a batch's summary
reaches the driver once, so every row counts exactly once. Everything around the pass (the target collection,
the vocabulary, the sweep, the alias switch) is indexer.pipeline's and indexer.reindex's, as in process.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import threading
from pathlib import Path
from typing import Any, Iterator

from engine.vocabulary import Vocabulary
from engine.store import open_store

from .config import IndexerConfig
from .embed import OnnxEmbedder
from .errors import IndexCancelled, IndexerError
from .ray_duplicates import repeated_ids
from .readers import CatalogReader, Checkpoints
from .ray_stages import Embed, Prepare, StageConfig, Upload, ranges, read_ranges
from .ray_store import RemoteStore, start_host
from .report import IngestReport, Progress, RejectLog
from .write import Writer

log = logging.getLogger(__name__)

ADDRESS_ENV = "COINAGE_RAY_ADDRESS"
READS_PER_WORKER = 4  # catalog ranges per worker at least: enough to keep every worker busy
RANGE_ROWS = 2_000  # rows per range at most (about: a range ends at a checkpoint): a read task's output, and so
# every worker's memory, follows its range's rows (docs/deploy.md, "Ray memory")
SHUFFLE_ROWS = 20_000  # ids per partition of the duplicate-id group-by (up to SHUFFLE_PARTITIONS partitions): its
# tasks' memory, and that of the worker processes Ray reuses after them for the pass's tasks and actors, follows it
SHUFFLE_PARTITIONS = 200  # Ray Data's own default: more makes the all-to-all exchange the cost (ranges x partitions)
MAX_CHECKPOINTS = 65_536  # the driver files at most twice this many (~13 MB): 10^7 rows get one about every 150
ROOT = Path(__file__).resolve().parents[1]


def import_ray():
    try:
        import ray
    except ImportError as e:
        raise IndexerError("--workers runs on Ray Data, which is not installed; `pip install 'coinage[ray]'` "
                           "(or drop --workers for the in-process path)") from e
    return ray


@contextlib.contextmanager
def ray_session(config: IndexerConfig) -> Iterator[None]:
    """Ray for the run: the one already initialised in this process, the cluster at config.ray_address or
    $COINAGE_RAY_ADDRESS, else a local Ray of config.ray_workers CPUs (stopped at the end)."""
    ray = import_ray()
    # Ray's driver prints its raylet's warnings (e.g. "N PYTHON worker processes have been started") to stdout,
    # whatever log_to_driver says: they are logs, and on stdout they would corrupt `coinage index --json`
    with contextlib.redirect_stdout(sys.stderr):
        if ray.is_initialized():
            yield
            return
        address = config.ray_address or os.environ.get(ADDRESS_ENV) or None
        try:
            if address:
                ray.init(address=address, log_to_driver=False)
            else:
                path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
                ray.init(num_cpus=config.ray_workers, include_dashboard=False, log_to_driver=False,
                         runtime_env={"env_vars": {"PYTHONPATH": path}})
        except Exception as e:  # ConnectionError, RuntimeError, ...: name the address and the fix
            raise IndexerError(f"cannot start Ray ({'at ' + address if address else 'locally'}): {e}; "
                               f"check --ray-address / ${ADDRESS_ENV}, or drop --workers") from e
        try:
            yield
        finally:
            ray.shutdown()


@contextlib.contextmanager
def open_store_for_ray(config: IndexerConfig) -> Iterator[Any]:
    """The driver's store: for an in-process store (embedded, qdrant-client local mode) a proxy to the one
    actor that may open it; for a Qdrant server, the driver's own client (each worker opens its own)."""
    if config.store.backend == "server" and config.store.in_process_location() is None:
        with open_store(config.store) as store:
            yield store
        return
    with RemoteStore(start_host(config.store)) as store:
        yield store


def read_plan(reader: CatalogReader) -> Checkpoints:
    """The catalog's checkpoints for the read ranges, and its row count (one pass, as count() is)."""
    return reader.checkpoints(MAX_CHECKPOINTS)


def range_rows(total: int, workers: int) -> int:
    """Rows per read range: READS_PER_WORKER ranges per worker, and none over RANGE_ROWS."""
    return max(1, min(RANGE_ROWS, -(-total // max(1, workers * READS_PER_WORKER))))


def consume_on_ray(config: IndexerConfig, store: Any, writer: Writer, embedder, report: IngestReport,
                   rejects: RejectLog, bar: Progress, plan: Checkpoints, cancel: threading.Event | None) -> Vocabulary:
    """One pass over the catalog (`plan`: its read_plan) on Ray Data into writer.collection; returns the catalog's
    vocabulary."""
    ray = import_ray()
    if not isinstance(embedder, OnnxEmbedder):
        raise IndexerError("--workers needs the ONNX embedder (the Ray embed actors run ONNX Runtime); "
                           "drop --no-onnx")
    stage = _stage_config(config, store, writer, embedder)
    workers = config.ray_workers
    report.runner = f"ray data, {workers} workers"
    ray.data.DataContext.get_current().enable_progress_bars = False
    batch = max(config.batch_size, 8)
    spans = ranges(plan, range_rows(plan.total, workers))
    parts = ray.data.from_items(spans, override_num_blocks=max(1, len(spans)))  # a read task per range
    duplicates = repeated_ids(ray, parts, stage.catalog, batch,
                              partitions=max(workers * READS_PER_WORKER,
                                             min(SHUFFLE_PARTITIONS, -(-plan.total // SHUFFLE_ROWS))))
    ds = parts.map_batches(read_ranges, fn_kwargs={"catalog": stage.catalog, "batch_rows": batch,
                                                   "duplicates": duplicates}, batch_size=1,
                           batch_format="pyarrow", num_cpus=0.05)
    ds = ds.map_batches(Prepare, fn_constructor_kwargs={"cfg": stage}, batch_size=batch, batch_format="pyarrow",
                        compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=0.45)
    ds = ds.map_batches(Embed, fn_constructor_kwargs=_embed_args(config, embedder), batch_size=batch,
                        batch_format="pyarrow", compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=0.45,
                        num_gpus=1 / workers if embedder.encoder.provider.startswith("CUDA") else 0)
    uploaders = 1 if stage.store_actor is not None else workers  # one store actor serialises them anyway
    ds = ds.map_batches(Upload, fn_constructor_kwargs={"cfg": stage}, batch_size=batch, batch_format="pyarrow",
                        compute=ray.data.ActorPoolStrategy(size=uploaders), num_cpus=0.05)
    vocabulary = Vocabulary()
    for summary in ds.iter_rows():  # the reduce: one record per uploaded batch
        _reduce(summary, report, rejects, vocabulary)
        bar.advance(summary["accepted"] + summary["unchanged"] + len(json.loads(summary["rejects"])))
        if cancel is not None and cancel.is_set():
            raise IndexCancelled(f"indexing into {report.collection!r} was cancelled after {report.accepted} "
                                 "rows; run it again to resume")
    return vocabulary


def _reduce(summary: dict[str, Any], report: IngestReport, rejects: RejectLog, vocabulary: Vocabulary) -> None:
    batch_rejects = json.loads(summary["rejects"])
    report.rows += summary["accepted"] + summary["unchanged"] + len(batch_rejects)
    report.accepted += summary["accepted"]
    report.unchanged += summary["unchanged"]
    for row, rid, reason in batch_rejects:
        rejects.add(row, rid, reason)
    vocabulary.counts.update(json.loads(summary["words"]))
    vocabulary.rows += summary["valid"]
    for stage, key in (("decode", "decode_s"), ("embed", "embed_s"), ("write", "write_s")):
        report.stage_seconds[stage] += summary[key]


def _stage_config(config: IndexerConfig, store: Any, writer: Writer, embedder: OnnxEmbedder) -> StageConfig:
    from .pipeline import image_root

    actor = store.actor if isinstance(store, RemoteStore) else None
    if actor is None and config.store.backend != "server":
        raise IndexerError("the Ray path cannot share an embedded store opened by the caller (it opens in one "
                           "process only); let the indexer open it (no `store=`), or drop --workers")
    if actor is None and config.store.in_process_location() is not None:
        raise IndexerError(f"the Ray path cannot share the in-process Qdrant at {config.store.url} opened by the "
                           "caller; let the indexer open it (no `store=`), or drop --workers")
    return StageConfig(
        catalog=str(Path(config.catalog).resolve()), image_root=str(image_root(config).resolve()),
        collection=writer.collection, run_id=writer.run_id, sparse=writer.sparse, model_key=embedder.key,
        image_size=embedder.image_size, limits=config.limits, allow_urls=config.allow_urls,
        url_timeout_s=config.url_timeout_s, store=config.store, store_actor=actor)


def _embed_args(config: IndexerConfig, embedder: OnnxEmbedder) -> dict[str, Any]:
    from engine.onnx import select_providers

    providers = ["CPUExecutionProvider"] if embedder.variant == "int8" else select_providers(config.device)
    return {"onnx_path": str(embedder.encoder.path), "providers": providers,
            "threads": config.threads or 1, "mean": embedder.mean, "std": embedder.std, "key": embedder.key,
            "variant": embedder.variant}
