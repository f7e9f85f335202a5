"""Vector store: congruence of the embedded and server backends, aliases, persistence, errors.

The server backend runs as qdrant-client's in-memory mode (url=":memory:"), created with the
production cluster settings (3 shards, 2 replicas, write consistency 2: the in-memory mode accepts
and ignores them), and its local mode (url="local:<dir>") where data must outlive the store; the
per-backend fixtures are in tests/conftest.py. What reaches a real server is checked on the wire against a stand-in for
Qdrant's REST API on 127.0.0.1 (tests/qdrant_stub.py). Nothing here leaves the machine.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
import uuid
from collections.abc import Iterator
from unittest import mock

import numpy as np
import pytest
from qdrant_client import QdrantClient

from engine.store import (
    CollectionExists,
    CollectionNotFound,
    DimensionMismatch,
    Filter,
    Point,
    StoreConfig,
    StoreError,
    StoreUnavailable,
    VectorStore,
    open_store,
    point_id,
)
from engine.store.server import ServerStore

DIM = 16
# what deploy/compose.yaml sets (COINAGE_QDRANT_SHARDS / _REPLICAS / _WRITE_CONSISTENCY)
CLUSTER = {"shard_number": 3, "replication_factor": 2, "write_consistency_factor": 2}
N = 300
CATEGORIES = ["shoes", "bags", "hats", "coats", "belts"]
INDEXES = {"category": "keyword", "price": "float", "stock": "integer", "tags": "keyword"}


def make_points(n: int = N, dim: int = DIM, seed: int = 0, prefix: str = "sku") -> list[Point]:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((8, dim))
    points = []
    for i in range(n):
        vec = centres[i % 8] + 0.5 * rng.standard_normal(dim)
        points.append(Point(
            id=point_id(f"{prefix}-{i}"),
            vector=vec.astype(np.float32),
            payload={
                "product_id": f"{prefix}-{i}",
                "category": CATEGORIES[i % len(CATEGORIES)],
                "price": round(float(rng.uniform(1, 200)), 2),
                "stock": int(rng.integers(0, 10)),
                "tags": [t for t in ("sale", "new", "eco") if rng.random() < 0.4],
            },
        ))
    return points


@pytest.fixture
def store(store_config, tmp_path) -> Iterator[VectorStore]:  # once per backend (tests/conftest.py)
    s = open_store(store_config(tmp_path / "store", **CLUSTER))  # the embedded backend ignores CLUSTER
    yield s
    s.close()


def load_both(make_store_config, path) -> tuple[VectorStore, VectorStore]:
    """Both backends holding the same collection."""
    stores = tuple(open_store(make_store_config(kind, path / "store", **CLUSTER)) for kind in ("embedded", "server"))
    points = make_points()
    for s in stores:
        s.create_collection("products", DIM, payload_indexes=INDEXES)
        s.upsert("products", points)
        s.optimize("products")
    return stores


@pytest.fixture(scope="module")
def loaded(make_store_config, tmp_path_factory) -> Iterator[tuple[VectorStore, VectorStore]]:
    """Shared by the read-only congruence tests (built once)."""
    stores = load_both(make_store_config, tmp_path_factory.mktemp("loaded"))
    yield stores
    for s in stores:
        s.close()


@pytest.fixture
def both(make_store_config, tmp_path) -> Iterator[tuple[VectorStore, VectorStore]]:
    """A fresh pair, for tests that change the data."""
    stores = load_both(make_store_config, tmp_path)
    yield stores
    for s in stores:
        s.close()


FILTERS = [
    None,
    Filter(must={"category": "shoes"}),
    Filter(must={"category": ["bags", "hats"]}),
    Filter(must={"tags": "sale"}),
    Filter(must={"tags": ["eco", "new"], "stock": 3}),
    Filter(must={"stock": [0, 1, 2]}),
    Filter(ranges={"price": (20.0, 80.0)}),
    Filter(ranges={"price": (None, 50.0), "stock": (5, None)}),
    Filter(must={"category": ["shoes", "coats"]}, ranges={"price": (10.0, 150.0)}),
    Filter(must={"category": "no-such-category"}),
    Filter(must_not={"category": "shoes"}),
    Filter(must={"stock": [0, 1, 2, 3]}, must_not={"category": ["bags", "hats"]}, ranges={"price": (10.0, None)}),
]


def queries(k: int = 6, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((k, DIM)).astype(np.float32)


def assert_same_hits(a, b) -> None:
    assert [h.id for h in a] == [h.id for h in b]
    np.testing.assert_allclose([h.score for h in a], [h.score for h in b], atol=1e-4)
    assert [h.payload for h in a] == [h.payload for h in b]


# --- congruence -------------------------------------------------------------------------


@pytest.mark.parametrize("flt", FILTERS, ids=lambda f: "none" if f is None else repr((f.must, f.ranges, f.must_not)))
def test_search_congruent_across_backends(loaded, flt):
    embedded, server = loaded
    for q in queries():
        for limit, offset in ((10, 0), (5, 5), (7, 20), (1, 0)):
            a = embedded.search("products", q, limit=limit, offset=offset, filter=flt)
            b = server.search("products", q, limit=limit, offset=offset, filter=flt)
            assert_same_hits(a, b)
        assert embedded.count("products", flt) == server.count("products", flt)


def test_filters_select_what_they_say(loaded):
    points = {p.id: p.payload for p in make_points()}
    for store in loaded:
        hits = store.search("products", queries(1)[0], limit=N,
                            filter=Filter(must={"category": ["shoes", "hats"]}, ranges={"price": (20.0, 80.0)}))
        expected = {pid for pid, p in points.items() if p["category"] in ("shoes", "hats") and 20 <= p["price"] <= 80}
        assert {h.id for h in hits} == expected
        kept = store.search("products", queries(1)[0], limit=N,
                            filter=Filter(must_not={"category": ["shoes", "hats"]}, ranges={"price": (20.0, 80.0)}))
        assert {h.id for h in kept} == {pid for pid, p in points.items()
                                        if p["category"] not in ("shoes", "hats") and 20 <= p["price"] <= 80}
        tagged = store.count("products", Filter(must={"tags": "eco"}))
        assert tagged == sum("eco" in p["tags"] for p in points.values())


def test_pagination_matches_one_long_search(loaded):
    q = queries(1)[0]
    for store in loaded:
        full = store.search("products", q, limit=30)
        pages = [h for off in range(0, 30, 10) for h in store.search("products", q, limit=10, offset=off)]
        assert [h.id for h in pages] == [h.id for h in full]
        assert [h.score for h in full] == sorted((h.score for h in full), reverse=True)


def test_delete_count_scroll_retrieve_congruent(both):
    points = make_points()
    gone = [p.id for p in points[:40]]
    for store in both:
        store.delete("products", gone + [point_id("never-stored")])
    embedded, server = both
    assert embedded.count("products") == server.count("products") == N - 40
    assert embedded.scroll_ids("products") == server.scroll_ids("products") == sorted(p.id for p in points[40:])
    ask = [points[50].id, gone[0], points[41].id]
    a = embedded.retrieve("products", ask, with_vectors=True)
    b = server.retrieve("products", ask, with_vectors=True)
    assert [p.id for p in a] == [p.id for p in b] == [points[50].id, points[41].id]
    assert [p.payload for p in a] == [p.payload for p in b] == [points[50].payload, points[41].payload]
    for pa, pb in zip(a, b, strict=True):
        np.testing.assert_allclose(pa.vector, pb.vector, atol=1e-5)  # both stored normalised (cosine)
        assert pa.vector.dtype == np.float32
    assert all(p.vector is None for p in embedded.retrieve("products", ask[:1]))
    for q in queries(3):
        assert_same_hits(embedded.search("products", q, limit=15), server.search("products", q, limit=15))


def test_upsert_replaces_by_id(store):
    store.create_collection("c", DIM)
    points = make_points(20)
    store.upsert("c", points)
    store.upsert("c", [Point(points[0].id, points[0].vector, {"category": "changed"})])
    assert store.count("c") == 20
    assert store.retrieve("c", [points[0].id])[0].payload == {"category": "changed"}


# --- collections and aliases ----------------------------------------------------------------


def test_collections_lifecycle(store):
    assert store.list_collections() == []
    store.create_collection("a", DIM)
    store.create_collection("b", DIM, distance="dot")
    assert store.list_collections() == ["a", "b"]
    assert store.collection_exists("a") and not store.collection_exists("zzz")
    with pytest.raises(CollectionExists, match="drop it first"):
        store.create_collection("a", DIM)
    store.set_alias("live", "a")
    with pytest.raises(CollectionExists):
        store.create_collection("live", DIM)
    assert store.drop_collection("a") is True
    assert store.drop_collection("a") is False
    assert store.get_alias("live") is None  # dropped with its collection
    assert store.list_collections() == ["b"]


def test_alias_swap(store):
    a_points, b_points = make_points(50, seed=1, prefix="a"), make_points(50, seed=2, prefix="b")
    for name, pts in (("products-a", a_points), ("products-b", b_points)):
        store.create_collection(name, DIM, payload_indexes={"category": "keyword"})
        store.upsert(name, pts)
    a_ids, b_ids = {p.id for p in a_points}, {p.id for p in b_points}
    q = queries(1)[0]
    store.set_alias("products", "products-a")
    assert store.get_alias("products") == "products-a"
    assert {h.id for h in store.search("products", q, limit=50)} == a_ids
    store.set_alias("products", "products-b")  # re-point
    assert store.get_alias("products") == "products-b"
    assert {h.id for h in store.search("products", q, limit=50)} == b_ids
    assert store.count("products") == 50
    assert store.list_aliases() == {"products": "products-b"}
    assert store.delete_alias("products") is True
    assert store.delete_alias("products") is False
    with pytest.raises(CollectionNotFound, match="products"):
        store.search("products", q)
    with pytest.raises(CollectionNotFound, match="nope"):
        store.set_alias("products", "nope")
    with pytest.raises(CollectionExists):
        store.set_alias("products-a", "products-b")


def test_search_during_concurrent_alias_switch_never_errors(store):
    a_points, b_points = make_points(60, seed=1, prefix="a"), make_points(60, seed=2, prefix="b")
    for name, pts in (("v1", a_points), ("v2", b_points)):
        store.create_collection(name, DIM)
        store.upsert(name, pts)
    c_points = make_points(60, seed=3, prefix="c")
    valid = ({p.id for p in a_points}, {p.id for p in b_points}, {p.id for p in c_points})
    store.set_alias("live", "v1")
    errors: list[BaseException] = []
    mixed: list[set[str]] = []
    stop = threading.Event()

    def searcher(seed: int) -> None:
        rng = np.random.default_rng(seed)
        while not stop.is_set():
            try:
                ids = {h.id for h in store.search("live", rng.standard_normal(DIM), limit=5)}
            except BaseException as e:  # noqa: BLE001 (collected and asserted below)
                errors.append(e)
                return
            if not any(ids <= v for v in valid):
                mixed.append(ids)

    threads = [threading.Thread(target=searcher, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    try:
        for i in range(40):
            store.set_alias("live", "v2" if i % 2 == 0 else "v1")
            time.sleep(0.002)
        # the indexer's pattern: build a new collection, switch, drop the old one
        store.create_collection("v3", DIM)
        store.upsert("v3", make_points(60, seed=3, prefix="c"))
        store.set_alias("live", "v3")
        store.drop_collection("v1")
        time.sleep(0.05)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=10)
    assert errors == []
    assert mixed == []
    assert store.get_alias("live") == "v3"


def test_closed_store_says_so(store_config, tmp_path):
    s = open_store(store_config(tmp_path / "store"))
    s.create_collection("c", DIM)
    s.close()
    with pytest.raises(StoreError, match="closed; open a new one"):
        s.count("c")
    s.close()  # a second close does nothing


# --- embedded specifics ---------------------------------------------------------------------


def test_embedded_persists_across_reopen(tmp_path):
    config = StoreConfig(backend="embedded", path=str(tmp_path / "store"))
    points = make_points()
    q = queries(1)[0]
    with open_store(config) as s:
        s.create_collection("products-1", DIM, payload_indexes=INDEXES)
        s.upsert("products-1", points)
        s.optimize("products-1")
        s.delete("products-1", [points[0].id])
        s.set_alias("products", "products-1")
        before = s.search("products", q, limit=10, filter=Filter(must={"category": "bags"}))
    with open_store(config) as s:
        assert s.list_collections() == ["products-1"]
        assert s.get_alias("products") == "products-1"
        assert s.count("products") == N - 1
        assert_same_hits(s.search("products", q, limit=10, filter=Filter(must={"category": "bags"})), before)
        assert json.loads((tmp_path / "store" / "aliases.json").read_text()) == {"products": "products-1"}


def test_embedded_directory_is_single_process(tmp_path):
    config = StoreConfig(backend="embedded", path=str(tmp_path / "store"))
    with open_store(config), pytest.raises(StoreUnavailable, match="another process"):
        open_store(config)
    open_store(config).close()  # released on close


def test_embedded_ignores_unfinished_create(tmp_path):
    (tmp_path / "store" / "collections" / "half").mkdir(parents=True)  # a crash before meta.json
    with open_store(StoreConfig(path=str(tmp_path / "store"))) as s:
        assert s.list_collections() == []
        s.create_collection("half", DIM)
        assert s.list_collections() == ["half"]


# --- server specifics -----------------------------------------------------------------------


def test_server_local_mode_persists_and_is_single_process(tmp_path):
    """url='local:<dir>': the stand-in for data that outlives a process (the indexer's kill-and-resume tests)."""
    config = StoreConfig(backend="server", url=f"local:{tmp_path / 'qdrant'}")
    points = make_points()
    q = queries(1)[0]
    with open_store(config) as s:
        s.create_collection("products-1", DIM, payload_indexes=INDEXES)
        s.create_collection("products-2", DIM)
        s.upsert("products-1", points)
        s.delete("products-1", [points[0].id])
        s.set_alias("products", "products-2")
        s.set_alias("products", "products-1")  # re-pointed: delete + create in one request
        before = s.search("products", q, limit=10, filter=Filter(must={"category": "bags"}))
        with pytest.raises(StoreUnavailable, match="open elsewhere"):
            open_store(config)
    with open_store(config) as s:
        assert s.list_collections() == ["products-1", "products-2"]
        assert s.list_aliases() == {"products": "products-1"}
        assert s.count("products") == N - 1
        assert_same_hits(s.search("products", q, limit=10, filter=Filter(must={"category": "bags"})), before)
        assert s.drop_collection("products-1") and s.list_aliases() == {}


@pytest.mark.parametrize("url, where", [(":memory:", ":memory:"), ("local:/tmp/q", "/tmp/q"),
                                        ("http://qdrant:6333", None), ("https://q.example", None)])
def test_server_url_forms(url, where):
    assert StoreConfig(backend="server", url=url).in_process_location() == where


@pytest.mark.parametrize("url, message", [("local:", "names no directory; use local:<dir>"),
                                          ("file:///tmp/q", "scheme 'file' is not supported; use http"),
                                          ("grpc://qdrant:6334", "scheme 'grpc' is not supported")])
def test_bad_server_urls_name_the_forms_that_work(url, message):
    with pytest.raises(ValueError, match=message):
        StoreConfig(backend="server", url=url)


def test_server_passes_cluster_settings_and_payload_indexes():
    client = QdrantClient(location=":memory:")  # in-memory mode ignores cluster settings: spy on the call
    client.create_collection = mock.Mock(wraps=client.create_collection)
    client.create_payload_index = mock.Mock()  # in-memory mode has no payload indexes (it warns)
    config = StoreConfig(backend="server", url="http://qdrant.invalid:6333", shard_number=3,
                         replication_factor=2, write_consistency_factor=2)
    store = ServerStore(config, client=client)  # injected client: nothing is contacted
    store.create_collection("products", 512, payload_indexes={"category": "keyword", "price": "float"})
    kwargs = client.create_collection.call_args.kwargs
    assert (kwargs["shard_number"], kwargs["replication_factor"], kwargs["write_consistency_factor"]) == (3, 2, 2)
    assert kwargs["vectors_config"].size == 512
    calls = client.create_payload_index.call_args_list
    fields = {c.kwargs["field_name"]: str(c.kwargs["field_schema"].value) for c in calls}
    assert fields == {"category": "keyword", "price": "float"}
    assert store.collection_exists("products")
    store.close()


def test_cluster_settings_from_the_environment_reach_the_server_on_the_wire():
    from qdrant_stub import QdrantStub

    env = {"COINAGE_STORE_BACKEND": "server", "COINAGE_QDRANT_SHARDS": "3", "COINAGE_QDRANT_REPLICAS": "2",
           "COINAGE_QDRANT_WRITE_CONSISTENCY": "2", "COINAGE_QDRANT_TIMEOUT_S": "5"}
    with QdrantStub(nodes=1, api_key=None) as stub:
        config = StoreConfig.from_env({**env, "COINAGE_QDRANT_URL": stub.urls[0]})
        assert (config.shard_number, config.replication_factor, config.write_consistency_factor,
                config.timeout_s) == (3, 2, 2, 5.0)
        with open_store(config) as store:
            store.create_collection("products-1", 512, payload_indexes={"category": "keyword", "price": "float"})
        body = stub.cluster.created["products-1"]  # the JSON of PUT /collections/products-1
        assert {k: body[k] for k in CLUSTER} == CLUSTER
        assert body["vectors"] == {"size": 512, "distance": "Cosine"}
        assert stub.cluster.payload_indexes["products-1"] == {"category": "keyword", "price": "float"}
        (put,) = stub.requests("PUT", "/collections/products-1")
        assert put.query.get("timeout") == "5"


def test_cluster_settings_errors_name_the_variable_and_the_fix():
    with pytest.raises(ValueError, match=r"COINAGE_QDRANT_SHARDS='three' is not a whole number.*SHARDS=2"):
        StoreConfig.from_env({"COINAGE_QDRANT_SHARDS": "three"})
    with pytest.raises(ValueError, match=r"write_consistency_factor=3 exceeds replication_factor=2.*"
                                         r"COINAGE_QDRANT_WRITE_CONSISTENCY"):
        StoreConfig.from_env({"COINAGE_QDRANT_REPLICAS": "2", "COINAGE_QDRANT_WRITE_CONSISTENCY": "3"})
    with pytest.raises(ValueError, match="replication_factor must be >= 1"):
        StoreConfig.from_env({"COINAGE_QDRANT_REPLICAS": "0"})
    assert StoreConfig.from_env({}).shard_number == 1  # unset: a single node's defaults


def test_server_unreachable_fails_fast_naming_the_url():
    t = time.monotonic()
    with pytest.raises(StoreUnavailable, match=r"http://127\.0\.0\.1:9"):
        open_store(StoreConfig(backend="server", url="http://127.0.0.1:9", timeout_s=1.0))
    assert time.monotonic() - t < 5.0


def test_config_from_env_reads_the_api_key():
    env = {"COINAGE_STORE_BACKEND": "server", "COINAGE_QDRANT_URL": "https://qdrant.example:6333",
           "COINAGE_QDRANT_API_KEY": "k-123"}
    config = StoreConfig.from_env(env, shard_number=3)
    assert (config.backend, config.url, config.api_key, config.shard_number) == (
        "server", "https://qdrant.example:6333", "k-123", 3)
    assert "k-123" not in repr(config)  # configs get logged
    assert StoreConfig.from_env({}).backend == "embedded"
    assert StoreConfig.from_env({}).api_key is None
    assert dataclasses.replace(StoreConfig.from_env(env), timeout_s=2.0).timeout_s == 2.0
    assert StoreConfig.from_env(env, backend="embedded", path="/tmp/x").backend == "embedded"  # flags win
    with pytest.raises(ValueError, match="needs url"):
        StoreConfig.from_env({"COINAGE_STORE_BACKEND": "server"})
    with pytest.raises(ValueError, match="backend"):
        StoreConfig(backend="sqlite")


# --- errors at the boundary -----------------------------------------------------------------


def test_missing_collection_error_names_it_and_the_fix(store):
    for name in ("../outside", "products\n"):  # never reaches the filesystem as a path
        with pytest.raises(CollectionNotFound):
            store.search(name, np.ones(DIM))
    for call in (lambda: store.search("products", np.ones(DIM)),
                 lambda: store.count("products"),
                 lambda: store.upsert("products", make_points(1)),
                 lambda: store.retrieve("products", [point_id("x")])):
        with pytest.raises(CollectionNotFound, match=r"'products'.*coinage index"):
            call()


def test_wrong_dimension_is_a_clear_error(store):
    store.create_collection("c", DIM)
    store.upsert("c", make_points(5))
    with pytest.raises(DimensionMismatch, match=r"dimension 8 .* 16-d"):
        store.search("c", np.ones(8, dtype=np.float32))
    with pytest.raises(DimensionMismatch, match=r"dimension 20 .* 16-d"):
        store.upsert("c", [Point(point_id("bad"), np.ones(20, dtype=np.float32), {})])
    assert store.count("c") == 5


def test_bad_inputs_are_rejected_with_the_fix(store):
    store.create_collection("c", DIM)
    with pytest.raises(ValueError, match="point_id"):
        store.upsert("c", [Point("sku-1", np.ones(DIM, dtype=np.float32), {})])
    with pytest.raises(ValueError, match="NaN"):
        store.search("c", np.full(DIM, np.nan))
    with pytest.raises(ValueError, match="limit"):
        store.search("c", np.ones(DIM), limit=0)
    with pytest.raises(ValueError, match="name"):
        store.create_collection("../escape", DIM)
    with pytest.raises(ValueError, match="distance"):
        store.create_collection("d", DIM, distance="hamming")
    with pytest.raises(ValueError, match="schema"):
        store.create_collection("d", DIM, payload_indexes={"x": "geo"})


def test_filter_validation():
    with pytest.raises(ValueError, match="ranges"):
        Filter(must={"price": 9.99})
    with pytest.raises(ValueError, match="0/1"):
        Filter(must={"in_stock": True})
    with pytest.raises(ValueError, match="empty"):
        Filter(must={"category": []})
    with pytest.raises(ValueError, match="no bounds"):
        Filter(ranges={"price": (None, None)})
    with pytest.raises(ValueError, match="finite number"):
        Filter(ranges={"price": ("cheap", None)})
    with pytest.raises(ValueError, match="mixes"):
        Filter(must={"category": ["a", 1]})


def test_point_id_is_stable_uuid5():
    assert point_id("sku-1") == point_id("sku-1") != point_id("sku-2")
    assert uuid.UUID(point_id("sku-1")).version == 5
    # pinned: a change of namespace would silently re-key every stored product
    assert point_id("sku-1") == "b916d201-53ca-5a73-a599-549196ea8345"
    with pytest.raises(ValueError):
        point_id("")


# --- quantization (StoreConfig.quantization): applied by both backends ----------------------------------------------

SCALAR_INT8 = {"scalar": {"type": "int8", "quantile": 0.99, "always_ram": True}}


def test_embedded_quantization_is_fixed_at_creation(tmp_path):
    rng = np.random.default_rng(0)
    points = [Point(str(uuid.UUID(int=i + 1)), rng.standard_normal(16).astype(np.float32), {}) for i in range(50)]
    with open_store(StoreConfig(path=str(tmp_path), quantization="int8", quantization_oversampling=3.0)) as s:
        s.create_collection("q", 16)
        s.upsert("q", points)
        before = [h.id for h in s.search("q", points[0].vector, limit=5)]
    edge = json.loads((tmp_path / "collections" / "q" / "shard" / "edge_config.json").read_text())
    assert edge["quantization_config"] == SCALAR_INT8
    assert json.loads((tmp_path / "collections" / "q" / "meta.json").read_text())["quantization"] == "int8"
    with open_store(StoreConfig(path=str(tmp_path), quantization="none")) as s:  # a later setting: new collections
        assert [h.id for h in s.search("q", points[0].vector, limit=5)] == before and before[0] == points[0].id
        s.create_collection("plain", 16)
    edge = json.loads((tmp_path / "collections" / "q" / "shard" / "edge_config.json").read_text())
    assert edge["quantization_config"] == SCALAR_INT8
    plain = json.loads((tmp_path / "collections" / "plain" / "shard" / "edge_config.json").read_text())
    assert plain.get("quantization_config") is None


def test_server_quantization_reaches_the_wire_and_searches_rescore():
    from qdrant_stub import QdrantStub

    with QdrantStub(nodes=1, api_key=None) as stub:
        config = StoreConfig.from_env({"COINAGE_STORE_BACKEND": "server", "COINAGE_QDRANT_URL": stub.urls[0],
                                       "COINAGE_STORE_OVERSAMPLING": "3", "COINAGE_STORE_EF": "512"})
        assert (config.quantization, config.quantization_oversampling, config.hnsw_ef) == ("int8", 3.0, 512)
        with open_store(config) as store:
            store.create_collection("products-1", 8)
        assert stub.cluster.created["products-1"]["quantization_config"] == SCALAR_INT8
    with QdrantStub(nodes=1, api_key=None) as stub:
        with open_store(StoreConfig.from_env({"COINAGE_STORE_BACKEND": "server", "COINAGE_QDRANT_URL": stub.urls[0],
                                              "COINAGE_STORE_QUANTIZATION": "none"})) as store:
            store.create_collection("products-1", 8)
        assert stub.cluster.created["products-1"].get("quantization_config") is None
    client = QdrantClient(location=":memory:")
    client.query_points = mock.Mock(return_value=mock.Mock(points=[]))
    store = ServerStore(StoreConfig(backend="server", url="http://qdrant.invalid:6333", quantization_oversampling=3.0),
                        client=client)
    store.search("products", np.ones(8, np.float32))
    params = client.query_points.call_args.kwargs["search_params"]
    assert (params.quantization.rescore, params.quantization.oversampling) == (True, 3.0)
    assert params.hnsw_ef == StoreConfig().hnsw_ef == 256  # the candidate list measured at 1M, as embedded


def test_quantization_settings_errors_name_the_fix():
    with pytest.raises(ValueError, match="COINAGE_STORE_QUANTIZATION=int8 or none"):
        StoreConfig.from_env({"COINAGE_STORE_QUANTIZATION": "pq"})
    with pytest.raises(ValueError, match="COINAGE_STORE_EF=256"):
        StoreConfig.from_env({"COINAGE_STORE_EF": "0"})
    with pytest.raises(ValueError, match="quantization_oversampling must be >= 1"):
        StoreConfig(quantization_oversampling=0.5)
