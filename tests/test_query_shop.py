"""Shopper-grade search through the query service, on both store backends: one result per product, hybrid
retrieval, typo correction, facets, price sort, and collections built before any of it."""
import dataclasses
import json

import numpy as np
import pytest
import torch

from engine.lexical import embed_document
from engine.query import QueryConfig, QueryError, QueryService, SearchRequest
from engine.query.floor import kept
from engine.spelling import strip_placeholders
from engine.store import Point, open_store, point_id
from engine.tokens import CustomToken, TokenMeta, TokenSet
from engine.vocabulary import Vocabulary, write_vocabulary

CONFIG = QueryConfig(text_runtime="torch", steps=2, gair=False, default_limit=5)
COLOURS = ["purple", "green", "orange"]
CATEGORIES = ["dress", "backpack", "teapot"]
LINES = ["Yarrow", "Aurora", "Basil", "Cascade", "Dune", "Ember", "Fjord"]
PRODUCTS, PHOTOS = 21, 3
INDEXES = {"product_id": "keyword", "category": "keyword", "price": "float", "attributes.colour": "keyword"}


def rows():
    for p in range(PRODUCTS):
        colour, category = COLOURS[p % 3], CATEGORIES[(p // 3) % 3]
        for k in range(PHOTOS):
            yield {"id": f"p{p}-{k}", "product_id": f"p{p}", "category": category, "price": 10.0 + 7 * p,
                   "title": f"{LINES[p % 7]} {['Dotted', 'Striped', 'Plain'][p % 3]} {category.title()} — "
                            f"{colour.title()}", "attributes": {"colour": colour}}


def load(store, name, tiny, sparse=True):
    rng = np.random.default_rng(0)
    store.create_collection(name, dim=tiny.embed_dim, payload_indexes=INDEXES, sparse=sparse)
    vocabulary = Vocabulary()
    points = []
    for row in rows():
        vocabulary.add(row)
        points.append(Point(point_id(row["id"]), rng.standard_normal(tiny.embed_dim).astype(np.float32), row,
                            embed_document(row) if sparse else None))
    store.upsert(name, points)
    if sparse:
        write_vocabulary(store, name, vocabulary)


@pytest.fixture(scope="module")
def service(tiny, tmp_path_factory, store_config):
    store = open_store(store_config(tmp_path_factory.mktemp("store")))
    load(store, "shop-v1", tiny)
    store.set_alias("products", "shop-v1")
    meta = TokenMeta(parent="dress", backbone_id=tiny.id, attributes=["red"])
    tokens = TokenSet([CustomToken("<aurora>", torch.randn(2, tiny.text_width) * 0.02, meta)])
    yield QueryService(tiny, store, tokens, None, CONFIG)
    store.close()


def products(response):
    return [p.product_id for p in response.products]


def test_one_card_per_product_with_its_photos_and_pages_per_product(service):
    whole = service.search(SearchRequest("dotted dress", limit=PRODUCTS))
    assert whole.mode == "products" and whole.retrieval == "hybrid"
    assert len(products(whole)) == len(set(products(whole))) == PRODUCTS  # every product once, none repeated
    for card in whole.products:
        assert 1 <= len(card.photos) <= CONFIG.group_size
        assert {ph.payload["product_id"] for ph in card.photos} == {card.product_id}
        assert card.photos[0].score == card.score
    assert [r.payload["product_id"] for r in whole.results] == products(whole)  # results: each card's best photo
    first = service.search(SearchRequest("dotted dress", limit=5))
    second = service.search(SearchRequest("dotted dress", limit=5, offset=first.next_offset))
    assert first.next_offset == 5 and [p.rank for p in second.products] == [6, 7, 8, 9, 10]
    assert products(first) + products(second) == products(whole)[:10]
    body = json.loads(json.dumps(whole.to_json()))
    assert body["products"][0]["photos"][0]["payload"]["product_id"] == body["products"][0]["product_id"]
    photos = service.search(SearchRequest("dotted dress", mode="photos", limit=10))
    assert photos.mode == "photos" and not photos.products and len(photos.results) == 10


def test_a_product_name_finds_that_product_first(service):
    lexical = service.search(SearchRequest("Cascade Dotted Backpack", retrieval="lexical"))
    assert lexical.products[0].photos[0].payload["title"].startswith("Cascade Dotted Backpack")
    # the tiny backbone's dense side is noise; score-based fusion (DBSF) keeps the name's product first
    weighted = QueryService(service.backbone, service.store, TokenSet(), None,
                            dataclasses.replace(CONFIG, fusion="dbsf"))
    hybrid = weighted.search(SearchRequest("Cascade Dotted Backpack"))
    assert hybrid.retrieval == "hybrid" and products(hybrid)[0] == lexical.products[0].product_id


def test_typos_are_corrected_and_known_words_never_rewritten(service):
    # "doted" is an English word (symspellpy's dictionary): never rewritten; "dottted" is a typo
    typo = service.search(SearchRequest("purpel dottted dres"))
    assert typo.correction is not None and typo.correction.corrected == "purple dotted dress"
    assert typo.correction.changes == [("purpel", "purple"), ("dottted", "dotted"), ("dres", "dress")]
    assert typo.prompt == "purple dotted dress"
    clean = service.search(SearchRequest("purple dotted dress"))
    assert clean.correction is None and products(clean) == products(typo)
    assert service.search(SearchRequest("purple doted dress")).correction is None
    as_typed = service.search(SearchRequest("purpel dottted dres", correct=False))
    assert as_typed.correction is None and as_typed.prompt == "purpel dottted dres"
    token = service.search(SearchRequest("<aurora> dres"))
    assert token.correction.corrected == "<aurora> dress" and token.tokens == ["<aurora>"]


def test_custom_tokens_stay_on_the_dense_side(service):
    assert strip_placeholders("<aurora> dress by the <pool-x> pool") == "dress by the pool"
    only_token = service.search(SearchRequest("<aurora>"))
    # the parent word 'dress' is added to the dense prompt, not to the typed words the lexical side searches
    assert only_token.prompt == "<aurora> dress" and only_token.retrieval == "dense" and only_token.products
    # retrieval 'auto' (the default) ranks a token query by the dense side alone (docs/relevance.md: the lexical side
    # cost custom-token queries nDCG); asked for, hybrid still fuses the remaining words
    assert service.search(SearchRequest("<aurora> purple")).retrieval == "dense"
    assert service.search(SearchRequest("<aurora> purple", retrieval="hybrid")).retrieval == "hybrid"
    assert service.search(SearchRequest("purple dress")).retrieval == "hybrid"
    with pytest.raises(QueryError, match="lexical retrieval needs words"):
        service.search(SearchRequest("<aurora>", retrieval="lexical"))


def test_facets_count_products_under_the_filters(service):
    whole = QueryService(service.backbone, service.store, TokenSet(), None,
                         dataclasses.replace(CONFIG, relevance_floor="none"))  # the count over the whole window
    response = whole.search(SearchRequest("green", limit=3))
    facets = response.facets
    assert facets.products == PRODUCTS and facets.complete  # the window holds every photo here
    per_product = {r["product_id"]: r for r in rows()}
    expected = {c: sum(r["category"] == c for r in per_product.values()) for c in CATEGORIES}
    assert facets.values["category"] == expected  # products, not photos (3 per product)
    assert sum(b["count"] for b in facets.price) == PRODUCTS
    assert facets.price[0] == {"min": None, "max": 25.0, "count": sum(r["price"] < 25 for r in per_product.values())}
    teapots = whole.search(SearchRequest("green", category="teapot", colour="green"))
    green = sum(r["category"] == "teapot" and r["attributes"]["colour"] == "green" for r in per_product.values())
    assert green and teapots.facets.values == {"category": {"teapot": green}, "colour": {"green": green}}
    assert {p.photos[0].payload["category"] for p in teapots.products} == {"teapot"}


def test_count_and_facets_stop_at_the_relevance_floor_and_related_items_follow(service):
    response = service.search(SearchRequest("green", limit=PRODUCTS))
    related = [p.related for p in response.products]
    matched = related.count(False)
    assert len(related) == PRODUCTS and related == sorted(related)  # the matches, then the related items
    assert 1 <= matched < PRODUCTS and response.facets.products == matched and response.facets.complete
    assert sum(response.facets.values["category"].values()) == matched
    colours = response.facets.values["colour"]
    assert max(colours, key=colours.get) == "green" and colours["green"] >= 0.75 * matched
    body = response.to_json()
    assert [p["related"] for p in body["products"]] == related


@pytest.mark.parametrize("sort", ["price_asc", "price_desc"])
def test_sort_by_price_lists_the_best_matches_in_price_order_the_same_on_every_page(service, sort):
    # "dotted" names no facet value here (the catalog has no pattern field): the list ends at the relevance floor
    ranked = service.search(SearchRequest("dotted", limit=PRODUCTS))  # by relevance: the candidates the floor reads
    n = kept([p.score for p in ranked.products], CONFIG.sort_floor)
    whole = service.search(SearchRequest("dotted", sort=sort, limit=PRODUCTS))
    prices = [p.photos[0].payload["price"] for p in whole.products]
    assert 1 <= n < PRODUCTS and sorted(products(whole)) == sorted(products(ranked)[:n])  # the best n, each once
    assert prices == sorted(prices, reverse=sort == "price_desc")
    assert any(note.startswith(f"sorted by price: the {n} best-matching of {PRODUCTS}") for note in whole.notes)
    facets = service.search(SearchRequest("dotted", sort=sort)).facets  # counts of what the list shows
    assert facets.products == n and facets.complete and sum(b["count"] for b in facets.price) == n
    # pages and page sizes agree (a longer list than the default rule's here: a floor at the mean score)
    halves = QueryService(service.backbone, service.store, TokenSet(), None,
                          dataclasses.replace(CONFIG, sort_floor="z:0"))
    whole = halves.search(SearchRequest("dotted", sort=sort, limit=PRODUCTS))
    pages = [halves.search(SearchRequest("dotted", sort=sort, limit=3, offset=o)) for o in (0, 3, 6)]
    assert len(whole.products) > 6 and sum((products(p) for p in pages), []) == products(whole)[:9]
    # without a floor the cheapest (or dearest) candidates come first whatever they are: the order before
    unfloored = QueryService(service.backbone, service.store, TokenSet(), None,
                             dataclasses.replace(CONFIG, sort_floor="none"))
    assert len(products(unfloored.search(SearchRequest("dotted", sort=sort, limit=PRODUCTS)))) == PRODUCTS


@pytest.mark.parametrize("sort", ["relevance", "price_asc"])
def test_a_named_category_and_colour_count_every_product_that_has_them_and_none_of_another_category(service, sort):
    per_product = {r["product_id"]: r for r in rows()}
    for text, typed in (("dress", "dress"), ("purple dress", "purpel dres")):
        words = text.split()
        wanted = {p for p, r in per_product.items()
                  if r["category"] == "dress" and (len(words) == 1 or r["attributes"]["colour"] == "purple")}
        for query in (text, typed):  # a typo'd query names what its correction names
            response = service.search(SearchRequest(query, sort=sort, limit=PRODUCTS))
            counted = [p.product_id for p in response.products if not p.related]
            assert wanted <= set(counted), query  # every product with the named values is counted
            assert {per_product[p]["category"] for p in counted} == {"dress"}, query  # nothing of another category
            assert response.facets.products == len(counted) and response.facets.complete
            if sort != "relevance":
                assert not any(p.related for p in response.products)  # sorted by price: the matches alone
    # a bare category is a match by definition: every dress is counted, whatever the floor would cut
    dresses = service.search(SearchRequest("dress", sort=sort, limit=PRODUCTS))
    assert dresses.facets.values["category"] == {"dress": sum(r["category"] == "dress" for r in per_product.values())}
    ignored = service.search(SearchRequest("dress", sort=sort, limit=PRODUCTS, ignore=["category:dress"]))
    assert ignored.facets.products == kept([p.score for p in service.search(
        SearchRequest("dress", limit=PRODUCTS, ignore=["category:dress"])).products], CONFIG.sort_floor)


@pytest.mark.parametrize("sort", ["relevance", "price_asc"])
def test_a_product_name_counts_its_own_matches_not_every_product_of_its_category(service, sort):
    """A name ("Dune Plain Dress") names the category dress, but its product line is a narrower catalog word: the
    floor decides its matches (of the named category only), so sorted by price it is not every dress; a scene
    ("dress on the beach") is no catalog word, so every dress still counts there."""
    per_product = {r["product_id"]: r for r in rows()}
    dresses = {p for p, r in per_product.items() if r["category"] == "dress"}
    for query in ("Dune Plain Dress", "dune plain dres"):
        response = service.search(SearchRequest(query, sort=sort, limit=PRODUCTS))
        counted = [p.product_id for p in response.products if not p.related]
        assert "p11" in counted and set(counted) < dresses, (query, counted)  # the named product, not every dress
        plain = service.search(SearchRequest(query, limit=PRODUCTS, ignore=["category:dress"]))
        floor = kept([p.score for p in plain.products], CONFIG.sort_floor if sort != "relevance"
                     else CONFIG.relevance_floor)
        above = {p.product_id for p in plain.products[:floor]}
        assert set(counted) == {p for p in above if p in dresses} or counted == [products(plain)[0]], query
        assert response.facets.products == len(counted)
    scene = service.search(SearchRequest("dress on the beach", sort=sort, limit=PRODUCTS))
    assert {p.product_id for p in scene.products if not p.related} == dresses


@pytest.mark.parametrize("sort", ["relevance", "price_asc"])
def test_a_custom_token_is_narrower_than_the_category_it_names_beside(service, sort):
    """"<aurora> dress" names the category dress, but the concept is narrower than it: the floor decides its
    matches (of the named category only), as for a product name, not every dress in the catalog."""
    dresses = {r["product_id"] for r in rows() if r["category"] == "dress"}
    response = service.search(SearchRequest("<aurora> dress", sort=sort, limit=PRODUCTS))
    counted = {p.product_id for p in response.products if not p.related}
    plain = service.search(SearchRequest("<aurora> dress", limit=PRODUCTS, ignore=["category:dress"]))
    floor = kept([p.score for p in plain.products], CONFIG.sort_floor if sort != "relevance"
                 else CONFIG.relevance_floor)
    above = {p.product_id for p in plain.products[:floor]} & dresses
    assert counted == above or counted == {products(plain)[0]}, (counted, above)
    assert response.facets.products == len(counted)


def test_collection_built_before_bm25_is_served_dense_with_a_note(tiny, tmp_path, store_config):
    with open_store(store_config(tmp_path / "old")) as store:
        load(store, "old-v1", tiny, sparse=False)
        store.set_alias("products", "old-v1")
        service = QueryService(tiny, store, TokenSet(), None, CONFIG)
        response = service.search(SearchRequest("purpel dress"))
        assert response.retrieval == "dense" and response.correction is None and len(response.products) == 5
        assert any("coinage reindex" in n for n in response.notes)
        with pytest.raises(QueryError, match="coinage reindex"):
            service.search(SearchRequest("purple dress", retrieval="lexical"))


def test_words_an_index_run_adds_reach_the_speller_without_a_restart(tiny, tmp_path, store_config):
    store = open_store(store_config(tmp_path))
    try:
        load(store, "shop-v1", tiny)
        service = QueryService(tiny, store, TokenSet([]), None,
                               dataclasses.replace(CONFIG, collection="shop-v1", spelling_refresh_s=0.0))
        assert service.search(SearchRequest("dunexa dress", gair=False)).correction is not None  # read as "dune"
        vocabulary = Vocabulary()
        for row in rows():
            vocabulary.add(row)
        vocabulary.add({"title": "Dunexa Plain Dress", "category": "dress"})  # a new product indexed in place
        write_vocabulary(store, "shop-v1", vocabulary)
        service.search(SearchRequest("dunexa dress", gair=False))  # sees the new version: rebuilds in the background
        service.spelling.wait()
        assert service.search(SearchRequest("dunexa dress", gair=False)).correction is None  # now a catalog word
    finally:
        store.close()
