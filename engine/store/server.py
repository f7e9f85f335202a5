"""Server backend: a Qdrant server (or cluster) over HTTP through qdrant-client.

StoreConfig.url = ":memory:" (in-memory mode) or "local:<dir>" (local mode, persisted in <dir>)
runs qdrant-client inside this process instead: the test stand-ins for a server, through the
same client calls (collections, aliases, upserts). Those modes ignore cluster settings and have
no payload indexes (create_payload_index would only warn), so payload indexes are skipped there;
filters still work by scanning. Local mode locks <dir>: one process at a time.
"""

from __future__ import annotations

import dataclasses
import fcntl
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from engine.store.base import (
    MEMORY_URL,
    CollectionExists,
    CollectionNotFound,
    DimensionMismatch,
    Filter,
    Hit,
    NoSparseVectors,
    Point,
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
)
from engine.store.client_convert import client_sparse, to_client_args, to_client_request, to_qdrant_filter
from engine.store.hybrid import SPARSE_VECTOR, Group, StoreQuery, check_group_args, overfetch_groups
from engine.store.plan import plan

T = TypeVar("T")
_LOCAL_LOCK = ".lock"  # the file qdrant-client's local mode locks (qdrant_client/local/qdrant_local.py)
_DISTANCE = {"cosine": models.Distance.COSINE, "dot": models.Distance.DOT, "euclid": models.Distance.EUCLID}
_SCHEMA = {
    "keyword": models.PayloadSchemaType.KEYWORD,
    "integer": models.PayloadSchemaType.INTEGER,
    "float": models.PayloadSchemaType.FLOAT,
}
_BATCH = 256  # points per upsert request
_SCROLL_PAGE = 1024
_OPTIMIZE_WAIT_S = 1800.0  # optimize() gives up waiting for a green collection after this


def _local_client(directory: str) -> QdrantClient:
    """qdrant-client's local mode in `directory` (created if missing); it holds the directory's lock until closed."""
    _check_local_unlocked(directory)
    try:
        return QdrantClient(path=directory)
    except RuntimeError as e:  # its lock was taken between the check and here
        raise _local_locked(directory) from e


def _check_local_unlocked(directory: str) -> None:
    """Refuse a locked directory before qdrant-client does: its failed open leaks the lock file it opened."""
    lock = Path(directory) / _LOCAL_LOCK
    if not lock.exists():
        return
    with open(lock, "rb") as f:  # a probe of our own: closing it releases only this file's lock
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            raise _local_locked(directory) from e


def _local_locked(directory: str) -> StoreUnavailable:
    return StoreUnavailable(
        f"the qdrant-client local store in {directory} is open elsewhere (another process or store object holds "
        f"its lock); close that one first. 'local:<dir>' is a one-process test stand-in: to share a store between "
        "processes use a Qdrant server (COINAGE_QDRANT_URL=http://...)"
    )


def _quantization_config(quantization: str) -> models.ScalarQuantization | None:
    """StoreConfig.quantization -> the collection's quantization (the same as the embedded backend's)."""
    if quantization == "none":
        return None
    return models.ScalarQuantization(scalar=models.ScalarQuantizationConfig(
        type=models.ScalarType.INT8, quantile=0.99, always_ram=True))


def _search_params(config: StoreConfig) -> models.SearchParams | None:
    """The HNSW candidate list (StoreConfig.hnsw_ef, as the embedded backend; None: the server's default) and, with
    quantization, rescoring of the oversampled int8 candidates with the original vectors."""
    quantization = None if config.quantization == "none" else models.QuantizationSearchParams(
        rescore=True, oversampling=config.quantization_oversampling)
    if quantization is None and config.hnsw_ef is None:
        return None
    return models.SearchParams(hnsw_ef=config.hnsw_ef, quantization=quantization)


class ServerStore(VectorStore):
    """VectorStore over a Qdrant server. `client` lets tests inject a spy (no probe then)."""

    def __init__(self, config: StoreConfig, client: QdrantClient | None = None):
        self._config = config
        location = config.in_process_location()
        self._in_process = location is not None
        self._closed = False
        # qdrant-client's in-process modes search exactly and warn about search params: none for them
        self._search_params = None if self._in_process else _search_params(config)
        if client is not None:
            self._client = client
        elif location == MEMORY_URL:
            self._client = QdrantClient(location=MEMORY_URL)
        elif location is not None:
            self._client = _local_client(location)
        else:
            self._client = QdrantClient(
                url=config.url,
                api_key=config.api_key,
                timeout=max(1, math.ceil(config.timeout_s)),
                check_compatibility=False,  # its failure is only a warning; the probe below checks
            )
            # probe now, so that an unreachable server fails here, fast, naming the URL
            self._call("connect", None, self._client.get_collections)

    def _call(self, what: str, name: str | None, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a client call, turning its errors into ours."""
        if self._closed:  # the client's own answer would be a bare RuntimeError
            raise StoreClosed()
        try:
            return fn(*args, **kwargs)
        except (ResponseHandlingException, ConnectionError, TimeoutError) as e:  # transport failures
            raise StoreUnavailable(
                f"Qdrant server at {self._config.url} did not answer ({what}): {e}; start it, or fix "
                f"COINAGE_QDRANT_URL / StoreConfig.url (timeout {self._config.timeout_s:g}s)"
            ) from e
        except UnexpectedResponse as e:
            if e.status_code == 404 and name is not None:
                raise CollectionNotFound(name) from e
            if e.status_code in (401, 403):
                raise StoreError(
                    f"Qdrant server at {self._config.url} refused the API key ({what}); "
                    "set COINAGE_QDRANT_API_KEY to a valid key"
                ) from e
            if is_dimension_error(e):
                raise DimensionMismatch(f"{what} in {name!r}: {e}") from e
            raise StoreError(f"{what} on {name!r} failed at {self._config.url}: {e}") from e
        except (ValueError, AssertionError, KeyError) as e:  # in-memory mode raises these
            if name is not None and "not found" in str(e).lower():
                raise CollectionNotFound(name) from e
            if is_dimension_error(e):
                raise DimensionMismatch(f"{what} in {name!r}: {e}") from e
            raise StoreError(f"{what} on {name!r} failed: {e}") from e

    def _dim(self, name: str) -> int:
        info = self._call("get collection", name, self._client.get_collection, collection_name=name)
        params = info.config.params.vectors
        if not isinstance(params, models.VectorParams):
            raise StoreError(f"collection {name!r} has named vectors; it was not created by this engine")
        return int(params.size)

    def _exists(self, name: str) -> bool:
        """A collection or an alias of that name."""
        return self.collection_exists(name) or self.get_alias(name) is not None

    # --- collections -------------------------------------------------------------------

    def create_collection(self, name: str, dim: int, distance: str = "cosine",
                          payload_indexes: dict[str, str] | None = None, sparse: bool = True) -> None:
        check_name("collection", name)
        check_collection_args(dim, distance, payload_indexes)
        if self._exists(name):
            raise CollectionExists(
                f"collection or alias {name!r} already exists at {self._config.url}; "
                "drop it first or pick a new name (e.g. with a timestamp suffix)"
            )
        cfg = self._config
        self._call(
            "create collection", None, self._client.create_collection,
            collection_name=name,
            vectors_config=models.VectorParams(size=dim, distance=_DISTANCE[distance]),
            sparse_vectors_config={SPARSE_VECTOR: models.SparseVectorParams(modifier=models.Modifier.IDF)}
            if sparse else None,
            shard_number=cfg.shard_number,
            replication_factor=cfg.replication_factor,
            write_consistency_factor=cfg.write_consistency_factor,
            quantization_config=_quantization_config(cfg.quantization),
            timeout=max(1, math.ceil(cfg.timeout_s)),
        )
        if self._in_process:
            return
        for key, schema in (payload_indexes or {}).items():
            self._call("create payload index", name, self._client.create_payload_index,
                       collection_name=name, field_name=key, field_schema=_SCHEMA[schema], wait=True)

    def drop_collection(self, name: str) -> bool:
        check_name("collection", name)
        if not self.collection_exists(name):
            return False
        for alias, target in self.list_aliases().items():
            if target == name:  # the server drops them too; local mode needs telling
                self.delete_alias(alias)
        return bool(self._call("drop collection", name, self._client.delete_collection, collection_name=name))

    def collection_exists(self, name: str) -> bool:
        # not client.collection_exists: that answers True for an alias too (in-memory mode)
        return name in self.list_collections()

    def list_collections(self) -> list[str]:
        response = self._call("list collections", None, self._client.get_collections)
        return sorted(c.name for c in response.collections)

    # --- points ------------------------------------------------------------------------

    def upsert(self, collection: str, points: Sequence[Point]) -> None:
        dim = self._dim(collection)
        sparse = None if not any(p.sparse for p in points) else self.has_sparse(collection)
        batch: list[models.PointStruct] = []
        for p in points:
            if p.vector is None:
                raise ValueError(f"point {p.id!r} has no vector; upsert needs one")
            vec = check_vector(p.vector, dim, what=f"vector of point {p.id!r} for {collection!r}")
            if not isinstance(p.payload, dict):
                raise ValueError(f"payload of point {p.id!r} must be a dict, got {type(p.payload).__name__}")
            vector: Any = vec.tolist()
            if p.sparse:
                if not sparse:
                    raise NoSparseVectors(collection)
                vector = {"": vector, SPARSE_VECTOR: client_sparse(p.sparse)}
            batch.append(models.PointStruct(id=check_point_ids([p.id])[0], vector=vector, payload=p.payload))
            if len(batch) >= _BATCH:
                self._call("upsert", collection, self._client.upsert,
                           collection_name=collection, points=batch, wait=True)
                batch = []
        if batch:
            self._call("upsert", collection, self._client.upsert, collection_name=collection, points=batch, wait=True)

    def optimize(self, collection: str) -> None:
        deadline = time.monotonic() + _OPTIMIZE_WAIT_S
        while True:
            info = self._call("get collection", collection, self._client.get_collection, collection_name=collection)
            if info.status == models.CollectionStatus.GREEN:
                return
            if time.monotonic() > deadline:
                raise StoreError(
                    f"collection {collection!r} at {self._config.url} is still {info.status} after "
                    f"{_OPTIMIZE_WAIT_S:.0f}s; check the server's logs and optimizer status"
                )
            time.sleep(1.0)

    def delete(self, collection: str, ids: Sequence[str]) -> None:
        point_ids = check_point_ids(ids)
        for i in range(0, len(point_ids), _BATCH):
            self._call("delete", collection, self._client.delete, collection_name=collection,
                       points_selector=models.PointIdsList(points=point_ids[i:i + _BATCH]), wait=True)

    # --- reads -------------------------------------------------------------------------

    def search(self, collection_or_alias: str, vector: np.ndarray, limit: int = 10, offset: int = 0,
               filter: Filter | None = None) -> list[Hit]:
        check_search_args(limit, offset)
        query = check_vector(vector)
        try:
            response = self._call(
                "search", collection_or_alias, self._client.query_points,
                collection_name=collection_or_alias, query=query.tolist(), limit=limit, offset=offset,
                query_filter=to_qdrant_filter(filter), with_payload=True, search_params=self._search_params,
            )
        except StoreError as e:
            if isinstance(e, CollectionNotFound | StoreUnavailable | DimensionMismatch):
                raise
            self._explain(collection_or_alias, query, e)
            raise
        return [Hit(id=str(p.id), score=float(p.score), payload=dict(p.payload or {})) for p in response.points]

    def _explain(self, name: str, query: np.ndarray, error: StoreError) -> None:
        """Raise the precise error behind a failed search (missing collection, wrong dimension)."""
        target = self.get_alias(name) or name
        if not self.collection_exists(target):
            raise CollectionNotFound(name) from error
        check_vector(query, self._dim(target), what=f"query vector for {name!r}")

    def query(self, collection_or_alias: str, query: StoreQuery, limit: int = 10, offset: int = 0) -> list[Hit]:
        check_search_args(limit, offset)
        response = self._query_call("query", collection_or_alias, query, self._client.query_points, limit, offset,
                                    with_payload=True)
        return [Hit(id=str(p.id), score=float(p.score), payload=dict(p.payload or {})) for p in response.points]

    def query_batch(self, collection_or_alias: str, queries: Sequence[StoreQuery], limit: int = 10) -> list[list[Hit]]:
        """One round trip (query_batch_points); a failure is asked again one query at a time, whose error names
        the cause (missing BM25 vectors, another backbone's dimension)."""
        check_search_args(limit, 0)
        requests = [to_client_request(plan(dataclasses.replace(q, dense=check_vector(q.dense))
                                           if q.dense is not None else q, limit), self._search_params)
                    for q in queries]
        try:
            responses = self._call("query batch", collection_or_alias, self._client.query_batch_points,
                                   collection_name=collection_or_alias, requests=requests)
        except StoreError as e:
            if isinstance(e, StoreUnavailable):
                raise
            return super().query_batch(collection_or_alias, queries, limit)
        return [[Hit(id=str(p.id), score=float(p.score), payload=dict(p.payload or {})) for p in r.points]
                for r in responses]

    def query_groups(self, collection_or_alias: str, query: StoreQuery, group_by: str, limit: int = 10,
                     offset: int = 0, group_size: int = 4) -> list[Group]:
        check_search_args(limit, offset)
        check_group_args(limit, group_size)
        if query.order_by is not None:  # Qdrant groups by score only: group the ordered points here
            groups = overfetch_groups(lambda n: self.query(collection_or_alias, query, limit=n), group_by,
                                      offset + limit, group_size)
            return groups[offset:]
        response = self._query_call("query groups", collection_or_alias, query, self._client.query_points_groups,
                                    offset + limit, None, group_by=group_by, group_size=group_size,
                                    with_payload=True)
        return [Group(g.id, [Hit(id=str(p.id), score=float(p.score), payload=dict(p.payload or {})) for p in g.hits])
                for g in response.groups[offset:]]

    def _query_call(self, what: str, name: str, query: StoreQuery, fn: Callable[..., T], limit: int,
                    offset: int | None, **kwargs: Any) -> T:
        """`fn` (query_points, or query_points_groups: offset None) with the request tree of `query`."""
        if query.dense is not None:
            query = dataclasses.replace(query, dense=check_vector(query.dense))
        args = to_client_args(plan(query, limit, offset or 0), self._search_params)
        if offset is None:
            del args["offset"]
        try:
            return self._call(what, name, fn, collection_name=name, **args, **kwargs)
        except StoreError as e:
            if isinstance(e, StoreUnavailable):
                raise
            # asked only after a failure (no extra round trip); has_sparse raises CollectionNotFound if it is that
            if query.sparse and not self.has_sparse(name):
                raise NoSparseVectors(name) from e
            if isinstance(e, CollectionNotFound | DimensionMismatch):
                raise
            if query.dense is not None:
                self._explain(name, query.dense, e)
            raise

    def has_sparse(self, collection_or_alias: str) -> bool:
        target = self.get_alias(collection_or_alias) or collection_or_alias
        info = self._call("get collection", collection_or_alias, self._client.get_collection, collection_name=target)
        return SPARSE_VECTOR in (info.config.params.sparse_vectors or {})

    def set_metadata(self, collection: str, values: dict[str, Any]) -> None:
        self._call("update collection metadata", collection, self._client.update_collection,
                   collection_name=collection, metadata=values)

    def get_metadata(self, collection_or_alias: str) -> dict[str, Any]:
        target = self.get_alias(collection_or_alias) or collection_or_alias
        info = self._call("get collection", collection_or_alias, self._client.get_collection, collection_name=target)
        return dict(info.config.metadata or {})

    def retrieve(self, collection: str, ids: Sequence[str], with_vectors: bool = False) -> list[Point]:
        point_ids = check_point_ids(ids)
        records = self._call("retrieve", collection, self._client.retrieve, collection_name=collection,
                             ids=point_ids, with_payload=True, with_vectors=with_vectors)
        by_id = {str(r.id): r for r in records}
        out = []
        for pid in point_ids:
            r = by_id.get(pid)
            if r is not None:
                dense = r.vector.get("") if isinstance(r.vector, dict) else r.vector
                vec = np.asarray(dense, dtype=np.float32) if with_vectors else None
                out.append(Point(id=pid, vector=vec, payload=dict(r.payload or {})))
        return out

    def scroll_ids(self, collection: str) -> list[str]:
        ids: list[str] = []
        offset = None
        while True:
            records, offset = self._call(
                "scroll", collection, self._client.scroll, collection_name=collection, limit=_SCROLL_PAGE,
                offset=offset, with_payload=False, with_vectors=False,
            )
            ids.extend(str(r.id) for r in records)
            if offset is None:
                return sorted(ids)

    def count(self, collection: str, filter: Filter | None = None) -> int:
        result = self._call("count", collection, self._client.count, collection_name=collection,
                            count_filter=to_qdrant_filter(filter), exact=True)
        return int(result.count)

    # --- aliases -----------------------------------------------------------------------

    def set_alias(self, alias: str, collection: str) -> None:
        check_name("alias", alias)
        if not self.collection_exists(collection):
            raise CollectionNotFound(collection)
        if self.collection_exists(alias):
            raise CollectionExists(f"alias {alias!r} would shadow the collection of that name; pick another alias")
        ops: list[models.AliasOperations] = []
        if self.get_alias(alias) is not None:
            ops.append(models.DeleteAliasOperation(delete_alias=models.DeleteAlias(alias_name=alias)))
        ops.append(models.CreateAliasOperation(
            create_alias=models.CreateAlias(collection_name=collection, alias_name=alias)))
        # one request: the server applies delete + create atomically, so searches never miss
        self._call("set alias", alias, self._client.update_collection_aliases, change_aliases_operations=ops)

    def list_aliases(self) -> dict[str, str]:
        response = self._call("list aliases", None, self._client.get_aliases)
        return {a.alias_name: a.collection_name for a in response.aliases}

    def get_alias(self, alias: str) -> str | None:
        return self.list_aliases().get(alias)

    def delete_alias(self, alias: str) -> bool:
        if self.get_alias(alias) is None:
            return False
        self._call("delete alias", alias, self._client.update_collection_aliases, change_aliases_operations=[
            models.DeleteAliasOperation(delete_alias=models.DeleteAlias(alias_name=alias))])
        return True

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._client.close()
