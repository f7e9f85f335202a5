"""The map stages of the Ray Data bulk path (indexer.ray_pipeline): read -> prepare -> embed -> upload.

Each stage is a plain function or a callable class taking and returning a pyarrow Table, so it runs (and is
tested) without Ray; Ray schedules, retries and back-pressures them. A row travels as one record of ROW_SCHEMA:
the validated catalog row as JSON, then its decode result (kind, hashes, model-sized pixels), then its vector.
The upload stage returns one SUMMARY_SCHEMA record per batch (counts, rejected rows, word counts): the driver
reduces those, so no stage ever holds more than a batch and the driver no more than the vocabulary.
"""
from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pyarrow as pa

from engine.vocabulary import Vocabulary
from engine.store import StoreConfig, open_store, point_id

from .decode import Decoded, Decoder, ImageLimits, Rejected, Row, Unchanged, validate
from .readers import Checkpoint, Checkpoints, open_catalog
from .write import Writer

DECODED, UNCHANGED, REJECTED = "decoded", "unchanged", "rejected"

ROW_SCHEMA = pa.schema([
    ("row", pa.int64()),  # position in the catalog file
    ("id", pa.string()),  # catalog id ("" when the row has none usable)
    ("json", pa.string()),  # the validated Row as JSON; "" for a row rejected by validation
    ("kind", pa.string()),  # "" before prepare; then DECODED, UNCHANGED or REJECTED
    ("reason", pa.string()),  # why a REJECTED row was rejected
    ("hash", pa.string()),  # content hash of a DECODED row
    ("stamp", pa.string()),  # source stamp of a DECODED row ("" for a URL)
    ("pixels", pa.binary()),  # (S, S, 3) uint8 of a DECODED row
    ("vector", pa.binary()),  # float32 (D,) of a DECODED row, after embed
    ("seconds", pa.float64()),  # time the row spent in the decoder
    ("embed_seconds", pa.float64()),  # its share of the encoder call
])
SUMMARY_SCHEMA = pa.schema([
    ("accepted", pa.int64()), ("unchanged", pa.int64()),
    ("rejects", pa.string()),  # JSON list of [row, id, reason]
    ("words", pa.string()),  # JSON {word: rows containing it} of the batch's valid rows
    ("valid", pa.int64()),  # valid rows of the batch (the vocabulary's row count)
    ("decode_s", pa.float64()), ("embed_s", pa.float64()), ("write_s", pa.float64()),
])


@dataclass(frozen=True)
class StageConfig:
    """What every stage needs to know about the run (picklable: it travels to the workers)."""

    catalog: str  # catalog file (read by every read task: put it where the workers see it)
    image_root: str  # folder relative image paths resolve in
    collection: str  # the build or live collection (a real name, not an alias)
    run_id: str | None  # mark-and-sweep mark of this run (None: the run does not prune)
    sparse: bool  # write BM25 vectors (looked up once by the driver, not per batch)
    model_key: str  # identity of the vectors (enters the content hash)
    image_size: int  # S of the model's (S, S, 3) input
    limits: ImageLimits
    allow_urls: bool
    url_timeout_s: float
    store: StoreConfig  # what a worker opens when `store_actor` is None (a Qdrant server every worker reaches)
    store_actor: Any = None  # a StoreHost actor holding an in-process store (embedded, qdrant-client local)


def ranges(checkpoints: Checkpoints, rows: int) -> list[dict[str, int]]:
    """The read tasks' partitions: contiguous row ranges covering the catalog, each from one of its checkpoints
    (a product boundary) to the next range's, at least `rows` rows long (the last one may be shorter), with where
    reading resumes. A product listed in consecutive rows lies in one range."""
    out: list[dict[str, int]] = []
    for point in checkpoints.points:
        if not out or point.position - out[-1]["start"] >= rows:
            if out:
                out[-1]["stop"] = point.position
            out.append({"start": point.position, "stop": checkpoints.total, "offset": point.offset,
                        "row": point.row})
    return out


def read_ranges(batch: pa.Table, catalog: str, batch_rows: int = 256,
                duplicates: dict[str, int] | None = None) -> Iterator[pa.Table]:
    """Read and validate the catalog rows of each range of `ranges` in `batch`, `batch_rows` at a time, from the
    range's offset: a task reads its own rows and no others. `duplicates`: id -> the first valid row holding it,
    for the ids the catalog repeats (indexer.ray_duplicates): the other rows with such an id are rejected as
    duplicates, as in process."""
    for chunk in validated_chunks(batch, catalog, batch_rows):
        yield _table([_validated(row, duplicates or {}) for row in chunk])


def validated_chunks(batch: pa.Table, catalog: str, batch_rows: int) -> Iterator[list[Row | Rejected]]:
    """The validated catalog rows of each range of `ranges` in `batch`, `batch_rows` at a time."""
    reader = open_catalog(catalog)
    for part in batch.to_pylist():
        start = Checkpoint(part["start"], part["offset"], part["row"])
        with contextlib.closing(reader.rows_from(start)) as rows:
            owned = itertools.islice(rows, part["stop"] - part["start"])
            while chunk := list(itertools.islice(owned, batch_rows)):
                yield [validate(raw) for raw in chunk]


def _validated(row: Row | Rejected, duplicates: dict[str, int]) -> dict[str, Any]:
    if isinstance(row, Rejected):
        return _record(row.row, row.id, kind=REJECTED, reason=row.reason)
    if duplicates.get(row.id, row.row) != row.row:
        return _record(row.row, row.id, kind=REJECTED, reason=f"duplicate id: first seen at row {duplicates[row.id]}")
    return _record(row.row, row.id, json=json.dumps(dataclasses.asdict(row), ensure_ascii=False))


def _record(row: int, rid: str | None, **fields: Any) -> dict[str, Any]:
    return {"row": row, "id": rid or "", "json": "", "kind": "", "reason": "", "hash": "", "stamp": "",
            "pixels": b"", "vector": b"", "seconds": 0.0, "embed_seconds": 0.0, **fields}


def _table(records: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(records, schema=ROW_SCHEMA)


def _row(record: dict[str, Any]) -> Row:
    return Row(**json.loads(record["json"]))


class _StoreUser:
    """A stage that reads or writes the store: the StoreHost actor's, or its own client of a Qdrant server."""

    def __init__(self, cfg: StageConfig, store: Any = None):
        """`store`: an open store to use (the stages run without Ray in tests); else as `cfg` says."""
        self.cfg = cfg
        if store is not None:
            self.store = store
        elif cfg.store_actor is not None:
            from .ray_store import RemoteStore

            self.store = RemoteStore(cfg.store_actor)
        else:
            self.store = open_store(cfg.store)
        self.writer = Writer(self.store, cfg.collection, cfg.run_id, sparse=cfg.sparse)


class Prepare(_StoreUser):
    """Look up what the store holds for the batch's rows, mark the unchanged ones as seen, decode the others."""

    def __init__(self, cfg: StageConfig, store: Any = None):
        super().__init__(cfg, store)
        self.decoder = Decoder(Path(cfg.image_root), cfg.image_size, cfg.model_key, cfg.limits, cfg.allow_urls,
                               cfg.url_timeout_s)

    def __call__(self, batch: pa.Table) -> pa.Table:
        records = batch.to_pylist()
        known = self.writer.known([point_id(r["id"]) for r in records if r["id"]])
        self.writer.mark({pid: None for r in records  # a row rejected by validation keeps its old point
                          if r["kind"] == REJECTED and r["id"] and (k := known.get(pid := point_id(r["id"])))
                          and k.run != self.cfg.run_id})
        out, seen = [], {}
        for r in records:
            if r["kind"] == REJECTED:
                out.append(r)
                continue
            row = _row(r)
            k = known.get(row.point_id)
            result = self.decoder(row, k and k.hash, k and k.stamp)
            if isinstance(result, Rejected):
                if k is not None:
                    seen[row.point_id] = None  # its old point stays, as in the in-process path
                out.append({**r, "kind": REJECTED, "reason": result.reason, "seconds": result.seconds})
            elif isinstance(result, Unchanged):
                if result.restamp is not None:
                    self.writer.restamp(row.point_id, row.row, result.restamp)
                else:
                    seen[row.point_id] = row.row
                out.append({**r, "kind": UNCHANGED, "seconds": result.seconds})
            else:
                out.append({**r, "kind": DECODED, "hash": result.hash, "stamp": result.stamp or "",
                            "pixels": result.pixels.tobytes(), "seconds": result.seconds})
        self.writer.mark(seen)
        return _table(out)


class Embed:
    """The image encoder, one ONNX Runtime session per actor: DECODED rows get their vector."""

    def __init__(self, onnx_path: str, providers: list[str], threads: int | None, mean: tuple, std: tuple,
                 key: str, variant: str):
        from engine.onnx import OnnxImageEncoder

        from .embed import OnnxEmbedder

        encoder = OnnxImageEncoder(onnx_path, providers, threads, spinning=False)
        self.embedder = OnnxEmbedder(encoder, key, mean, std, variant)

    def __call__(self, batch: pa.Table) -> pa.Table:
        records = batch.to_pylist()
        todo = [r for r in records if r["kind"] == DECODED]
        if todo:
            s = self.embedder.image_size
            t0 = time.perf_counter()
            pixels = np.stack([np.frombuffer(r["pixels"], np.uint8).reshape(s, s, 3) for r in todo])
            vectors = self.embedder.encode(pixels)
            seconds = (time.perf_counter() - t0) / len(todo)
            for r, v in zip(todo, vectors):
                r["vector"] = np.asarray(v, np.float32).tobytes()
                r["pixels"] = b""  # not needed downstream
                r["embed_seconds"] = seconds
        return _table(records)


class Upload(_StoreUser):
    """Write the batch's embedded rows (payload, vector, BM25 vector, run mark); emit the batch's summary."""

    def __call__(self, batch: pa.Table) -> pa.Table:
        from .write import make_points

        records = batch.to_pylist()
        decoded = [r for r in records if r["kind"] == DECODED]
        t0 = time.perf_counter()
        if decoded:
            rows = [Decoded(_row(r), np.empty(0, np.uint8), r["hash"], 0.0, r["stamp"] or None) for r in decoded]
            vectors = np.stack([np.frombuffer(r["vector"], np.float32) for r in decoded])
            self.writer.write_points(make_points(rows, vectors, self.cfg.sparse, self.cfg.run_id))
        write_s = time.perf_counter() - t0
        vocabulary = Vocabulary()
        for r in records:
            if r["json"]:
                vocabulary.add(_row(r).payload())
        rejects = [[r["row"], r["id"] or None, r["reason"]] for r in records if r["kind"] == REJECTED]
        summary = {"accepted": len(decoded), "unchanged": sum(r["kind"] == UNCHANGED for r in records),
                   "rejects": json.dumps(rejects, ensure_ascii=False), "words": json.dumps(vocabulary.counts),
                   "valid": vocabulary.rows,
                   "decode_s": sum(r["seconds"] for r in records), "embed_s": sum(r["embed_seconds"] for r in decoded),
                   "write_s": write_s}
        return pa.Table.from_pylist([summary], schema=SUMMARY_SCHEMA)
