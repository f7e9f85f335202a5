"""The store interface: config, value types, errors and the abstract `VectorStore`.

Callers (indexer, search, web) import only from here (via `engine.store`); qdrant
types never leak out of the backends.
"""

from __future__ import annotations

import abc
import math
import numbers
import os
import re
import threading
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from engine.errors import CoinageError
if TYPE_CHECKING:
    from engine.store.hybrid import FacetCounts, Group, SparseVector, StoreQuery

# Fixed namespace for product ids -> point ids. Changing it re-keys every stored point.
PRODUCT_NAMESPACE = uuid.UUID("6f1f3c0e-5a2b-4c8e-9d71-2b1f0c9a4e55")

BACKENDS = ("embedded", "server")
DISTANCES = ("cosine", "dot", "euclid")
# No "bool": qdrant-edge-py 0.9 turns MatchValue(True) into 1, so bool fields could not be filtered.
PAYLOAD_SCHEMAS = ("keyword", "integer", "float")
# StoreConfig field -> environment variable read by StoreConfig.from_env (text values)
_ENV_VARS = {"backend": "COINAGE_STORE_BACKEND", "path": "COINAGE_STORE_PATH",
             "url": "COINAGE_QDRANT_URL", "api_key": "COINAGE_QDRANT_API_KEY",
             "quantization": "COINAGE_STORE_QUANTIZATION"}
# ... and the numeric ones: the cluster settings of new collections and the request timeout
_ENV_NUMBERS = {"shard_number": ("COINAGE_QDRANT_SHARDS", int),
                "replication_factor": ("COINAGE_QDRANT_REPLICAS", int),
                "write_consistency_factor": ("COINAGE_QDRANT_WRITE_CONSISTENCY", int),
                "timeout_s": ("COINAGE_QDRANT_TIMEOUT_S", float),
                "quantization_oversampling": ("COINAGE_STORE_OVERSAMPLING", float),
                "hnsw_ef": ("COINAGE_STORE_EF", int)}
# StoreConfig.quantization values: scalar int8 (with rescoring) or none
QUANTIZATIONS = ("int8", "none")
# StoreConfig.url forms that run qdrant-client inside this process instead of reaching a server (test stand-ins)
MEMORY_URL = ":memory:"  # in-memory mode: the data goes when the store is closed
LOCAL_URL_PREFIX = "local:"  # "local:<dir>", local mode: the data persists in <dir>, one process at a time
# Collection and alias names become directory / file keys in the embedded backend.
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


@dataclass
class StoreConfig:
    # "embedded" (default: no server, data in `path`, one process) or "server" (Qdrant over HTTP).
    backend: str = "embedded"
    # embedded: data directory; created if missing. Holds one sub-directory per collection.
    path: str = "var/store"
    # server: base URL of the Qdrant server, http(s)://host:6333 (production: http://qdrant:6333). Test stand-ins
    # that run qdrant-client in this process, through the same client calls: ":memory:" (in-memory mode, gone on
    # close) and "local:<dir>" (local mode: data kept in <dir> across opens and processes; one process at a time).
    url: str | None = None
    # server: API key; set it through from_env() (COINAGE_QDRANT_API_KEY), never in code or files.
    api_key: str | None = field(default=None, repr=False)
    # server: shards per new collection (COINAGE_QDRANT_SHARDS; cluster: >= the node count, e.g. 3).
    # Fixed at creation: a new value applies to collections built afterwards (`coinage reindex`).
    shard_number: int = 1
    # server: copies of each shard on distinct nodes (COINAGE_QDRANT_REPLICAS; cluster: 2, so one
    # node can fail). More copies than nodes are created once nodes join.
    replication_factor: int = 1
    # server: copies that must acknowledge a write before it succeeds (COINAGE_QDRANT_WRITE_CONSISTENCY;
    # <= replication_factor). 1: writes survive a node being down; replication_factor: no write is lost
    # if a node dies right after acknowledging.
    write_consistency_factor: int = 1
    # server: seconds before a request (and the reachability probe in open_store) gives up (COINAGE_QDRANT_TIMEOUT_S).
    timeout_s: float = 10.0
    # embedded: HNSW edges per node (bench/store.py: 16 gives recall@10 1.0 at 100k x 512, ef=128).
    hnsw_m: int = 16
    # embedded: candidate list size while building the graph.
    hnsw_ef_construct: int = 100
    # both backends: HNSW candidate list size at query time (COINAGE_STORE_EF; None = the engine's default; raised
    # per query to offset + limit when a page reaches deeper). At 1M x 768 int8 (bench/results/
    # store_scale_1m.json) 128 gave recall@10 0.959 whatever the oversampling, 256 gave 0.9945 (p95 16 ms on 2
    # cores), 512 gave 1.0 (p95 17 ms); at 100k, 128 and 256 both give 1.0.
    hnsw_ef: int | None = 256
    # embedded: segments below this many KB of vectors are searched exactly (no graph).
    full_scan_threshold_kb: int = 10_000
    # embedded: a filtered search whose filter matches fewer points than this (estimated from
    # the payload indexes) scores those points exactly; filtered HNSW only above it. HNSW alone
    # gave recall@10 0.92 at 5% selectivity (bench/store.py); exact over 5k points costs ~5 ms.
    exact_filter_below: int = 20_000
    # embedded: threads for index building and search (the dev machines have 2 cores).
    threads: int = 2
    # both backends: vector quantization of new collections (COINAGE_STORE_QUANTIZATION): "int8" (Qdrant's scalar
    # int8, quantile 0.99, kept in RAM: searches score the int8 copies, then rescore the best candidates with the
    # original vectors) or "none" (fp32 only). Fixed at creation (embedded: recorded in the collection's meta.json).
    quantization: str = "int8"
    # both backends, quantized collections: candidates rescored with the originals, as a multiple of the results
    # asked (COINAGE_STORE_OVERSAMPLING; >= 1).
    quantization_oversampling: float = 2.0

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(
                f"StoreConfig.backend={self.backend!r} is not a backend; use one of {BACKENDS}"
            )
        if self.backend == "server" and not self.url:
            raise ValueError(
                "StoreConfig.backend='server' needs url (e.g. http://qdrant:6333; in tests ':memory:' or "
                "'local:<dir>'); set COINAGE_QDRANT_URL or pass url="
            )
        if self.backend == "server":
            check_server_url(self.url)
        for name in ("shard_number", "replication_factor", "write_consistency_factor", "threads",
                     "hnsw_m", "hnsw_ef_construct"):
            if getattr(self, name) < 1:
                raise ValueError(f"StoreConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.hnsw_ef is not None and self.hnsw_ef < 1:
            raise ValueError(f"StoreConfig.hnsw_ef must be >= 1 (or None for the engine's default), got {self.hnsw_ef}; "
                             "set it like COINAGE_STORE_EF=256")
        if self.write_consistency_factor > self.replication_factor:
            raise ValueError(
                f"StoreConfig.write_consistency_factor={self.write_consistency_factor} exceeds "
                f"replication_factor={self.replication_factor}: every write would wait for copies that do not "
                "exist; lower COINAGE_QDRANT_WRITE_CONSISTENCY or raise COINAGE_QDRANT_REPLICAS"
            )
        if self.quantization not in QUANTIZATIONS:
            raise ValueError(f"StoreConfig.quantization={self.quantization!r} is not one of {QUANTIZATIONS}; "
                             "set COINAGE_STORE_QUANTIZATION=int8 or none")
        if not self.quantization_oversampling >= 1:
            raise ValueError(
                f"StoreConfig.quantization_oversampling must be >= 1, got {self.quantization_oversampling}")
        if not self.timeout_s > 0:
            raise ValueError(f"StoreConfig.timeout_s must be > 0 seconds, got {self.timeout_s}")

    def in_process_location(self) -> str | None:
        """Where qdrant-client runs inside this process for a test stand-in url: ":memory:" or the directory of
        "local:<dir>"; None for a server URL (and for the embedded backend)."""
        if self.backend != "server" or self.url is None:
            return None
        if self.url == MEMORY_URL:
            return MEMORY_URL
        if self.url.startswith(LOCAL_URL_PREFIX):
            return self.url[len(LOCAL_URL_PREFIX):]
        return None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> StoreConfig:
        """Config from COINAGE_STORE_BACKEND, COINAGE_STORE_PATH, COINAGE_QDRANT_URL,
        COINAGE_QDRANT_API_KEY, COINAGE_QDRANT_SHARDS, COINAGE_QDRANT_REPLICAS,
        COINAGE_QDRANT_WRITE_CONSISTENCY, COINAGE_QDRANT_TIMEOUT_S, COINAGE_STORE_QUANTIZATION,
        COINAGE_STORE_OVERSAMPLING and COINAGE_STORE_EF (`environ` defaults to
        os.environ); unset ones keep their defaults. `overrides` are StoreConfig fields (e.g.
        from CLI flags) and win."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {key: env[var] for key, var in _ENV_VARS.items() if env.get(var)}
        for key, (var, kind) in _ENV_NUMBERS.items():
            raw = (env.get(var) or "").strip()
            if raw:
                try:
                    values[key] = kind(raw)
                except ValueError as e:
                    what, example = ("a whole number", "2") if kind is int else ("a number", "10")
                    raise ValueError(f"{var}={raw!r} is not {what}; set it like {var}={example}") from e
        values.update(overrides)
        return cls(**values)


@dataclass
class Point:
    id: str  # a UUID string; use point_id(product_id) to derive one
    vector: np.ndarray | None  # float32, shape (dim,); None when retrieved without vectors
    payload: dict[str, Any] = field(default_factory=dict)
    sparse: SparseVector | None = None  # BM25 vector of the point's text (engine.store.lexical); None: none


@dataclass
class Hit:
    id: str  # point id (UUID string)
    score: float  # similarity: higher is closer (cosine / dot); for euclid, the distance
    payload: dict[str, Any]


@dataclass
class Filter:
    # field -> value that must match exactly (str or int; store flags as 0/1); a list matches any of them.
    must: dict[str, Any] = field(default_factory=dict)
    # field -> (gte, lte) inclusive numeric bounds; None leaves that side open.
    ranges: dict[str, tuple[float | None, float | None]] = field(default_factory=dict)
    # field -> value that must NOT match (negation: "dress not red"); a list excludes each of them. Points
    # without the field are kept.
    must_not: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for part in ("must", "must_not"):
            for key, value in getattr(self, part).items():
                _check_match(f"Filter.{part}[{key!r}]", value)
        for key, bounds in self.ranges.items():
            if not (isinstance(bounds, tuple | list) and len(bounds) == 2):
                raise ValueError(f"Filter.ranges[{key!r}] must be a (gte, lte) pair, got {bounds!r}")
            if bounds[0] is None and bounds[1] is None:
                raise ValueError(f"Filter.ranges[{key!r}] has no bounds; drop it or give gte/lte")
            for b in bounds:
                if b is not None and (isinstance(b, bool) or not isinstance(b, numbers.Real) or not math.isfinite(b)):
                    raise ValueError(f"Filter.ranges[{key!r}] bound {b!r} must be a finite number or None")


def _check_match(what: str, value: Any) -> None:
    """An exact-match value of a Filter: a str or int, or a non-empty list of one of them."""
    values = value if isinstance(value, list | tuple) else [value]
    if not values:
        raise ValueError(f"{what} is an empty list; it would match nothing")
    for v in values:
        if isinstance(v, bool | np.bool_):
            raise ValueError(f"{what} = {v!r}: bool matching is not supported by the embedded engine; store the "
                             "flag as an int 0/1 and match on that")
        if not isinstance(v, str | numbers.Integral):
            raise ValueError(f"{what} = {v!r}: exact match takes str or int; use Filter.ranges for float fields")
    if len({isinstance(v, str) for v in values}) > 1:
        raise ValueError(f"{what} mixes str and int values; use one type")


class StoreError(CoinageError):
    """Base class for vector store errors; messages name the problem and the fix."""


class StoreUnavailable(StoreError):
    """The server cannot be reached (or the embedded directory is held by another process)."""


class StoreClosed(StoreError):
    """A call on a store after its close()."""

    def __init__(self) -> None:
        super().__init__("the vector store is closed; open a new one with open_store(config)")


class CollectionNotFound(StoreError):
    """A collection or alias that does not exist."""

    def __init__(self, name: str):
        super().__init__(
            f"collection or alias {name!r} does not exist in the vector store; "
            f"build it with `coinage index ...` (or check the name / StoreConfig.path / url)"
        )
        self.name = name


class CollectionExists(StoreError):
    """create_collection on a name that is taken."""


class DimensionMismatch(StoreError):
    """A vector whose length differs from the collection's."""


class NoSparseVectors(StoreError):
    """A lexical (sparse) query or write on a collection built before collections carried BM25 vectors."""

    def __init__(self, name: str):
        super().__init__(
            f"collection {name!r} was built without the lexical (BM25) vectors that name search and typo "
            "correction need; rebuild it with `coinage reindex` (searches keep being served meanwhile)"
        )
        self.name = name


def check_server_url(url: str) -> str:
    """A Qdrant server URL (http or https), or a test stand-in (":memory:", "local:<dir>")."""
    if url.startswith(LOCAL_URL_PREFIX):
        if not url[len(LOCAL_URL_PREFIX):].strip():
            raise ValueError(
                f"StoreConfig.url={url!r} names no directory; use local:<dir>, e.g. local:/tmp/qdrant (qdrant-client's "
                "local mode, a test stand-in), or http(s)://host:6333 for a Qdrant server"
            )
        return url
    scheme, sep, _ = url.partition("://")
    if sep and scheme.lower() not in ("http", "https"):
        raise ValueError(
            f"StoreConfig.url={url!r}: scheme {scheme!r} is not supported; use http(s)://host:6333 for a Qdrant "
            f"server (COINAGE_QDRANT_URL), or in tests {MEMORY_URL!r} / 'local:<dir>' for qdrant-client in this process"
        )
    return url


def point_id(product_id: str) -> str:
    """Stable point id (UUID string) for a product id: uuid5 over PRODUCT_NAMESPACE."""
    if not isinstance(product_id, str) or not product_id:
        raise ValueError(f"point_id needs a non-empty product id string, got {product_id!r}")
    return str(uuid.uuid5(PRODUCT_NAMESPACE, product_id))


def is_valid_name(name: object) -> bool:
    return isinstance(name, str) and _NAME_RE.fullmatch(name) is not None


def check_name(kind: str, name: str) -> str:
    if not is_valid_name(name):
        raise ValueError(
            f"{kind} name {name!r} is invalid: use 1-128 letters, digits, '_', '-' or '.', "
            "starting with a letter or digit"
        )
    return name


def check_point_ids(ids: Sequence[str]) -> list[str]:
    out = []
    for pid in ids:
        try:
            out.append(str(uuid.UUID(str(pid))))
        except ValueError as e:
            raise ValueError(
                f"point id {pid!r} is not a UUID string; derive ids with engine.store.point_id(product_id)"
            ) from e
    return out


def check_vector(vector: Any, dim: int | None = None, what: str = "query vector") -> np.ndarray:
    """A finite 1-D float32 array (of length `dim` when given)."""
    arr = np.asarray(vector, dtype=np.float32)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{what} must be a non-empty 1-D array, got shape {arr.shape}")
    if dim is not None and arr.shape[0] != dim:
        raise DimensionMismatch(
            f"{what} has dimension {arr.shape[0]} but the collection stores {dim}-d vectors; "
            "embed with the model the collection was built with, or rebuild it with `coinage index ...`"
        )
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{what} contains NaN or inf")
    return arr


def check_search_args(limit: int, offset: int) -> None:
    if not isinstance(limit, int) or limit < 1:
        raise ValueError(f"search limit must be an int >= 1, got {limit!r}")
    if not isinstance(offset, int) or offset < 0:
        raise ValueError(f"search offset must be an int >= 0, got {offset!r}")


def check_collection_args(dim: int, distance: str, payload_indexes: Mapping[str, str] | None) -> None:
    if not isinstance(dim, int) or dim < 1:
        raise ValueError(f"collection dim must be an int >= 1, got {dim!r}")
    if distance not in DISTANCES:
        raise ValueError(f"distance {distance!r} is not supported; use one of {DISTANCES}")
    for key, schema in (payload_indexes or {}).items():
        if schema not in PAYLOAD_SCHEMAS:
            raise ValueError(
                f"payload index {key!r}: schema {schema!r} is not supported; use one of {PAYLOAD_SCHEMAS}"
            )


def is_dimension_error(exc: BaseException) -> bool:
    return "dimension" in str(exc).lower()


def finite_or_none(x: float | None) -> float | None:
    if x is None:
        return None
    if not math.isfinite(float(x)):
        raise ValueError(f"range bound {x!r} must be finite or None")
    return float(x)


class RWLock:
    """Many readers or one writer, writers first: searches read; drop and close write."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0

    @contextmanager
    def read(self) -> Iterator[None]:
        with self._cond:
            while self._writer or self._writers_waiting:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if not self._readers:
                    self._cond.notify_all()

    @contextmanager
    def write(self) -> Iterator[None]:
        with self._cond:
            self._writers_waiting += 1
            while self._writer or self._readers:
                self._cond.wait()
            self._writers_waiting -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()


class VectorStore(abc.ABC):
    """Collections of (id, vector, payload) points with filtered nearest-neighbour search.

    Every method taking `collection` also accepts an alias. Thread-safe.
    """

    @abc.abstractmethod
    def create_collection(self, name: str, dim: int, distance: str = "cosine",
                          payload_indexes: dict[str, str] | None = None, sparse: bool = True) -> None:
        """New empty collection; payload_indexes maps field -> "keyword"|"integer"|"float"; `sparse`: points
        may also carry a BM25 vector (IDF modifier) for lexical and hybrid queries.
        Raises CollectionExists if the name is taken (by a collection or an alias)."""

    @abc.abstractmethod
    def has_sparse(self, collection_or_alias: str) -> bool:
        """Whether the collection was created with the sparse (BM25) vector."""

    @abc.abstractmethod
    def set_metadata(self, collection: str, values: dict[str, Any]) -> None:
        """Merge JSON-ready `values` into the collection's metadata (e.g. the spelling vocabulary)."""

    @abc.abstractmethod
    def get_metadata(self, collection_or_alias: str) -> dict[str, Any]:
        """The collection's metadata ({} when none was set)."""

    @abc.abstractmethod
    def query(self, collection_or_alias: str, query: StoreQuery, limit: int = 10, offset: int = 0) -> list[Hit]:
        """Points for a dense, sparse or hybrid query (fused in the engine), best first, or in
        query.order_by's order. Raises NoSparseVectors for a sparse query on a collection without them."""

    def query_batch(self, collection_or_alias: str, queries: Sequence[StoreQuery], limit: int = 10) -> list[list[Hit]]:
        """`query` for each of `queries` (each its best `limit` points), in order, as one store call where the
        backend can bundle them (a search's two sides: one round trip, one planned batch); else one by one."""
        return [self.query(collection_or_alias, q, limit=limit) for q in queries]

    @abc.abstractmethod
    def query_groups(self, collection_or_alias: str, query: StoreQuery, group_by: str, limit: int = 10,
                     offset: int = 0, group_size: int = 4) -> list[Group]:
        """Groups of points sharing payload `group_by` (one per product), ranked by their best point (or
        by query.order_by); each with its best `group_size` points. `offset` skips that many groups."""

    def facets(self, collection_or_alias: str, query: StoreQuery, group_by: str, fields: Sequence[str] = (),
               ranges: Mapping[str, Sequence[tuple[float | None, float | None]]] | None = None) -> FacetCounts:
        """Counts of each field's values (and range buckets) over the distinct `group_by` values (products)
        among the query's candidates: its prefetch window, query.window() points."""
        from engine.store.hybrid import count_facets

        window = query.window()
        hits = self.query(collection_or_alias, query, limit=window)
        return count_facets(hits, group_by, fields, ranges or {}, complete=len(hits) < window)

    @abc.abstractmethod
    def drop_collection(self, name: str) -> bool:
        """Delete a collection and the aliases pointing at it; False if it did not exist."""

    @abc.abstractmethod
    def collection_exists(self, name: str) -> bool:
        """True for an existing collection (not an alias)."""

    @abc.abstractmethod
    def list_collections(self) -> list[str]:
        """Sorted collection names."""

    @abc.abstractmethod
    def upsert(self, collection: str, points: Sequence[Point]) -> None:
        """Insert or replace points (by id)."""

    @abc.abstractmethod
    def optimize(self, collection: str) -> None:
        """Finish a bulk load: build the ANN index now (embedded) or wait until the server
        has indexed the collection. Call it before switching an alias to a new collection."""

    @abc.abstractmethod
    def search(self, collection_or_alias: str, vector: np.ndarray, limit: int = 10, offset: int = 0,
               filter: Filter | None = None) -> list[Hit]:
        """Nearest points, best first; `offset` skips that many hits (pagination)."""

    @abc.abstractmethod
    def retrieve(self, collection: str, ids: Sequence[str], with_vectors: bool = False) -> list[Point]:
        """Points by id, in the order asked; ids that are not stored are left out."""

    @abc.abstractmethod
    def scroll_ids(self, collection: str) -> list[str]:
        """Every point id in the collection, sorted."""

    @abc.abstractmethod
    def delete(self, collection: str, ids: Sequence[str]) -> None:
        """Delete points by id; unknown ids are ignored."""

    @abc.abstractmethod
    def count(self, collection: str, filter: Filter | None = None) -> int:
        """Exact number of points (matching `filter`)."""

    @abc.abstractmethod
    def set_alias(self, alias: str, collection: str) -> None:
        """Point `alias` at `collection` atomically (creates it or re-points it)."""

    @abc.abstractmethod
    def get_alias(self, alias: str) -> str | None:
        """The collection `alias` points at, or None."""

    @abc.abstractmethod
    def list_aliases(self) -> dict[str, str]:
        """alias -> collection."""

    @abc.abstractmethod
    def delete_alias(self, alias: str) -> bool:
        """Remove an alias; False if it did not exist."""

    @abc.abstractmethod
    def close(self) -> None:
        """Flush and release files / connections. The store is unusable afterwards."""

    def __enter__(self) -> VectorStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
