"""The relevance benchmark's own parts: query generation from a world, typos, graded metrics, fusion specs."""
import random

import pytest
from rapidfuzz.distance import OSA

from bench.relevance import BenchQuery, make_queries, metrics, misspell, parse_fusion, repeat_share
from engine.store import Fusion


def test_misspell_puts_one_edit_in_each_long_word():
    rng = random.Random(0)
    for text in ["purple dotted dress on a beach", "Yarrow Zigzag Teapot", "red mug by the sea"]:
        typo = misspell(text, rng)
        for word, bad in zip(text.split(), typo.split()):
            assert OSA.distance(word, bad) == (1 if len(word) >= 4 else 0), (word, bad)


def test_metrics_are_graded_per_product():
    q = BenchQuery("attributes", "purple dotted dress", {"a": 2, "b": 2, "c": 1})
    perfect = metrics(q, ["a", "b", "c", "x"], ["a", "a", "b"])
    assert perfect["ndcg10"] == pytest.approx(1.0) and perfect["mrr"] == 1.0 and perfect["r10"] == 1.0
    assert perfect["repeat12"] == 0.0 and perfect["repeat12_photos"] == pytest.approx(1 / 3)
    late = metrics(q, ["x", "c", "y", "b"], [])
    assert late["mrr"] == 0.25 and late["r10"] == 0.5 and 0 < late["ndcg10"] < 0.5
    assert repeat_share(["a", "b", "a", "a"]) == 0.5


def test_queries_come_from_the_world_with_their_relevant_products():
    from world.build import make_world
    from world.catalog import catalog_rows

    world = make_world(3)
    rows = catalog_rows(world)
    queries = make_queries(world, rows, 5, seed=3)
    assert [q.kind for q in queries[:2]] == ["name", "name+typo"] and len(queries) == 30
    assert queries == make_queries(world, rows, 5, seed=3)  # seeded
    titles = {r["product_id"]: r["title"] for r in rows}
    for q in queries:
        assert q.grades and q.top in (2, 3)
        if q.kind == "name":
            assert all(titles[p].startswith(q.text) for p in q.grades)
        if q.kind == "attributes":
            colour = q.text.split()[0]
            assert all(r["attributes"]["colour"] == colour for r in rows if q.grades.get(r["product_id"]) == 2)


def test_fusion_specs():
    assert parse_fusion("rrf:60:1:2") == Fusion("rrf", 60, (1.0, 2.0))
    assert parse_fusion("dbsf") == Fusion("dbsf")
    with pytest.raises(SystemExit, match="rrf:K"):
        parse_fusion("max")
