"""Hybrid (dense + BM25) queries, results per product, facets and price order: both store backends agree.

A small seeded catalog (products with several photos each, clustered dense vectors, distinct prices,
per-photo captions) is loaded into the embedded and the server backend (qdrant-client in memory).
"""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from engine.lexical import embed_document, embed_query
from engine.store import (
    Filter,
    Fusion,
    NoSparseVectors,
    OrderBy,
    Point,
    StoreQuery,
    VectorStore,
    open_store,
    point_id,
)
from engine.store.hybrid import group_hits, overfetch_groups

DIM = 16
PRODUCTS = 24
PHOTOS = 4
COLOURS = ["red", "blue", "green", "purple"]
CATEGORIES = ["dress", "mug", "lamp"]
LINES = ["Yarrow", "Aurora", "Basil", "Cascade", "Dune", "Ember"]
SCENES = ["by the pool", "on a beach", "in a kitchen", "in a forest"]
INDEXES = {"product_id": "keyword", "category": "keyword", "price": "float"}


def catalog(seed: int = 0) -> list[Point]:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((PRODUCTS, DIM))
    points = []
    for p in range(PRODUCTS):
        colour, category = COLOURS[p % 4], CATEGORIES[p % 3]
        for k in range(PHOTOS):
            payload = {"id": f"p{p}-{k}", "product_id": f"p{p}", "category": category,
                       "title": f"{LINES[p % 6]} {category.title()} {p} — {colour.title()}",
                       "price": 10.0 + 3.5 * p, "attributes": {"colour": colour, "caption": SCENES[(p + k) % 4],
                                      # a length of its own: no two photos tie on BM25 (engines order ties apart)
                                      "notes": " ".join(["studio"] * (p * PHOTOS + k))}}
            vec = centres[p] + 0.3 * rng.standard_normal(DIM)
            points.append(Point(point_id(f"p{p}-{k}"), vec.astype(np.float32), payload, embed_document(payload)))
    return points


@pytest.fixture(scope="module")
def both(make_store_config, tmp_path_factory) -> Iterator[tuple[VectorStore, VectorStore]]:
    path = tmp_path_factory.mktemp("hybrid")
    stores = tuple(open_store(make_store_config(kind, path / kind)) for kind in ("embedded", "server"))
    points = catalog()
    for s in stores:
        s.create_collection("shop-1", DIM, payload_indexes=INDEXES)
        s.upsert("shop-1", points)
        s.set_alias("shop", "shop-1")
    yield stores
    for s in stores:
        s.close()


def _query(text: str | None, seed: int = 1, **kwargs) -> StoreQuery:
    dense = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32) if seed is not None else None
    return StoreQuery(dense=dense, sparse=embed_query(text) if text else None, **kwargs)


def _ranked(groups) -> list[tuple[float, str]]:
    """(score, product) best first; products of equal score (RRF ties) in name order."""
    return sorted(((round(g.score, 4), g.key) for g in groups), key=lambda t: (-t[0], t[1]))


QUERIES = {
    "dense": lambda: _query(None),
    "sparse": lambda: _query("purple yarrow dress", seed=None),
    "rrf": lambda: _query("purple yarrow dress"),
    "rrf-weighted-dense": lambda: _query("blue lamp", fusion=Fusion("rrf", 60, (3.0, 1.0))),
    "dbsf": lambda: _query("green mug by the pool", fusion=Fusion("dbsf")),
}


@pytest.mark.parametrize("kind", sorted(QUERIES))
def test_groups_congruent_across_backends(both, kind):
    embedded, server = both
    query = QUERIES[kind]()
    a = embedded.query_groups("shop", query, "product_id", limit=PRODUCTS, group_size=PHOTOS)
    b = server.query_groups("shop", query, "product_id", limit=PRODUCTS, group_size=PHOTOS)
    assert a and len({g.key for g in a}) == len(a)  # one group per product
    assert _ranked(a) == _ranked(b)


def test_lexical_side_finds_the_named_product(both):
    for store in both:
        query = _query("Aurora Mug 1", seed=None)
        groups = store.query_groups("shop", query, "product_id", limit=3)
        assert groups[0].key == "p1"  # the only product whose title has all three words
        photos = store.query("shop", query, limit=5)
        assert photos[0].payload["product_id"] == "p1"


def test_filter_applies_to_both_prefetches(both):
    query = _query("purple dress", filter=Filter(must={"category": "mug"}))
    for store in both:
        hits = store.query("shop", query, limit=50)
        assert hits and {h.payload["category"] for h in hits} == {"mug"}


@pytest.mark.parametrize("text", [None, "purple dress"])
def test_must_not_excludes_on_both_backends_and_keeps_points_without_the_field(both, text):
    query = _query(text, filter=Filter(must_not={"category": ["mug", "lamp"], "attributes.colour": "red"}))
    found = [store.query("shop", query, limit=PRODUCTS * PHOTOS) for store in both]
    for hits in found:
        assert hits and {h.payload["category"] for h in hits} == {"dress"}
        assert "red" not in {h.payload["attributes"]["colour"] for h in hits}
    assert [h.id for h in found[0]] == [h.id for h in found[1]]
    # with must and ranges in one filter
    both_ways = _query(None, filter=Filter(must={"category": "dress"}, ranges={"price": (None, 60.0)},
                                           must_not={"product_id": "p0"}))
    for store in both:
        hits = store.query("shop", both_ways, limit=PRODUCTS * PHOTOS)
        assert hits and all(h.payload["product_id"] != "p0" and h.payload["price"] <= 60 for h in hits)
    with pytest.raises(ValueError, match=r"Filter.must_not\['category'\] is an empty list"):
        Filter(must_not={"category": []})


def test_one_request_tree_for_both_backends():
    from engine.store.client_convert import to_client_args
    from engine.store.edge_convert import to_edge_request
    from engine.store.plan import plan

    query = _query("purple dress", order_by=OrderBy("price", "desc"), score_threshold=0.1,
                   filter=Filter(must={"category": "dress"}), prefetch_limit=7)
    root = plan(query, limit=5, offset=2)
    # ordered hybrid: order <- fusion (window, fused threshold) <- dense, sparse (prefetch_limit each, filtered)
    assert (root.kind, root.limit, root.offset, root.score_threshold) == ("order", 5, 2, None)
    (fused,) = root.prefetch
    assert (fused.kind, fused.limit, fused.score_threshold) == ("fusion", 14, 0.1)
    assert [(p.kind, p.limit, p.score_threshold, p.filter) for p in fused.prefetch] == [
        ("dense", 7, None, query.filter), ("sparse", 7, None, query.filter)]
    args = to_client_args(root, None)
    assert (args["limit"], args["offset"], len(args["prefetch"]), len(args["prefetch"][0].prefetch)) == (5, 2, 1, 2)
    assert args["prefetch"][0].limit == 14 and args["prefetch"][0].prefetch[1].using == "text"
    assert to_edge_request(root, lambda node: None) is not None
    plain = plan(_query(None, score_threshold=0.2), limit=3, offset=1)
    assert (plain.kind, plain.limit, plain.offset, plain.score_threshold, plain.prefetch) == ("dense", 3, 1, 0.2, ())


def test_group_pages_concatenate_to_one_long_ranking(both):
    query = _query(None, seed=3)
    for store in both:
        whole = store.query_groups("shop", query, "product_id", limit=PRODUCTS, group_size=2)
        pages = [g for off in range(0, PRODUCTS + 5, 5)
                 for g in store.query_groups("shop", query, "product_id", limit=5, offset=off, group_size=2)]
        assert [g.key for g in pages] == [g.key for g in whole]
        assert len(whole) == PRODUCTS  # dense: every product is a candidate
        for g in whole:
            assert 1 <= len(g.hits) <= 2 and {h.payload["product_id"] for h in g.hits} == {g.key}
            assert [h.score for h in g.hits] == sorted((h.score for h in g.hits), reverse=True)


def test_overfetch_page_is_never_short_while_more_products_exist():
    """One product owns the first 500 photos of the ranking: the fetch must grow until the page is full."""
    from engine.store import Hit

    ranking = [Hit(f"a{i}", 1000 - i, {"product_id": "big"}) for i in range(500)]
    ranking += [Hit(f"b{i}", 100 - i, {"product_id": f"small{i}"}) for i in range(40)]
    asked = []

    def fetch(n):
        asked.append(n)
        return ranking[:n]

    groups = overfetch_groups(fetch, "product_id", want=10, group_size=3)
    assert [g.key for g in groups] == ["big"] + [f"small{i}" for i in range(9)]
    assert len(asked) > 1 and asked == sorted(asked)  # it grew, in bounded rounds
    # fewer products than asked: the whole ranking, no endless loop
    asked.clear()
    assert len(overfetch_groups(fetch, "product_id", want=100, group_size=1)) == 41
    assert asked[-1] > len(ranking)


def test_embedded_page_is_never_short_on_a_skewed_collection(make_store_config, tmp_path):
    """A product with many near-identical photos ahead of all others, through the real engine."""
    rng = np.random.default_rng(5)
    query = rng.standard_normal(DIM).astype(np.float32)
    points = [Point(point_id(f"big-{i}"), query + 0.01 * rng.standard_normal(DIM).astype(np.float32),
                    {"product_id": "big"}) for i in range(300)]
    points += [Point(point_id(f"s-{i}"), rng.standard_normal(DIM).astype(np.float32), {"product_id": f"s{i}"})
               for i in range(30)]
    with open_store(make_store_config("embedded", tmp_path / "s")) as store:
        store.create_collection("c", DIM, payload_indexes={"product_id": "keyword"})
        store.upsert("c", points)
        groups = store.query_groups("c", StoreQuery(dense=query), "product_id", limit=12, group_size=3)
        assert len(groups) == 12 and groups[0].key == "big" and len(groups[0].hits) == 3


def test_facets_count_products_not_photos(both):
    query = _query("dress", filter=Filter(ranges={"price": (None, 60.0)}))
    ranges = {"price": [(None, 30.0), (30.0, 50.0), (50.0, None)]}
    results = [s.facets("shop", query, "product_id", ["category", "attributes.colour"], ranges) for s in both]
    assert results[0] == results[1]
    facets = results[0]
    hits = both[0].query("shop", query, limit=query.window())
    products = {h.payload["product_id"]: h.payload for h in hits}
    assert facets.products == len(products) and facets.points == len(hits) > len(products)
    for category in CATEGORIES:
        expected = sum(1 for p in products.values() if p["category"] == category)
        assert facets.values["category"].get(category, 0) == expected
    assert sum(c for _, _, c in facets.ranges["price"]) == len(products)
    assert facets.ranges["price"][2][2] == sum(1 for p in products.values() if p["price"] >= 50)


@pytest.mark.parametrize("direction", ["asc", "desc"])
def test_order_by_price_congruent(both, direction):
    query = _query("lamp", order_by=OrderBy("price", direction))
    pages = [s.query_groups("shop", query, "product_id", limit=6, group_size=1) for s in both]
    assert [g.key for g in pages[0]] == [g.key for g in pages[1]]
    prices = [g.hits[0].payload["price"] for g in pages[0]]
    assert len(prices) == 6 and prices == sorted(prices, reverse=direction == "desc")


@pytest.mark.parametrize("text", [None, "lamp"], ids=["dense", "hybrid"])
@pytest.mark.parametrize("direction", [None, "asc"], ids=["ranked", "ordered"])
def test_score_threshold_keeps_only_the_candidates_scoring_above_it(both, text, direction):
    ranked = both[0].query("shop", _query(text), limit=_query(text).window())
    scores = sorted({h.score for h in ranked}, reverse=True)
    cut = (scores[7] + scores[8]) / 2  # between two scores: no tie decides the test
    above = {h.id for h in ranked if h.score > cut}
    order = OrderBy("price", direction) if direction else None
    for store in both:
        hits = store.query("shop", _query(text, order_by=order, score_threshold=cut), limit=100)
        assert {h.id for h in hits} == above, type(store).__name__
        if order:
            prices = [h.payload["price"] for h in hits]
            assert prices == sorted(prices)
    with pytest.raises(ValueError, match="score_threshold"):
        _query(text, score_threshold=float("nan"))


def test_collection_without_sparse_vectors_names_reindex(store_config, tmp_path):
    with open_store(store_config(tmp_path / "old")) as store:
        store.create_collection("old", DIM, payload_indexes=INDEXES, sparse=False)
        points = catalog()
        with pytest.raises(NoSparseVectors, match="coinage reindex"):
            store.upsert("old", points[:2])
        store.upsert("old", [Point(p.id, p.vector, p.payload) for p in points])
        store.set_alias("products", "old")
        assert not store.has_sparse("products")
        with pytest.raises(NoSparseVectors, match="coinage reindex"):
            store.query("products", _query("purple dress"))
        groups = store.query_groups("products", _query(None), "product_id", limit=3)  # dense still served
        assert len(groups) == 3


def test_metadata_round_trip_through_alias(both):
    for store in both:
        store.set_metadata("shop-1", {"spelling": {"dress": 3}})
        store.set_metadata("shop-1", {"version": 1})
        assert store.get_metadata("shop") == {"spelling": {"dress": 3}, "version": 1}
        assert store.has_sparse("shop")


def test_group_hits_keeps_first_appearance_order():
    from engine.store import Hit

    hits = [Hit("1", 0.9, {"product_id": "a"}), Hit("2", 0.8, {"product_id": "b"}),
            Hit("3", 0.7, {"product_id": "a"}), Hit("4", 0.6, {})]
    groups = group_hits(hits, "product_id", 5)
    assert [(g.key, [h.id for h in g.hits]) for g in groups] == [("a", ["1", "3"]), ("b", ["2"])]


def test_store_query_validation():
    with pytest.raises(ValueError, match="dense vector, a non-empty sparse"):
        StoreQuery()
    with pytest.raises(ValueError, match="use one of"):
        Fusion("max")
    with pytest.raises(ValueError, match="rrf"):
        Fusion("dbsf", weights=(1.0, 2.0))
