"""The shopper kinds of the relevance benchmark (bench/relevance_shopper.py): generated from a world, seeded, and
their constraint sets agree with what query understanding reads out of the text."""
from rapidfuzz.distance import OSA

from bench.relevance_shopper import CONSTRAINT_KINDS, RANKED_KINDS, make_shopper_queries, two_typos
from engine.query.config import QueryConfig
from engine.query.understand import CatalogWords, understand
from engine.tokens import TokenSet


def test_shopper_queries_come_from_the_world_and_match_what_understanding_reads():
    import random

    from world.build import make_world
    from world.catalog import catalog_rows

    world = make_world(3)
    rows = catalog_rows(world)
    queries = make_shopper_queries(world, rows, 6, seed=3)
    assert queries == make_shopper_queries(world, rows, 6, seed=3)  # seeded
    kinds = {q.kind for q in queries}
    assert all(q.ok for q in queries if q.kind in CONSTRAINT_KINDS)  # scorable: min(12, R) >= 1
    assert set(CONSTRAINT_KINDS) <= kinds and kinds - set(CONSTRAINT_KINDS) <= set(RANKED_KINDS)
    price = {r["product_id"]: r["price"] for r in rows}
    category = {r["product_id"]: r["category"] for r in rows}
    config = QueryConfig()
    words = CatalogWords.from_payloads(rows, config)
    for q in queries:
        if q.kind not in ("price", "price_range"):
            continue
        found = understand(q.text, words, TokenSet(), config)
        (c,) = [c for c in found.constraints if c.kind == "price"]
        meets = {pid for pid in price if (c.min_price is None or price[pid] >= c.min_price)
                 and (c.max_price is None or price[pid] <= c.max_price)}
        named = {category[pid] for pid in q.ok}
        assert q.ok and q.ok == {pid for pid in meets if category[pid] in named}, q.text
    assert OSA.distance("backpack", two_typos("backpack", random.Random(0))) == 2
    identifiers = [q for q in queries if q.kind == "identifier"]
    assert identifiers and all(q.grades == {q.text: 3} for q in identifiers)


def test_concepts_renamed_by_catalog_words_keep_their_vectors_and_queries():
    import torch

    from bench.relevance import BenchQuery, name_of
    from bench.relevance_shopper import catalog_word_concepts
    from engine.tokens import CustomToken, TokenMeta
    from world.build import make_world
    from world.catalog import catalog_rows

    rows = catalog_rows(make_world(3))
    pids = sorted({r["product_id"] for r in rows})[:2]
    tokens = TokenSet([CustomToken(f"<{p}>", torch.full((1, 4), float(i)), TokenMeta(parent="dress", backbone_id="t"))
                       for i, p in enumerate(pids)])
    features = {f"<{p}>": torch.full((2, 4), float(i)) for i, p in enumerate(pids)}
    token_qs = [BenchQuery("token", f"<{p}> dress on a beach", {p: 3}) for p in pids]
    renamed, photos, queries, words = catalog_word_concepts(tokens, features, token_qs, rows)
    assert len(set(words.values())) == 2  # one ordinary word per concept, none a facet value or in its own name
    for i, p in enumerate(pids):
        word = words[f"<{p}>"]
        own = {w.lower() for r in rows if r["product_id"] == p for w in name_of(r["title"]).split()}
        assert word not in own and any(word in name_of(r["title"]).lower().split() for r in rows)
        assert torch.equal(renamed.get(f"<{word}>").vectors, tokens.get(f"<{p}>").vectors)
        assert torch.equal(photos[f"<{word}>"], features[f"<{p}>"])
        typed = {q.kind: q.text for q in queries if q.grades == {p: 3}}
        assert typed == {"concept_catalog_word": f"{word} dress on a beach",
                         "concept_catalog_word_bracketed": f"<{word}> dress on a beach"}
        plain = [q for q in queries if q.kind == "word_meant" and word in q.text.lower().split()]
        assert plain and all(set(q.grades.values()) == {3} for q in plain)


def test_only_the_concept_word_kinds_need_the_token_cache(capsys):
    import pytest

    from bench.relevance_shopper import main

    with pytest.raises(SystemExit) as e:
        main(["--only", "concept_catalog_word"])
    assert e.value.code == 2 and "add --token-cache DIR" in capsys.readouterr().err
