"""The rules stage inside the retrieval, on both store backends: rules shape the request's one candidate list
(between candidates.select and candidates.page), so pages concatenate to the shaped list with a pinned product
once; a pinned product beyond the candidate list costs one store query; a concept filter acts on the products the
concept's own query matches; a price sort is served as ranked."""
import numpy as np
import pytest
import torch

from engine.merch import MerchSource, MerchStore, Rule
from engine.query import QueryConfig, QueryService, SearchRequest
from engine.store import Point, open_store, point_id
from engine.tokens import CustomToken, TokenMeta, TokenSet

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py
# 6 points a side: most of the 30 products are beyond the candidate list; no concept photos (none registered)
CONFIG = QueryConfig(text_runtime="torch", steps=2, concept_photo_weight=0, candidate_window=6, gair=False)


@pytest.fixture(scope="module")
def setup(tiny, tmp_path_factory, store_config):
    token = CustomToken("<aurora>", torch.randn(1, tiny.text_width, generator=torch.Generator().manual_seed(3)),
                        TokenMeta(parent="dress", backbone_id=tiny.id))
    store = open_store(store_config(tmp_path_factory.mktemp("store")))
    store.create_collection("products-v1", dim=tiny.embed_dim, payload_indexes={"product_id": "keyword",
                                                                               "category": "keyword"})
    rng = np.random.default_rng(0)
    points = [Point(point_id(f"p{i:02d}-{j}"), rng.standard_normal(tiny.embed_dim).astype(np.float32),
                    {"product_id": f"p{i:02d}", "category": ["dress", "mug", "lamp"][i % 3], "price": float(i)})
              for i in range(30) for j in range(2)]
    store.upsert("products-v1", points)
    store.set_alias("products", "products-v1")
    service = QueryService(tiny, store, TokenSet([token]), None, CONFIG)
    merch = MerchStore(tmp_path_factory.mktemp("merch") / "registry.sqlite3")
    yield service, merch
    store.close()


@pytest.fixture
def rules(setup):
    """Set the service's rules for one test: rules(Rule, ...); none before and after."""
    service, merch = setup

    def use(*items):
        for r in merch.rules():
            merch.remove_rule(r.id, "test")
        merch.add_rules(items, "test")
        service.merch = MerchSource(merch, refresh_s=0.0)

    yield use
    service.merch = None


def listed(service, text, limit=4, **fields):
    """Every product of the list, page by page to its end, and the store queries the first page made."""
    calls = []
    real = service.store.query
    service.store.query = lambda *a, **kw: calls.append(a[1]) or real(*a, **kw)
    try:
        pages, offset = [], 0
        while offset is not None:
            page = service.search(SearchRequest(text, limit=limit, offset=offset, facets=False, **fields))
            pages.append(page)
            offset = page.next_offset
    finally:
        service.store.query = real
    first_calls = len(calls) // len(pages)
    return [p.product_id for page in pages for p in page.products], pages, first_calls


def test_a_pin_beyond_the_candidate_list_sits_once_and_costs_one_store_query(setup, rules):
    service, _ = setup
    plain, _, calls = listed(service, "red dress")
    far = next(f"p{i:02d}" for i in range(30) if f"p{i:02d}" not in plain and i % 3 != 2)  # not a lamp
    rules(Rule("far 2nd", "contains", "dress", "pin", products=(far,), position=2),
          Rule("no lamps", "always", "", "hide", category="lamp"))
    shaped, pages, _ = listed(service, "red dress")
    lamps = {f"p{i:02d}" for i in range(2, 30, 3)}
    kept = [p for p in plain if p not in lamps]
    assert shaped == kept[:1] + [far] + kept[1:]  # once, at 2, across pages; nothing else lost or moved
    applied = {m["name"]: m["products"] for m in pages[0].merch}
    assert applied == {"far 2nd": [far], "no lamps": [p for p in plain if p in lamps]}
    assert pages[0].products[1].rank == 2
    service.merch.invalidate()
    _, _, shaped_calls = listed(service, "red dress", limit=100)
    assert shaped_calls == calls + 1  # the candidate list's queries, and one for the pinned product
    by_price, _, _ = listed(service, "red dress", sort="price_asc")
    assert far not in by_price  # a price sort is the shopper's order: served as ranked


def test_a_concept_filter_boosts_the_products_its_own_query_matches(setup, rules):
    service, _ = setup
    own = service.search(SearchRequest("<aurora>", limit=100, facets=False))
    members = [p.product_id for p in own.products if not p.related]
    plain, _, _ = listed(service, "mug")
    rules(Rule("aurora up", "always", "", "boost", concept="<aurora>", amount=10.0))
    shaped, pages, _ = listed(service, "mug")
    ahead = [p for p in plain if p in members]
    assert ahead and shaped == ahead + [p for p in plain if p not in members]
    assert service.merch.concepts.computed == 1  # once for every page
