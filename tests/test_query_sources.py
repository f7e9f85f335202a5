"""The sources a search reads besides the retriever (catalog words, speller): a request resolves its collection's
alias once and every source reads that collection; the catalog words are re-read without making searches wait."""
import threading
import time

import pytest
from test_query_shop import CONFIG, load

from engine.query import QueryService, SearchRequest
from engine.query.catalog_words import CatalogSource
from engine.query.config import QueryConfig
from engine.store import CollectionNotFound, open_store
from engine.store.artifacts import ARTIFACTS
from engine.tokens import TokenSet

ALIAS_FREE = ("get_alias", "set_alias", "delete_alias", "list_aliases", "collection_exists", "list_collections")


class Recording:
    """A store that records the collection each call names; `switch` moves the alias to `later` right after the
    first alias look-up (a reindex switching mid-request)."""

    def __init__(self, store, later: str | None = None):
        self._store, self._later, self.looked_up, self.read = store, later, 0, []

    def get_alias(self, name):
        found = self._store.get_alias(name)
        self.looked_up += 1
        if self._later is not None and self.looked_up == 1:
            self._store.set_alias(name, self._later)
        return found

    def __getattr__(self, name):
        attr = getattr(self._store, name)
        if not callable(attr) or name in ALIAS_FREE:
            return attr

        def call(*args, **kwargs):
            if args and isinstance(args[0], str):
                self.read.append((name, args[0]))
            return attr(*args, **kwargs)

        return call


class Dropped(Recording):
    """The old collection "shop-a" is dropped right after the switch: reading it raises CollectionNotFound."""

    def query(self, collection, *args, **kwargs):
        return self._read("query", collection, args, kwargs)

    def query_batch(self, collection, *args, **kwargs):
        return self._read("query_batch", collection, args, kwargs)

    def _read(self, method, collection, args, kwargs):
        if collection == "shop-a" and self.looked_up >= 1:
            raise CollectionNotFound(collection)
        self.read.append((method, collection))
        return getattr(self._store, method)(collection, *args, **kwargs)


@pytest.fixture(scope="module")
def two(tiny, tmp_path_factory, store_config):
    store = open_store(store_config(tmp_path_factory.mktemp("store")))
    load(store, "shop-a", tiny)
    load(store, "shop-b", tiny)
    yield store
    store.close()


def test_a_reindex_switch_mid_request_does_not_mix_collections(tiny, two):
    two.set_alias("products", "shop-a")
    recording = Recording(two, later="shop-b")
    service = QueryService(tiny, recording, TokenSet(), None, CONFIG)
    found = service.search(SearchRequest("dress under 60 not green"))
    assert found.products and found.interpretation.constraints  # the catalog words were read
    assert recording.looked_up == 1  # one alias look-up for the whole request
    read = {c for _, c in recording.read} - {ARTIFACTS}  # (artifacts: a store's own, keyed by collection)
    assert read == {"shop-a"}, recording.read  # catalog words, speller, retrieval: the one collection pinned
    assert {m for m, _ in recording.read} >= {"count", "query"}
    two.set_alias("products", "shop-a")


def test_a_collection_dropped_after_the_switch_mid_request_is_served_from_the_new_one(tiny, two):
    """A reindex switches the alias and drops the old collection while a request that pinned the old one runs:
    the request's candidate set comes whole from the collection the alias names now, not a 503 index_missing
    (the load test's busy phase hit this)."""
    two.set_alias("products", "shop-a")
    store = Dropped(two, later="shop-b")
    try:
        found = QueryService(tiny, store, TokenSet(), None, CONFIG).search(SearchRequest("red dress"))
        assert found.products
        assert {c for m, c in store.read if m.startswith("query")} == {"shop-b"}, store.read
    finally:
        two.set_alias("products", "shop-a")


def test_a_pinned_product_looked_up_after_a_mid_request_drop_is_read_from_the_new_collection(tiny, two):
    """The rules stage looks up pinned products the candidate list lacks in the collection the candidates came
    from: after the drop above, the alias's new one (it read the request's dropped one: a raw CollectionNotFound)."""
    from engine.merch.rules import Rule
    from engine.merch.stage import RulesStage, pinned_lookup
    two.set_alias("products", "shop-a")
    store = Dropped(two, later="shop-b")
    try:
        service = QueryService(tiny, store, TokenSet(), None, CONFIG)
        request = SearchRequest("red dress")
        pinned = service.retriever.pin()  # the request's collection, "shop-a": dropped from now on
        vector = None  # the lexical side alone: enough to find candidates and to look the pin up
        rule = Rule("pin one", "always", "", "pin", products=("no-such-product",), position=1)
        stage = RulesStage([rule], lambda _: frozenset(), pinned_lookup(service.retriever, request, vector,
                                                                        "red dress", pinned), "product_id")
        page = service.retriever.page(request, vector, "red dress", shape=stage, collection=pinned)
        assert pinned == "shop-a" and page.products
        assert {c for m, c in store.read if m == "query"} == {"shop-b"}, store.read  # the lookup's query too
    finally:
        two.set_alias("products", "shop-a")


def test_a_search_does_not_wait_while_the_catalog_words_are_re_read(tiny, two):
    two.set_alias("products", "shop-a")
    gate, reading = threading.Event(), threading.Event()

    class Slow(Recording):
        def retrieve(self, collection, ids, **kw):  # the payload scroll of a re-read: held until the gate opens
            if collection == "shop-b":
                reading.set()
                assert gate.wait(30)
            return self._store.retrieve(collection, ids, **kw)

    now = [0.0]
    source = CatalogSource(Slow(two), QueryConfig(catalog_refresh_s=10), clock=lambda: now[0])
    first = source.get()
    assert first is not None and source.version == 1
    two.set_alias("products", "shop-b")  # a reindex: the words must be read again
    now[0] = 11.0
    try:
        started = time.perf_counter()
        assert source.get() is first  # served at once with the words read last, the re-read under way
        assert reading.wait(10) and time.perf_counter() - started < 5
        assert source.get("shop-b") is first and source.version == 1  # a request pinned to the new one: still served
    finally:
        gate.set()
    source.wait(30)
    assert source.get() is not first and source.version == 2
    two.set_alias("products", "shop-a")
