"""Query understanding: prices, negations, identifiers, facet values and concept names read out of the text
(engine/query/understand.py), the catalog words it reads from the collection, and the service applying them."""
import dataclasses

import numpy as np
import pytest
import torch
from test_query_shop import CONFIG, PRODUCTS, load, products, rows

from engine.query import QueryError, QueryService, SearchRequest
from engine.query.catalog_words import CatalogSource
from engine.query.config import QueryConfig
from engine.query.understand import CatalogWords, understand, word_forms
from engine.store import Point, open_store, point_id
from engine.tokens import CustomToken, TokenMeta, TokenSet

CFG = QueryConfig()
CATALOG = [{"product_id": f"p{i:04d}", "id": f"p{i:04d}-0", "title": f"Aurora {pat.title()} {cat.title()}",
            "category": cat, "attributes": {"colour": col, "pattern": pat}}
           for i, (cat, col, pat) in enumerate([("dress", "red", "striped"), ("mug", "pink", "dotted"),
                                                ("t-shirt", "blue", "solid"), ("mug", "brown", "checked")] * 5)]
WORDS = CatalogWords.from_payloads(CATALOG, CFG)


def tokens(*names):
    return TokenSet([CustomToken(n, torch.zeros(1, 8), TokenMeta(parent="dress", backbone_id="t")) for n in names])


def read(text, **kw):
    return understand(text, WORDS, kw.pop("tokens", TokenSet()), CFG, **kw)


@pytest.mark.parametrize("text, low, high, left", [
    ("red dress under 60", None, 60, "red dress"),
    ("below $40 mug", None, 40, "mug"),
    ("dress less than 59.99 euros", None, 59.99, "dress"),
    ("mug up to £25", None, 25, "mug"),
    ("dress over 100", 100, None, "dress"),
    ("mug from 10", 10, None, "mug"),
    ("dress at least 30 dollars", 30, None, "dress"),
    ("between 30 and 80 dress", 30, 80, "dress"),
    ("dress 80-30", 30, 80, "dress"),
    ("mug $20 - $40", 20, 40, "mug"),
    ("dress 50 or more", 50, None, "dress"),
    ("cheap mug", None, 25, "mug"),
    ("expensive dress", 100, None, "dress"),
    ("a mug for under 20", None, 20, "mug"),
])
def test_price_phrases_become_bounds_and_leave_the_text(text, low, high, left):
    found = read(text)
    price = [c for c in found.constraints if c.kind == "price"]
    assert len(price) == 1 and (price[0].min_price, price[0].max_price) == (low, high)
    assert found.text == left
    request = found.apply(SearchRequest(text))
    assert (request.min_price, request.max_price) == (low, high)


def test_numbers_that_are_no_price_stay_words():
    found = read("dress 2 pockets")
    assert [c.kind for c in found.constraints] == ["facet"] and found.text == "dress 2 pockets"


def test_negation_of_a_facet_value_excludes_it_and_of_another_word_drops_the_word():
    found = read("striped mug not pink")
    assert found.text == "striped mug"
    (neg,) = [c for c in found.constraints if c.kind == "exclude"]
    assert (neg.field, neg.values, neg.label) == ("attributes.colour", ("pink",), "not pink")
    assert found.apply(SearchRequest("x")).exclude == {"attributes.colour": ["pink"]}
    stripes = read("mug without stripes")  # a pattern's noun form
    assert [(c.field, c.values) for c in stripes.constraints if c.kind == "exclude"] == [
        ("attributes.pattern", ("striped",))]
    plain = read("dress without pockets")  # not a facet value: out of the words searched, no filter
    (neg,) = [c for c in plain.constraints if c.kind == "exclude"]
    assert neg.field is None and plain.text == "dress" and plain.apply(SearchRequest("x")).exclude == {}
    assert read("no t shirt").constraints[0].values == ("t-shirt",)  # a split compound


def test_identifiers_exact_and_prefix():
    exact = read("P0003")
    (c,) = exact.constraints
    assert (c.kind, c.field, c.values) == ("identifier", "product_id", ("p0003",))
    assert exact.apply(SearchRequest("x")).filters == {"product_id": ["p0003"]}
    prefix = read("p001")
    assert prefix.constraints[0].values == tuple(f"p00{i}" for i in range(10, 20))
    assert prefix.constraints[0].label == "id begins p001"
    assert read("p0013-0").constraints[0].field == "id"  # a photo id
    assert read("pink mug").constraints and all(c.kind != "identifier" for c in read("pink mug").constraints)
    many = understand("p0", WORDS, TokenSet(), QueryConfig(max_prefix_ids=5))  # too wide a prefix: no filter
    assert all(c.kind != "identifier" for c in many.constraints)


def test_facet_values_are_soft_unless_configured_hard():
    found = read("pink mug")
    assert {(c.label, c.hard) for c in found.constraints} == {("colour pink", False), ("category mug", False)}
    assert found.text == "pink mug" and found.apply(SearchRequest("x")).filters == {}
    hard = understand("pink mug", WORDS, TokenSet(), QueryConfig(facet_filters=("category",)))
    assert hard.apply(SearchRequest("x")).filters == {"category": ["mug"]}


def test_concept_names_typed_as_words_use_the_token_and_can_be_searched_as_words():
    registered = tokens("<newcomer>", "<aurora>")
    found = read("Newcomer dress on a brick wall", tokens=registered)
    assert found.text == "<newcomer> dress on a brick wall"
    assert [(c.kind, c.label) for c in found.constraints if c.kind == "concept"] == [("concept", "<newcomer>")]
    assert read("<newcomer> dress", tokens=registered).text == "<newcomer> dress"  # already a token
    word = read("newcomer dress", tokens=registered, ignore=["concept:<newcomer>"])
    assert word.text == "newcomer dress" and word.ignored == ["concept:<newcomer>"]
    both = read("aurora mug", tokens=registered)  # the concept's name is also a catalog word: read both ways
    assert both.text == "<aurora> mug" and any("also a word of the catalog" in n for n in both.notes)
    named = read("p0003 dress", tokens=tokens("<p0003>"))  # a concept named like a product id: the concept...
    assert named.text == "<p0003> dress" and [c.kind for c in named.constraints if c.hard] == ["concept"]
    (pin,) = [c for c in named.constraints if c.kind == "identifier"]  # ... and that product first, unfiltered
    assert (pin.hard, pin.key, pin.values) == (False, "id", ("p0003",)) and named.pins == ("p0003",)
    assert named.apply(SearchRequest("x")).filters == {} and "p0003" not in named.removed
    concept_only = read("p0003 dress", tokens=tokens("<p0003>"), ignore=["id"])  # its chip dropped
    assert concept_only.pins == () and concept_only.text == "<p0003> dress"
    id_only = read("p0003", tokens=tokens("<p0003>"), ignore=["concept:<p0003>"])  # the concept's chip dropped
    assert id_only.apply(SearchRequest("x")).filters == {"product_id": ["p0003"]}


def test_a_concept_named_by_a_catalog_word_reads_both_ways_unless_bracketed_or_dropped():
    registered = tokens("<aurora>")
    config = QueryConfig(concept_word_reading="both")
    both = understand("Aurora dotted mug", WORDS, registered, config)  # "Aurora Dotted Mug" is sold: concept and word
    assert both.text == "<aurora> dotted mug" and both.lexical_words == {"<aurora>": "Aurora"}
    assert both.lexical_text(both.text) == "Aurora dotted mug"  # what BM25 searches
    assert any("searching both" in n and "<aurora> for the concept alone" in n for n in both.notes)
    assert both.to_json()["lexical_words"] == {"<aurora>": "Aurora"}
    bracketed = understand("<Aurora> dotted mug", WORDS, registered, config)  # brackets: the concept alone
    assert bracketed.text == "<aurora> dotted mug" and bracketed.lexical_words == {}
    word = understand("Aurora dotted mug", WORDS, registered, config, ["concept:<aurora>"])  # "search the word"
    assert word.text == "Aurora dotted mug" and word.lexical_words == {}
    assert [c.kind for c in word.constraints] == ["facet", "facet"]  # dotted, mug
    unknown = understand("newcomer mug", WORDS, tokens("<newcomer>"), config)  # no catalog word: the concept
    assert unknown.lexical_words == {} and unknown.text == "<newcomer> mug"


@pytest.mark.parametrize("reading, text, kept", [
    ("both", "aurora mug", True), ("both", "aurora on a beach", True),
    ("name", "aurora dotted mug", True), ("name", "a dotted aurora", False), ("name", "aurora mug", False),
    ("name", "the aurora striped", True),  # "Aurora Striped Dress": the word with the one after it
    ("name-word", "aurora dotted mug", False), ("name-word", "aurora mug", False),
    ("concept", "aurora dotted mug", False),
])
def test_concept_word_readings(reading, text, kept):
    found = understand(text, WORDS, tokens("<aurora>"), QueryConfig(concept_word_reading=reading))
    assert bool(found.lexical_words) == kept
    word = reading == "name-word" and "dotted" in text  # within a product-name phrase: the words alone
    assert ("<aurora>" not in found.text) == word and not any(c.kind == "concept" for c in found.constraints) == word
    said = "searching the words" if word else "searching both" if kept else "searching the concept"
    assert any(said in n for n in found.notes)


def test_name_word_reading_keeps_the_concepts_own_phrasing():
    words = CatalogWords.from_payloads([{"product_id": "p1", "title": "Aurora Dress", "category": "dress"}], CFG)
    config = QueryConfig(concept_word_reading="name-word")
    dress = TokenSet([CustomToken("<aurora>", torch.zeros(1, 8), TokenMeta(parent="dress", backbone_id="t"))])
    mug = TokenSet([CustomToken("<aurora>", torch.zeros(1, 8), TokenMeta(parent="mug", backbone_id="t"))])
    assert understand("aurora dress on a beach", words, dress, config).text == "<aurora> dress on a beach"
    assert understand("aurora dresses", words, dress, config).text == "<aurora> dresses"
    assert understand("aurora dress on a beach", words, mug, config).text == "aurora dress on a beach"


def test_an_unknown_concept_word_reading_names_the_choices():
    with pytest.raises(QueryError, match=r"concept_word_reading is 'word'; use one of \['both', 'name', 'name-word', 'concept'\]"):
        QueryConfig(concept_word_reading="word")


def test_facet_values_named_beside_a_price_or_negation_are_boosted_not_filtered():
    from engine.merch import shape
    from engine.store import Hit
    from engine.store.hybrid import Group
    from engine.query.understood_rules import understood_rules

    assert read("red dress").boost == {} and understood_rules(read("red dress"), CFG) == []  # nothing hard typed
    found = read("red dress under 60")
    assert found.boost == {"category": "dress", "attributes.colour": "red"}
    assert read("striped mug not pink").boost == {"category": "mug", "attributes.pattern": "striped"}
    assert found.apply(SearchRequest("x")).filters == {}  # not a filter: the other categories stay
    rules = understood_rules(found, CFG)

    def card(pid, category, colour, score):
        payload = {"product_id": pid, "category": category, "attributes": {"colour": colour}}
        return Group(pid, [Hit(pid, score, payload)])

    ranked = [card("a", "mug", "red", 0.9), card("b", "dress", "blue", 0.8), card("c", "dress", "red", 0.1),
              card("d", "mug", "blue", 0.95)]  # both named first, then the category alone, the colour alone
    assert [str(g.key) for g in shape(ranked, len(ranked), rules).products] == ["c", "b", "a", "d"]
    assert understood_rules(found, QueryConfig(named_facet_boost=0)) == []


def test_ignored_keys_leave_the_text_as_typed():
    found = read("red dress under 60 not pink", ignore=["price", "not:pink"])
    assert found.text == "red dress under 60 not pink"
    assert [c.kind for c in found.constraints if c.hard] == []


def test_words_are_only_tidied_where_a_phrase_was_taken_out():
    assert read("looking for a mug in pink, stripes").text == "looking for a mug in pink, stripes"
    assert read("looking for a mug under 20").text == "looking for a mug"


def test_word_forms():
    assert {"stripes", "striped"} <= word_forms("striped") and {"dots"} <= word_forms("dotted")
    assert {"tshirt", "t shirt", "t-shirts"} <= word_forms("t-shirt")


@pytest.fixture(scope="module")
def service(tiny, tmp_path_factory, store_config):
    store = open_store(store_config(tmp_path_factory.mktemp("store")))
    load(store, "shop-v1", tiny)
    store.set_alias("products", "shop-v1")
    meta = TokenMeta(parent="dress", backbone_id=tiny.id, attributes=["red"])
    registered = TokenSet([CustomToken("<aurora>", torch.randn(2, tiny.text_width) * 0.02, meta)])
    yield QueryService(tiny, store, registered, None, CONFIG)
    store.close()


def prices(response):
    return [p.photos[0].payload["price"] for p in response.products]


def test_service_applies_price_and_negation_and_says_so(service):
    typed = service.search(SearchRequest("dress under 60", limit=PRODUCTS, understand=False))
    assert max(prices(typed)) > 60  # without understanding the words are only words
    read_ = service.search(SearchRequest("dress under 60", limit=PRODUCTS))
    assert read_.products and max(prices(read_)) <= 60
    assert read_.interpretation.text == "dress"
    assert read_.to_json()["interpretation"]["constraints"][0]["label"] == "price under 60"
    green = service.search(SearchRequest("teapot not green", limit=PRODUCTS))
    assert green.products and all(p.photos[0].payload["attributes"]["colour"] != "green" for p in green.products)
    dropped = service.search(SearchRequest("teapot not green", limit=PRODUCTS, ignore=["not:green"]))
    assert any(p.photos[0].payload["attributes"]["colour"] == "green" for p in dropped.products)


def test_service_finds_identifiers_first(service):
    for pid in ("p7", "P13", "p20"):
        assert products(service.search(SearchRequest(pid)))[0] == pid.lower()
    assert products(service.search(SearchRequest("p20-"))) == ["p20"]  # a partial photo id: a prefix


def test_service_reads_concept_names_as_tokens(service):
    found = service.search(SearchRequest("Aurora dress on a beach"))  # "<name> <its parent>": the concept
    assert found.tokens == ["<aurora>"] and found.retrieval == "dense"
    bracketed = service.search(SearchRequest("<aurora> dress on a beach"))  # the token typed: the concept alone
    assert bracketed.tokens == ["<aurora>"] and bracketed.retrieval == "dense"
    word = service.search(SearchRequest("Aurora dress on a beach", ignore=["concept:<aurora>"]))
    assert word.tokens == [] and any("<aurora> to use the custom token" in n for n in word.notes)


def test_a_concept_named_by_a_catalog_word_still_finds_the_products_named_with_it(tiny, service):
    found = service.search(SearchRequest("Aurora Plain Teapot", limit=PRODUCTS))  # p8 (rows(): LINES[p % 7])
    assert found.tokens == [] and products(found)[0] == "p8"  # name-word: a product-name phrase, the words
    assert any("here part of a product name" in n for n in found.notes)
    both = QueryService(tiny, service.store, service.current_tokens(), None,
                        dataclasses.replace(CONFIG, concept_word_reading="both"))
    found = both.search(SearchRequest("Aurora Plain Teapot", limit=PRODUCTS))
    assert found.tokens == ["<aurora>"] and found.retrieval == "hybrid" and "p8" in products(found)[:3]
    assert found.interpretation.lexical_words == {"<aurora>": "Aurora"}
    alone = QueryService(tiny, service.store, service.current_tokens(), None,
                         dataclasses.replace(CONFIG, concept_word_reading="concept"))
    concept = alone.search(SearchRequest("Aurora Plain Teapot", limit=PRODUCTS))
    assert concept.tokens == ["<aurora>"] and concept.retrieval == "dense"
    word = service.search(SearchRequest("Aurora Plain Teapot", limit=PRODUCTS, ignore=["concept:<aurora>"]))
    assert word.tokens == [] and word.retrieval == "hybrid" and products(word)[0] == "p8"


def test_a_concept_named_like_a_product_id_ranks_that_product_first(tiny, service):
    meta = TokenMeta(parent="backpack", backbone_id=tiny.id, attributes=["green"])
    registered = TokenSet([CustomToken("<p7>", torch.randn(2, tiny.text_width) * 0.02, meta)])
    both = QueryService(tiny, service.store, registered, None, CONFIG)
    found = both.search(SearchRequest("p7", limit=PRODUCTS))
    assert found.tokens == ["<p7>"] and products(found)[0] == "p7" and len(products(found)) > 1  # not filtered
    assert found.merch == []  # understanding's own pin is not reported as a merchandising rule
    assert [c.key for c in found.interpretation.constraints] == ["concept:<p7>", "id"]  # two chips
    concept = both.search(SearchRequest("p7", limit=PRODUCTS, ignore=["id"]))
    assert concept.tokens == ["<p7>"] and concept.interpretation.pins == ()


def test_named_values_beside_a_price_rank_first_and_other_categories_stay(service):
    green_dresses = {"p1", "p10", "p19"}  # rows(): colour p % 3, category (p // 3) % 3
    found = service.search(SearchRequest("Yarrow green dress under 150", limit=PRODUCTS, facets=True))
    assert set(products(found)[:3]) == green_dresses
    assert "p7" in products(found)  # the Yarrow green backpack: after them, not filtered away
    related = {p.product_id for p in found.products if p.related}
    # but the boost only orders: the backpack stays a related item, out of the count and the facets (issue 25's
    # "counts and facets describe the list": "red dress under 40" counted red mugs as matching)
    assert "p7" in related and set(found.facets.values["category"]) == {"dress"}
    assert found.facets.products == len(found.products) - len(related)


def test_catalog_words_follow_the_collection(tiny, tmp_path, make_store_config):
    with open_store(make_store_config("embedded", tmp_path / "store")) as store:
        _follow(store, tiny)


def _follow(store, tiny):
    load(store, "shop-v1", tiny)
    now = [0.0]
    source = CatalogSource(store, QueryConfig(collection="shop-v1", catalog_refresh_s=10), clock=lambda: now[0])
    words = source.get()
    assert set(words.facets["colour"]) == {"purple", "green", "orange"} and words.products == PRODUCTS
    dresses = {r["product_id"] for r in rows() if r["category"] == "dress"}
    assert words.facets["category"]["dress"] == len(dresses) < 3 * len(dresses)  # products, not photos
    row = {"id": "n1-0", "product_id": "n1", "category": "dress", "price": 9.0, "title": "New Dress",
           "attributes": {"colour": "teal"}}
    store.upsert("shop-v1", [Point(point_id("n1-0"), np.ones(tiny.embed_dim, np.float32), row)])
    assert source.get() is words  # within the refresh interval: the words read last
    now[0] = 11.0
    assert source.get() is words  # the change is re-read in the background: the words read last meanwhile
    source.wait()
    assert "teal" in source.get().facets["colour"] and source.version == 2
    now[0] = 22.0
    assert source.get().facets["colour"] and source.version == 2  # unchanged collection: not read again


def test_suggestions_prefix_fuzzy_words_and_concepts():
    from engine.query.suggest import SuggestIndex

    index = SuggestIndex(WORDS, ["newcomer"])
    first = index.suggest("mu", 5)[0]
    assert (first.text, first.kind, first.count) == ("mug", "category", WORDS.facets["category"]["mug"])
    assert [s.text for s in index.suggest("drss", 3)][:1] == ["dress"]  # one edit
    assert index.suggest("pink m", 3)[0].query == "pink mug"  # the last word completed, the others kept
    assert index.suggest("NEW", 3)[0].kind == "concept"
    assert "Aurora Striped Dress" in [s.text for s in index.suggest("dre", 8) if s.kind == "name"]  # a word start
    # a short prefix's fuzzy matches keep its first letter: "red" is one edit from "ped" but no typo of it
    assert "red" not in [s.text for s in index.suggest("ped", 8)]
    assert "pink" in [s.text for s in index.suggest("pik", 8)]  # a typo after the first letter is still caught
    assert index.suggest("", 5) == [] and index.suggest("zzzz", 5) == []


def test_suggestions_offer_what_the_shops_synonyms_map_to():
    from engine.merch import Synonym
    from engine.query.suggest import SuggestIndex

    index = SuggestIndex(WORDS, [])
    synonyms = [Synonym.parse("cup => mug"), Synonym.parse("tee, t-shirts"), Synonym.parse("frock => gown")]
    (cup,) = index.synonyms("cup", synonyms)
    assert (cup.text, cup.kind, cup.count, cup.query) == ("mug", "synonym", WORDS.facets["category"]["mug"], "mug")
    assert [s.query for s in index.synonyms("cu", synonyms)] == ["mug"]  # the term begun
    assert [s.query for s in index.synonyms("pink te", synonyms)] == ["pink t-shirt"]  # a plural form, others kept
    assert index.synonyms("mug", synonyms) == []  # one-way: mug does not search cup
    assert index.synonyms("frock", synonyms) == []  # what it maps to is not in the catalog: nothing to offer

