"""The speller in the query service, on both store backends: corrections reach the lexical side; the dense side
keeps the text as typed unless the word is certainly a typo; a suggestion changes nothing and is returned as
"Did you mean"; registered concept names are words the speller knows."""
import json

import numpy as np
import pytest
import torch

from engine.lexical import embed_document
from engine.query import QueryConfig, QueryService, SearchRequest
from engine.query.retrieval import Retriever
from engine.store import Point, open_store, point_id
from engine.tokens import CustomToken, TokenMeta, TokenSet
from engine.vocabulary import Vocabulary, write_vocabulary

TITLES = ["Green T-Shirt", "Black Sneakers", "Striped Dress", "Plain Dress", "Dotted Mug"]


@pytest.fixture(scope="module")
def service(tiny, tmp_path_factory, store_config):
    store = open_store(store_config(tmp_path_factory.mktemp("store")))
    rng = np.random.default_rng(0)
    store.create_collection("shop-1", dim=tiny.embed_dim, payload_indexes={"product_id": "keyword"})
    vocabulary, points = Vocabulary(), []
    for i, title in enumerate(TITLES):
        row = {"id": f"p{i}", "product_id": f"p{i}", "title": title, "category": title.split()[-1].lower()}
        vocabulary.add(row)
        points.append(Point(point_id(row["id"]), rng.standard_normal(tiny.embed_dim).astype(np.float32), row,
                            embed_document(row)))
    store.upsert("shop-1", points)
    write_vocabulary(store, "shop-1", vocabulary)
    store.set_alias("products", "shop-1")
    meta = TokenMeta(parent="dress", backbone_id=tiny.id, attributes=["red"])
    tokens = TokenSet([CustomToken("<newcomer>", torch.randn(2, tiny.text_width) * 0.02, meta)])
    svc = QueryService(tiny, store, tokens, None, QueryConfig(text_runtime="torch", steps=2, gair=False))
    lexical: list[str] = []
    page = Retriever.page  # every retriever of the search (Retriever.naming makes one per query)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Retriever, "page", lambda self, request, vector, text, **kw: (
            lexical.append(text), page(self, request, vector, text, **kw))[1])
        svc.lexical_seen = lexical
        yield svc
    store.close()


def search(service, query):
    response = service.search(SearchRequest(query))
    return response, service.lexical_seen[-1]


def test_a_certain_typo_is_corrected_on_both_sides(service):
    response, lexical = search(service, "drsss")
    assert lexical == "dress" and response.prompt == "dress"
    assert response.correction.changes == [("drsss", "dress")] and response.correction.suggestion is None


def test_a_spelling_variant_reaches_the_lexical_side_only(service):
    response, lexical = search(service, "green tshirt")
    assert lexical == "green t-shirt" and response.prompt == "green tshirt"
    assert response.correction.corrected == "green t-shirt" and response.correction.dense == "green tshirt"


def test_a_suggestion_changes_nothing_and_is_in_the_json(service):
    # "sneekrs": two edits from "sneakers", but "sneers" is an English word one edit away
    response, lexical = search(service, "black sneekrs")
    assert lexical == "black sneekrs" and response.prompt == "black sneekrs"
    body = json.loads(json.dumps(response.to_json()))["correction"]
    assert body["suggestion"] == "black sneakers" and body["changes"] == [] and body["corrected"] == "black sneekrs"
    assert body["suggested"] == [["sneekrs", "sneakers"]]


def test_a_query_that_would_match_nothing_as_typed_searches_its_suggestion(service):
    # no word of "sneekrs" is the catalog's: "Showing results for sneakers", on both sides, "search instead" offered
    response, lexical = search(service, "sneekrs")
    assert lexical == "sneakers" and response.prompt == "sneakers"
    body = json.loads(json.dumps(response.to_json()))["correction"]
    assert body["changes"] == [["sneekrs", "sneakers"]] and body["suggestion"] is None
    exact = service.search(SearchRequest("sneekrs", correct=False))  # the "search instead for" link
    assert exact.correction is None and service.lexical_seen[-1] == "sneekrs"


def test_real_words_are_not_rewritten_on_either_side(service):
    for query in ("cat bowl", "milk jug", "goat", "cape"):
        response, lexical = search(service, query)
        assert response.correction is None and lexical == query and response.prompt.endswith(query)


def test_a_plural_reaches_clip_in_the_catalogs_form_and_bm25_as_typed_and_is_not_shown(service):
    # CLIP learnt the catalog's words ("dress"); BM25's stemmer matches "dresses" as typed; nothing to show
    response, lexical = search(service, "striped dresses")
    assert lexical == "striped dresses" and response.prompt.endswith("striped dress")
    assert response.correction is None and json.loads(json.dumps(response.to_json()))["correction"] is None


def test_registered_concept_names_are_words(service):
    response, lexical = search(service, "newcomr dress")
    assert lexical == "newcomer dress" and response.correction.changes == [("newcomr", "newcomer")]


def test_while_the_first_speller_is_built_a_search_runs_as_typed_and_says_so(service, monkeypatch):
    from engine.query.prepare import SPELLER_WARMING

    class Warming:  # SpellingSource while a large catalog's first build runs past spelling_first_wait_s
        warming = True

        def get(self, collection=None):
            return None

    monkeypatch.setattr(service, "spelling", Warming())
    response, lexical = search(service, "drsss")
    assert lexical == "drsss" and response.correction is None and SPELLER_WARMING in response.notes
