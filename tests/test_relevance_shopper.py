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
