"""Search holds on every page and on both store backends, at a size where windows fill and BM25 ties.

One collection of 5,000 points (625 products x 8 photos, random clustered vectors, titles from a small
vocabulary so that many photos share their text exactly: BM25 ties) is built once per module in the embedded
backend and in the server backend's test stand-in (qdrant-client's local mode, in memory). Searches go through
the Retriever (the search service's store stage) with a candidate window far smaller than the collection, so
every window is full.

What the stand-in skips, honestly: the server backend's production-only branches are not exercised here --
payload indexes (local mode has none; filters scan), search params (HNSW ef and quantization rescoring: local
mode searches exactly and the store sends none), and quantization (local mode keeps fp32 vectors; the embedded
collection here is built without int8 too, so both score exactly). A real Qdrant server can order candidates of
equal score differently inside the engine; the Python stage breaks every tie itself (score, then id), and the
window is fixed, so only the membership of ties at the very edge of a prefetch window can differ there.
"""
from __future__ import annotations

import dataclasses
import os
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.lexical import embed_document, embed_query
from engine.query import QueryConfig, SearchRequest
from engine.query.retrieval import Retriever
from engine.store import Point, open_store, point_id

DIM = 32
PRODUCTS, PHOTOS = 625, 8
COLOURS = ["red", "blue", "green", "black", "white"]
CATEGORIES = ["dress", "mug", "lamp", "sneaker", "t-shirt"]
PATTERNS = ["striped", "plain"]
INDEXES = {"product_id": "keyword", "category": "keyword", "price": "float", "attributes.colour": "keyword"}
# a window of 200 points per side out of 5,000: every window fills
CONFIG = QueryConfig(text_runtime="torch", gair=False, candidate_window=200, default_limit=10)
QUERIES = ["red dress", "striped mug", "blue lamp", "black sneaker", "green t-shirt"]
# the facet values each query names (what understanding reads out of its text): the count's named-facets rule
NAMED = {text: {"category": [text.split()[-1]],
                **({"attributes.colour": [text.split()[0]]} if text.split()[0] in COLOURS else {})} for text in QUERIES}


def catalog() -> list[Point]:
    rng = np.random.default_rng(25)
    centres = rng.standard_normal((PRODUCTS, DIM))
    points = []
    for p in range(PRODUCTS):
        colour, category = COLOURS[p % 5], CATEGORIES[(p // 5) % 5]
        pattern = PATTERNS[(p // 25) % 2]
        for k in range(PHOTOS):
            payload = {"id": f"p{p}-{k}", "product_id": f"p{p}", "category": category,
                       "title": f"{pattern.title()} {category.title()} — {colour.title()}",  # shared: BM25 ties
                       "price": float(5 * (p % 40)),  # 40 prices: ties for the price sort too
                       "attributes": {"colour": colour}}
            vector = (centres[p] + 0.5 * rng.standard_normal(DIM)).astype(np.float32)
            points.append(Point(point_id(payload["id"]), vector, payload, embed_document(payload)))
    return points


@pytest.fixture(scope="module")
def stores(make_store_config, tmp_path_factory):
    path = tmp_path_factory.mktemp("congruence")
    # the embedded collection without int8, as local mode: both score exactly (see the module's docstring)
    opened = {kind: open_store(make_store_config(kind, path / kind, quantization="none"))
              for kind in ("embedded", "server")}
    points = catalog()
    for store in opened.values():
        store.create_collection("shop-1", DIM, payload_indexes=INDEXES)
        store.upsert("shop-1", points)
        store.optimize("shop-1")
        store.set_alias("products", "shop-1")
    yield opened
    for store in opened.values():
        store.close()


def vector_of(text: str) -> np.ndarray:
    # zlib.crc32, not hash(): str hashes change per process (PYTHONHASHSEED), and so would every query vector;
    # CONGRUENCE_SALT=<any> draws another set of query vectors (how the tests were checked on other draws)
    salt = os.environ.get('CONGRUENCE_SALT', '')
    return np.random.default_rng(zlib.crc32((salt + text).encode())).standard_normal(DIM).astype(np.float32)


def search(store, text: str, config: QueryConfig = CONFIG, retrieval: str = "hybrid", named: bool = False,
           defines: bool = True, **fields):
    request = SearchRequest(text, retrieval=retrieval, gair=False, **fields)
    retriever = Retriever(store, config, "test").naming(NAMED[text] if named else {}, defines)
    return retriever.page(request, vector_of(text), text)


def ids(page) -> list[str]:
    return [p.product_id for p in page.products] if page.products else [r.id for r in page.results]


def fusion(method: str) -> QueryConfig:
    return dataclasses.replace(CONFIG, fusion=method)


def test_the_collection_fills_every_window(stores):
    retriever = Retriever(stores["embedded"], CONFIG, "test")
    for store in stores.values():
        assert store.count("shop-1") == PRODUCTS * PHOTOS >= 5_000
        for text in QUERIES:
            query = retriever._query(SearchRequest(text), vector_of(text), embed_query(text))
            dense = dataclasses.replace(query, sparse=None, fusion=query.fusion)
            lexical = dataclasses.replace(query, dense=None)
            for side in (dense, lexical):  # each side alone fills its window: more points match than it holds
                assert len(store.query("products", side, limit=CONFIG.candidate_window)) == CONFIG.candidate_window
            tied = [round(h.score, 6) for h in store.query("products", lexical, limit=CONFIG.candidate_window)]
            assert len(set(tied)) < len(tied) / 10  # BM25 ties: photos share their text


@pytest.mark.parametrize("method", ["rrf", "dbsf"])
@pytest.mark.parametrize("sort", ["relevance", "price_asc"])
@pytest.mark.parametrize("named", [False, True])
def test_both_backends_give_the_same_pages_counts_facets_and_floor(stores, method, sort, named):
    config = fusion(method)
    for text in QUERIES:
        pages = {kind: [search(store, text, config, sort=sort, offset=o, named=named) for o in (0, 10, 20)]
                 for kind, store in stores.items()}
        embedded, server = pages["embedded"], pages["server"]
        assert [ids(p) for p in embedded] == [ids(p) for p in server], text
        # relevance: three full pages (matches, then related items); by price: the matches alone, in price order
        assert all(len(ids(p)) == 10 for p in embedded) if sort == "relevance" else ids(embedded[0]), text
        assert [[p.related for p in page.products] for page in embedded] == \
            [[p.related for p in page.products] for page in server]  # the floor cuts at the same product
        first_e, first_s = embedded[0], server[0]
        assert first_e.facets == first_s.facets and first_e.total == first_s.total
        assert first_e.next_offset == first_s.next_offset
        scores = [p.score for page in embedded for p in page.products]  # engines score in float32: 1e-4 apart
        assert scores == pytest.approx([p.score for page in server for p in page.products], rel=1e-4)


@pytest.mark.parametrize("retrieval", ["dense", "lexical"])
def test_both_backends_agree_on_one_side_alone(stores, retrieval):
    for text in QUERIES[:3]:
        pages = [[ids(search(store, text, retrieval=retrieval, offset=o)) for o in (0, 10, 20)]
                 for store in stores.values()]
        assert pages[0] == pages[1], text


@pytest.mark.parametrize("method", ["rrf", "dbsf"])
def test_the_same_query_gives_the_same_order_every_time(stores, method):
    config = fusion(method)
    for store in stores.values():
        runs = [ids(search(store, "striped mug", config, limit=30)) for _ in range(5)]
        assert all(run == runs[0] for run in runs) and len(runs[0]) == 30


def test_a_page_past_the_end_is_empty_and_offers_no_next_page(stores):
    for store in stores.values():
        whole = search(store, "blue lamp", limit=100)
        total = whole.total
        assert 0 < total <= 100 or whole.next_offset is not None  # 100 exactly: one full page, no next
        size = min(total, 100)  # the largest page (QueryConfig.max_limit) ending exactly at the last product
        last = search(store, "blue lamp", offset=total - size, limit=size)
        assert last.next_offset is None and len(last.products) == size  # an exactly full last page: no next
        past = search(store, "blue lamp", offset=total, limit=10)
        assert past.products == [] and past.results == [] and past.next_offset is None and not past.notes


@pytest.mark.parametrize("method", ["rrf", "dbsf"])
def test_named_facets_count_every_window_product_that_has_them_and_only_the_named_category(stores, method):
    config = fusion(method)
    for text in QUERIES:
        plain, named = search(stores["embedded"], text, config, limit=100), search(stores["embedded"], text, config,
                                                                                 limit=100, named=True)
        payload = {p.product_id: p.photos[0].payload for p in named.products}
        counted = [p.product_id for p in named.products if not p.related]
        wanted = NAMED[text]
        having = [pid for pid, v in payload.items()
                  if all(_value(v, f) in values for f, values in wanted.items())]
        assert set(having) <= set(counted) and len(having) >= 10, text  # listed products with every named value
        assert {payload[p]["category"] for p in counted} == set(wanted["category"]), text
        assert named.facets.products == len(counted), text
        assert set(counted) != {p.product_id for p in plain.products if not p.related}, text  # not the floor alone


@pytest.mark.parametrize("method", ["rrf", "dbsf"])
@pytest.mark.parametrize("sort", ["relevance", "price_asc"])
def test_named_facets_with_narrower_words_count_the_floor_of_the_named_category_on_both_backends(stores, method,
                                                                                                sort):
    """Named values that do not define the query (a product's name: other catalog words narrow it): the matches
    are the floor's products of the named category, the same on both backends, never every product having them."""
    config = fusion(method)
    for text in QUERIES:
        pages = {kind: search(store, text, config, sort=sort, limit=100, named=True, defines=False)
                 for kind, store in stores.items()}
        assert ids(pages["embedded"]) == ids(pages["server"]), text
        assert pages["embedded"].total == pages["server"].total, text
        plain = search(stores["embedded"], text, config, sort=sort, limit=100)
        union = search(stores["embedded"], text, config, sort=sort, limit=100, named=True)
        counted = {p.product_id: p.photos[0].payload for p in pages["embedded"].products if not p.related}
        floor = {p.product_id for p in plain.products if not p.related}
        of_category = {pid for pid in floor if _value(plain_payload(plain, pid), "category") in NAMED[text]["category"]}
        assert set(counted) == of_category or (not of_category and len(counted) == 1), text
        united = {p.product_id for p in union.products if not p.related}
        # not the union (unless this build's floor happens to keep every product with the named values: HNSW
        # builds differ, and then both rules count the same products)
        assert set(counted) != united or united == of_category, text


def plain_payload(page, pid: str):
    return next(p.photos[0].payload for p in page.products if p.product_id == pid)


def _value(payload, path: str):
    for part in path.split("."):
        payload = payload.get(part, {})
    return payload


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.sampled_from(QUERIES), limit=st.integers(4, 17), method=st.sampled_from(["rrf", "dbsf"]),
       sort=st.sampled_from(["relevance", "price_desc"]), mode=st.sampled_from(["products", "photos"]),
       named=st.booleans())
def test_pages_concatenate_to_the_long_page(stores, text, limit, method, sort, mode, named):
    store = stores["embedded"]
    config = fusion(method)
    long = search(store, text, config, sort=sort, mode=mode, limit=60, named=named)
    pages, offset = [], 0
    while offset is not None and offset < 60:
        page = search(store, text, config, sort=sort, mode=mode, limit=limit, offset=offset, named=named)
        pages.extend(ids(page))
        offset = page.next_offset
    assert pages[:len(ids(long))] == ids(long)
    assert len(pages) == len(set(pages))  # no product (or photo) twice


def test_both_sides_in_one_batch_call_are_the_two_single_queries(stores):
    from engine.store import StoreQuery

    text = "red dress"
    sides = [StoreQuery(dense=vector_of(text)), StoreQuery(sparse=embed_query(text))]
    for store in stores.values():
        batch = store.query_batch("products", sides, limit=50)
        single = [store.query("products", side, limit=50) for side in sides]
        assert [[h.id for h in hits] for hits in batch] == [[h.id for h in hits] for hits in single]
        assert [h.score for h in batch[0]] == pytest.approx([h.score for h in single[0]], rel=1e-6)
    batched, sequential = (search(stores["server"], text, dataclasses.replace(CONFIG, side_batch=b), limit=30)
                           for b in (True, False))
    assert ids(batched) == ids(sequential) and batched.facets == sequential.facets
