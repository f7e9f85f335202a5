"""Embedded backend: Qdrant's own engine in-process (qdrant-edge-py), no server.

Layout under StoreConfig.path:

    store.lock                    held (exclusive, non-blocking) while a store is open
    aliases.json                  {"alias": "collection"}, replaced atomically (os.replace)
    collections/<name>/meta.json  {"dim", "distance", "payload_indexes", "sparse"}; written last, so a
                                  directory without it is an unfinished create and is ignored
                                  ("sparse" absent: built before collections carried BM25 vectors)
    collections/<name>/metadata.json  the collection's metadata (set_metadata), replaced atomically
    collections/<name>/shard/     one qdrant-edge shard: segments, WAL, HNSW graph

Chosen over qdrant-client's local mode by measurement (bench/store.py, 100k x 512 clustered
CLIP-like vectors, 2 threads, bench/results/store.json): local mode upserts 66 points/s to
disk (one SQLite commit per point) and answers in 377 ms (3.1 s with a filter), exact;
this backend upserts ~6,400 points/s and answers in 4-5 ms p50 (numpy brute force: 48 ms)
with recall@10 = 1.0 with and without filters, at the StoreConfig defaults of then (m=16,
ef_construct=100, ef=128, exact_filter_below=20000; ef is 256 since the 1M x 768 measurement,
bench/results/store_scale_1m.json).

Limitations:
- One process at a time: opening a directory that another process holds raises
  StoreUnavailable (the engine also locks each shard's WAL). Web servers with several
  worker processes, or an indexer running beside the web app, need backend="server".
  Within a process the store is thread-safe.
- The HNSW graph is built only by `optimize()`, blocking: 70-110 s for 100k x 512 on an idle
  2-core machine (250 CPU-s, 340 s wall, on a busy one). Until then, and for points added
  after it (a small appendable segment), search is an exact scan: correct, ~36 ms at 100k.
- Filtered HNSW alone lost recall on selective filters (0.92 at 5% of points), so filters
  matching fewer than exact_filter_below points (estimated from the payload indexes) are
  scored exactly: ~5 ms for 5k points. Create payload indexes for the filtered fields.
- Bool payload values cannot be filtered on (the binding turns True into 1); store flags as
  0/1 ints. Filter rejects bool values for both backends so they stay congruent.
- A dropped collection's files are removed at once. Backups: `coinage snapshot` copies a
  collection's files while its shard is closed (`frozen_collection`) and restores them under a
  new name (`adopt_collection`); see engine/store/snapshots.py.
- POSIX only (the directory lock is fcntl.flock); keep the directory on a local disk.
- No group-by in the engine: query_groups over-fetches points and groups them
  (engine/store/hybrid.py, overfetch_groups).
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import shutil
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import qdrant_edge as qe

from engine.store.base import (
    CollectionExists,
    CollectionNotFound,
    DimensionMismatch,
    Filter,
    Hit,
    NoSparseVectors,
    Point,
    RWLock,
    StoreClosed,
    StoreConfig,
    StoreError,
    StoreUnavailable,
    VectorStore,
    check_collection_args,
    check_name,
    check_point_ids,
    check_search_args,
    check_vector,
    is_dimension_error,
    is_valid_name,
)
from engine.store.edge_convert import (DISTANCE, SCHEMA, dense_part, edge_sparse, quantization_config,
                                       to_edge_filter, to_edge_request)
from engine.store.hybrid import SPARSE_VECTOR, Group, StoreQuery, overfetch_groups
from engine.store.orphans import remove_unfinished
from engine.store.plan import Node, plan

_BATCH = 1024  # points per engine update call
_SCROLL_PAGE = 4096


class _Collection:
    """One open shard and its metadata."""

    def __init__(self, name: str, shard: qe.EdgeShard, meta: dict[str, Any]):
        self.name = name
        self.shard = shard
        self.dim = int(meta["dim"])
        self.distance = str(meta["distance"])
        self.quantization = str(meta.get("quantization", "none"))  # collections from before the setting: none
        self.sparse = bool(meta.get("sparse"))


class EmbeddedStore(VectorStore):
    """VectorStore over qdrant-edge shards in a local directory (see module docstring)."""

    def __init__(self, config: StoreConfig):
        self._config = config
        self._root = Path(config.path)
        self._collections_dir = self._root / "collections"
        try:
            self._collections_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StoreError(
                f"cannot create the store directory {self._root}: {e}; "
                "set StoreConfig.path (COINAGE_STORE_PATH) to a writable directory"
            ) from e
        self._lock_file = open(self._root / "store.lock", "a+")  # noqa: SIM115 (held until close)
        try:
            fcntl.flock(self._lock_file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            self._lock_file.close()
            raise StoreUnavailable(
                f"the embedded store at {self._root} is open in another process (or another store object); "
                "the embedded backend is single-process: close the other one, or use backend='server' to share"
            ) from e
        self._meta_lock = threading.RLock()  # guards _open, _aliases and the files describing them
        self._rw = RWLock()  # data operations read; drop_collection and close write
        self._open: dict[str, _Collection] = {}
        self._closed = False
        try:
            self._aliases = self._read_aliases()
        except StoreError:
            self._lock_file.close()  # releases the lock
            raise
        remove_unfinished(self._collections_dir, self._aliases.values())  # killed creates, drops, restores

    # --- files -------------------------------------------------------------------------

    def _aliases_path(self) -> Path:
        return self._root / "aliases.json"

    def _read_aliases(self) -> dict[str, str]:
        path = self._aliases_path()
        if not path.exists():
            return {}
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise StoreError(
                f"cannot read {path}: {e}; fix or delete the file and set the aliases again "
                "(`coinage index ...` sets them)"
            ) from e
        if not isinstance(data, dict):
            raise StoreError(f"{path} must hold a JSON object alias -> collection; fix or delete it")
        return {str(k): str(v) for k, v in data.items()}

    def _write_aliases(self, aliases: dict[str, str]) -> None:
        path = self._aliases_path()
        tmp = path.with_name(f".aliases.{uuid.uuid4().hex}.tmp")
        with open(tmp, "w") as f:
            json.dump(aliases, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)  # readers see the old or the new file, never half of one

    def _dir(self, name: str) -> Path:
        return self._collections_dir / name

    def collection_dir(self, name: str) -> Path:
        """The directory of collection `name` (not an alias); files kept beside it live here (store/artifacts.py)."""
        return self._dir(check_name("collection", name))

    def _exists_on_disk(self, name: str) -> bool:
        # names that check_name would refuse cannot exist, and must not reach the filesystem
        return is_valid_name(name) and (self._dir(name) / "meta.json").is_file()

    def _edge_config(self, dim: int, distance: str, quantization: str = "none", sparse: bool = False) -> qe.EdgeConfig:
        cfg = self._config
        return qe.EdgeConfig(
            vectors=qe.EdgeVectorParams(size=dim, distance=DISTANCE[distance]),
            quantization_config=quantization_config(quantization),
            sparse_vectors={SPARSE_VECTOR: qe.EdgeSparseVectorParams(modifier=qe.Modifier.Idf)} if sparse else None,
            hnsw_config=qe.HnswIndexConfig(
                m=cfg.hnsw_m,
                ef_construct=cfg.hnsw_ef_construct,
                full_scan_threshold=cfg.full_scan_threshold_kb,
                max_indexing_threads=cfg.threads,
            ),
            max_search_threads=cfg.threads,
        )

    # --- lookup ------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosed()

    def _get(self, name: str) -> _Collection:
        """The open collection for a name or alias (caller holds the read lock)."""
        with self._meta_lock:
            self._check_open()
            target = self._aliases.get(name, name)
            col = self._open.get(target)
            if col is not None:
                return col
            if not self._exists_on_disk(target):
                raise CollectionNotFound(name)
            try:
                meta = json.loads((self._dir(target) / "meta.json").read_text())
                shard = qe.EdgeShard.load(
                    str(self._dir(target) / "shard"),
                    self._edge_config(int(meta["dim"]), str(meta["distance"]), meta.get("quantization", "none"),
                                      bool(meta.get("sparse"))),
                )
            except Exception as e:
                raise StoreError(
                    f"cannot open collection {target!r} at {self._dir(target)}: {e}; "
                    f"if it is corrupt, drop it and rebuild with `coinage index ...`"
                ) from e
            col = self._open[target] = _Collection(target, shard, meta)
            return col

    # --- collections -------------------------------------------------------------------

    def create_collection(self, name: str, dim: int, distance: str = "cosine",
                          payload_indexes: dict[str, str] | None = None, sparse: bool = True) -> None:
        check_name("collection", name)
        check_collection_args(dim, distance, payload_indexes)
        with self._rw.read(), self._meta_lock:
            self._check_open()
            if self._exists_on_disk(name) or name in self._aliases:
                raise CollectionExists(
                    f"collection or alias {name!r} already exists in {self._root}; "
                    "drop it first or pick a new name (e.g. with a timestamp suffix)"
                )
            directory = self._dir(name)
            if directory.exists():  # an unfinished create from a crash
                shutil.rmtree(directory)
            directory.mkdir(parents=True)
            try:
                shard = qe.EdgeShard.create(str(directory / "shard"),
                                            self._edge_config(dim, distance, self._config.quantization, sparse))
                for key, schema in (payload_indexes or {}).items():
                    shard.update(qe.UpdateOperation.create_field_index(key, SCHEMA[schema]))
                shard.flush()
            except Exception as e:
                shutil.rmtree(directory, ignore_errors=True)
                raise StoreError(f"cannot create collection {name!r} in {directory}: {e}") from e
            meta = {"dim": dim, "distance": distance, "payload_indexes": dict(payload_indexes or {}),
                    "quantization": self._config.quantization, "sparse": sparse}
            tmp = directory / "meta.json.tmp"
            tmp.write_text(json.dumps(meta, indent=1))
            os.replace(tmp, directory / "meta.json")
            self._open[name] = _Collection(name, shard, meta)

    def drop_collection(self, name: str) -> bool:
        check_name("collection", name)
        with self._rw.write(), self._meta_lock:
            self._check_open()
            if not self._exists_on_disk(name):
                return False
            col = self._open.pop(name, None)
            if col is not None:
                col.shard.close()
            remaining = {a: c for a, c in self._aliases.items() if c != name}
            if remaining != self._aliases:
                self._write_aliases(remaining)
                self._aliases = remaining
            trash = self._collections_dir / f".trash-{name}-{uuid.uuid4().hex}"
            os.replace(self._dir(name), trash)  # gone from view atomically, then removed
            shutil.rmtree(trash, ignore_errors=True)
            return True

    def collection_exists(self, name: str) -> bool:
        with self._meta_lock:
            self._check_open()
            return self._exists_on_disk(name)

    def list_collections(self) -> list[str]:
        with self._meta_lock:
            self._check_open()
            return sorted(p.name for p in self._collections_dir.iterdir()
                          if not p.name.startswith(".") and (p / "meta.json").is_file())

    # --- points ------------------------------------------------------------------------

    def upsert(self, collection: str, points: Sequence[Point]) -> None:
        with self._rw.read():
            col = self._get(collection)
            batch: list[qe.Point] = []
            for p in points:
                if p.vector is None:
                    raise ValueError(f"point {p.id!r} has no vector; upsert needs one")
                vec = check_vector(p.vector, col.dim, what=f"vector of point {p.id!r} for {collection!r}")
                if not isinstance(p.payload, dict):
                    raise ValueError(f"payload of point {p.id!r} must be a dict, got {type(p.payload).__name__}")
                vector: Any = vec
                if p.sparse:
                    if not col.sparse:
                        raise NoSparseVectors(col.name)
                    vector = {"": vec.tolist(), SPARSE_VECTOR: edge_sparse(p.sparse)}
                batch.append(qe.Point(check_point_ids([p.id])[0], vector, p.payload))
                if len(batch) >= _BATCH:
                    self._apply(col, qe.UpdateOperation.upsert_points(batch), "upsert")
                    batch = []
            if batch:
                self._apply(col, qe.UpdateOperation.upsert_points(batch), "upsert")

    def _apply(self, col: _Collection, op: qe.UpdateOperation, what: str) -> None:
        try:
            col.shard.update(op)
        except Exception as e:
            raise StoreError(f"{what} into collection {col.name!r} failed: {e}") from e

    def optimize(self, collection: str) -> None:
        with self._rw.read():
            col = self._get(collection)
            try:
                col.shard.optimize()
                col.shard.flush()
            except Exception as e:
                raise StoreError(f"building the index of collection {col.name!r} failed: {e}") from e

    def delete(self, collection: str, ids: Sequence[str]) -> None:
        point_ids = check_point_ids(ids)
        with self._rw.read():
            col = self._get(collection)
            for i in range(0, len(point_ids), _BATCH):
                self._apply(col, qe.UpdateOperation.delete_points(point_ids[i:i + _BATCH]), "delete")

    # --- reads -------------------------------------------------------------------------

    def search(self, collection_or_alias: str, vector: np.ndarray, limit: int = 10, offset: int = 0,
               filter: Filter | None = None) -> list[Hit]:
        check_search_args(limit, offset)
        with self._rw.read():
            col = self._get(collection_or_alias)
            query = check_vector(vector, col.dim, what=f"query vector for {collection_or_alias!r}")
            ef = self._config.hnsw_ef
            edge_filter = to_edge_filter(filter)
            try:
                # selective filters: exact scoring of the few matching points beats filtered HNSW on recall
                exact = edge_filter is not None and self._config.exact_filter_below > col.shard.count(
                    qe.CountRequest(exact=False, filter=edge_filter))
                found = col.shard.query(qe.QueryRequest(
                    limit=limit,
                    offset=offset,
                    query=qe.Query.Nearest(query),
                    filter=edge_filter,
                    with_payload=True,
                    params=qe.SearchParams(hnsw_ef=max(ef, limit + offset) if ef else None, exact=exact,
                                           quantization=self._rescoring(col)),
                ))
            except Exception as e:
                if is_dimension_error(e):
                    raise DimensionMismatch(f"search in {col.name!r}: {e}") from e
                raise StoreError(f"search in collection {col.name!r} failed: {e}") from e
        return [Hit(id=str(p.id), score=float(p.score), payload=dict(p.payload or {})) for p in found]

    def _rescoring(self, col: _Collection) -> qe.QuantizationSearchParams | None:
        """Quantized collections: score the int8 copies, rescore the oversampled best with the originals."""
        if col.quantization == "none":
            return None
        return qe.QuantizationSearchParams(rescore=True, oversampling=self._config.quantization_oversampling)

    def query(self, collection_or_alias: str, query: StoreQuery, limit: int = 10, offset: int = 0) -> list[Hit]:
        check_search_args(limit, offset)
        with self._rw.read():
            col = self._get(collection_or_alias)
            request = self._request(col, query, limit, offset, collection_or_alias)
            found = _engine_query(col.name, lambda: col.shard.query(request))
        return _hits(found)

    def query_batch(self, collection_or_alias: str, queries: Sequence[StoreQuery], limit: int = 10) -> list[list[Hit]]:
        """One planned batch of the engine (qdrant-edge's Shard.query_batch)."""
        check_search_args(limit, 0)
        with self._rw.read():
            col = self._get(collection_or_alias)
            batch = qe.QueryBatchRequest([self._request(col, q, limit, 0, collection_or_alias) for q in queries])
            found = _engine_query(col.name, lambda: col.shard.query_batch(batch))
        return [_hits(points) for points in found]

    def query_groups(self, collection_or_alias: str, query: StoreQuery, group_by: str, limit: int = 10,
                     offset: int = 0, group_size: int = 4) -> list[Group]:
        check_search_args(limit, offset)
        groups = overfetch_groups(lambda n: self.query(collection_or_alias, query, limit=n), group_by,
                                  offset + limit, group_size)
        return groups[offset:]

    def _request(self, col: _Collection, query: StoreQuery, limit: int, offset: int, name: str) -> qe.QueryRequest:
        """The engine request: the request tree (engine.store.plan) with this collection's dense search params."""
        if query.sparse and not col.sparse:
            raise NoSparseVectors(col.name)
        if query.dense is not None:
            query = dataclasses.replace(query, dense=check_vector(query.dense, col.dim,
                                                                  what=f"query vector for {name!r}"))
        edge_filter = to_edge_filter(query.filter)
        # selective filters: exact scoring of the few matching points beats filtered HNSW on recall
        exact = edge_filter is not None and query.dense is not None and self._config.exact_filter_below > \
            col.shard.count(qe.CountRequest(exact=False, filter=edge_filter))
        ef = self._config.hnsw_ef

        def dense_params(node: Node) -> qe.SearchParams:
            return qe.SearchParams(hnsw_ef=max(ef, node.limit + node.offset) if ef else None, exact=exact,
                                   quantization=self._rescoring(col))

        return to_edge_request(plan(query, limit, offset), dense_params)

    def has_sparse(self, collection_or_alias: str) -> bool:
        with self._rw.read():
            return self._get(collection_or_alias).sparse

    def set_metadata(self, collection: str, values: dict[str, Any]) -> None:
        with self._rw.read(), self._meta_lock:
            col = self._get(collection)
            path = self._dir(col.name) / "metadata.json"
            merged = {**self._read_metadata(col.name), **values}
            tmp = path.with_name(f".metadata.{uuid.uuid4().hex}.tmp")
            tmp.write_text(json.dumps(merged))
            os.replace(tmp, path)

    def get_metadata(self, collection_or_alias: str) -> dict[str, Any]:
        with self._rw.read(), self._meta_lock:
            return self._read_metadata(self._get(collection_or_alias).name)

    def _read_metadata(self, name: str) -> dict[str, Any]:
        path = self._dir(name) / "metadata.json"
        if not path.exists():
            return {}
        try:
            return dict(json.loads(path.read_text()))
        except (OSError, ValueError, TypeError) as e:
            raise StoreError(f"cannot read {path}: {e}; rebuild the collection with `coinage reindex`") from e

    def retrieve(self, collection: str, ids: Sequence[str], with_vectors: bool = False) -> list[Point]:
        point_ids = check_point_ids(ids)
        with self._rw.read():
            col = self._get(collection)
            try:
                records = col.shard.retrieve(point_ids, with_payload=True, with_vector=with_vectors)
            except Exception as e:
                raise StoreError(f"retrieve from collection {col.name!r} failed: {e}") from e
        by_id = {str(r.id): r for r in records}
        out = []
        for pid in point_ids:
            r = by_id.get(pid)
            if r is not None:
                vec = np.asarray(dense_part(r.vector), dtype=np.float32) if with_vectors else None
                out.append(Point(id=pid, vector=vec, payload=dict(r.payload or {})))
        return out

    def scroll_ids(self, collection: str) -> list[str]:
        ids: list[str] = []
        with self._rw.read():
            col = self._get(collection)
            offset = None
            while True:
                records, offset = col.shard.scroll(
                    qe.ScrollRequest(offset=offset, limit=_SCROLL_PAGE, with_payload=False, with_vector=False)
                )
                ids.extend(str(r.id) for r in records)
                if offset is None:
                    break
        return sorted(ids)

    def count(self, collection: str, filter: Filter | None = None) -> int:
        with self._rw.read():
            col = self._get(collection)
            return int(col.shard.count(qe.CountRequest(exact=True, filter=to_edge_filter(filter))))

    # --- aliases -----------------------------------------------------------------------

    def set_alias(self, alias: str, collection: str) -> None:
        check_name("alias", alias)
        with self._meta_lock:
            self._check_open()
            if not self._exists_on_disk(collection):
                raise CollectionNotFound(collection)
            if self._exists_on_disk(alias):
                raise CollectionExists(
                    f"alias {alias!r} would shadow the collection of that name; pick another alias"
                )
            aliases = {**self._aliases, alias: collection}
            self._write_aliases(aliases)
            self._aliases = aliases  # one assignment: searches see the old or the new target

    def get_alias(self, alias: str) -> str | None:
        with self._meta_lock:
            self._check_open()
            return self._aliases.get(alias)

    def list_aliases(self) -> dict[str, str]:
        with self._meta_lock:
            self._check_open()
            return dict(self._aliases)

    def delete_alias(self, alias: str) -> bool:
        with self._meta_lock:
            self._check_open()
            if alias not in self._aliases:
                return False
            aliases = {a: c for a, c in self._aliases.items() if a != alias}
            self._write_aliases(aliases)
            self._aliases = aliases
            return True

    # --- files of whole collections (snapshots) ----------------------------------------

    @contextmanager
    def frozen_collection(self, name: str) -> Iterator[Path]:
        """The directory of collection `name` (or of the collection alias `name` points at), with its
        shard flushed and closed; every other call on this store waits until the block ends, and no
        other process can open the store meanwhile (the directory lock), so the files can be copied
        as one consistent state. The shard reopens on the next use."""
        with self._rw.write(), self._meta_lock:
            self._check_open()
            target = self._aliases.get(name, name)
            if not self._exists_on_disk(target):
                raise CollectionNotFound(name)
            col = self._open.pop(target, None)
            if col is not None:
                try:
                    col.shard.flush()
                    col.shard.close()
                except Exception as e:
                    raise StoreError(f"cannot flush collection {target!r} before copying it: {e}") from e
            yield self._dir(target)

    def adopt_collection(self, name: str, fill: Callable[[Path], None]) -> None:
        """Create collection `name` from files: `fill(directory)` writes meta.json and shard/ (as
        `frozen_collection` showed them) into an empty staging directory of this store, which then
        becomes the collection in one rename. Raises CollectionExists if `name` is taken; a failed
        `fill` leaves nothing behind."""
        check_name("collection", name)
        with self._rw.write(), self._meta_lock:
            self._check_open()
            if self._exists_on_disk(name) or name in self._aliases:
                raise CollectionExists(
                    f"collection or alias {name!r} already exists in {self._root}; restore under another name "
                    "(e.g. with a timestamp suffix) and point the alias at it"
                )
            staging = self._collections_dir / f".adopt-{name}-{uuid.uuid4().hex}"
            staging.mkdir()
            try:
                fill(staging)
                meta = json.loads((staging / "meta.json").read_text())
                shard = qe.EdgeShard.load(str(staging / "shard"), self._edge_config(
                    int(meta["dim"]), str(meta["distance"]), bool(meta.get("sparse"))))
                shard.close()  # it opens: the files are a collection of this engine's format
                if self._dir(name).exists():  # an unfinished create from a crash
                    shutil.rmtree(self._dir(name))
                os.replace(staging, self._dir(name))
            except BaseException as e:
                shutil.rmtree(staging, ignore_errors=True)
                if isinstance(e, StoreError | KeyboardInterrupt | SystemExit):
                    raise
                raise StoreError(f"cannot restore collection {name!r} into {self._root}: {e}; the files are not "
                                 "an embedded collection of this engine version (meta.json + shard/)") from e

    # --- lifecycle ---------------------------------------------------------------------

    def close(self) -> None:
        with self._rw.write(), self._meta_lock:
            if self._closed:
                return
            self._closed = True
            errors = []
            for col in self._open.values():
                try:
                    col.shard.flush()
                    col.shard.close()
                except Exception as e:  # keep closing the others, then report
                    errors.append(f"{col.name}: {e}")
            self._open.clear()
            self._lock_file.close()  # releases the flock
            if errors:
                raise StoreError(f"closing the embedded store at {self._root} failed for " + "; ".join(errors))


def _engine_query(name: str, run: Callable[[], Any]) -> Any:
    """An engine query, its failures as our errors."""
    try:
        return run()
    except Exception as e:
        if is_dimension_error(e):
            raise DimensionMismatch(f"query in {name!r}: {e}") from e
        raise StoreError(f"query in collection {name!r} failed: {e}") from e


def _hits(points: Sequence[Any]) -> list[Hit]:
    return [Hit(id=str(p.id), score=float(p.score), payload=dict(p.payload or {})) for p in points]
