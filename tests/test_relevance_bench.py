"""The relevance benchmark's own parts: query generation from a world, typos, graded metrics, fusion specs."""
import random

import pytest
from rapidfuzz.distance import OSA

import argparse

from bench.relevance import (BenchQuery, make_queries, metrics, misspell, parse_floor, parse_fusion, repeat_share,
                             sort_queries, sorted_metrics)
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


def test_sorted_lists_are_scored_on_their_first_page_and_what_they_keep():
    q = BenchQuery("colour", "purple dress", {"a": 1, "b": 1, "c": 1, "d": 1})
    short = sorted_metrics(q, ["x", "a"])  # a cheap stranger first, one match kept of four
    assert short["p12"] == 0.5 and short["relevant_kept"] == 0.25 and short["top_kept"] == 0.25
    assert short["f"] == pytest.approx(2 * 0.5 * 0.25 / 0.75) and short["shown"] == 2
    whole = sorted_metrics(q, ["d", "c", "b", "a"])
    assert whole["p12"] == whole["relevant_kept"] == whole["f"] == 1.0
    assert sorted_metrics(q, [])["f"] == 0.0


def test_sort_queries_grade_every_product_of_the_category_or_colour():
    from world.build import make_world
    from world.vocab import CATEGORY_NOUNS

    category_of = {nouns[0]: category for category, nouns in CATEGORY_NOUNS.items()}
    world = make_world(3)
    queries = sort_queries(world, 5, seed=3)
    categories = [q for q in queries if q.kind == "category"]
    assert len(categories) == len({p.category for p in world.products}) and len(queries) == len(categories) + 5
    assert queries == sort_queries(world, 5, seed=3)  # seeded
    for q in queries:
        words = q.text.split()
        matching = {p.id for p in world.products if p.category == category_of[words[-1]]
                    and (q.kind == "category" or p.colour == words[0])}
        assert set(q.grades) == matching and set(q.grades.values()) == {1}


def test_floor_specs():
    assert [parse_floor(s) for s in ("gap", "none", "z:1.5")] == ["gap", "none", "z:1.5"]
    with pytest.raises(argparse.ArgumentTypeError, match="z:K"):
        parse_floor("1.5")


def test_fusion_specs():
    assert parse_fusion("rrf:60:1:2") == Fusion("rrf", 60, (1.0, 2.0))
    assert parse_fusion("dbsf") == Fusion("dbsf")
    with pytest.raises(SystemExit, match="rrf:K"):
        parse_fusion("max")


def test_custom_token_queries_come_from_the_quality_cache_and_reach_the_service(tiny, tmp_path):
    """Ours (first training seed) is found under the quality benchmark's own cache key, decoys are not; the
    queries name it with its parent word (and a scene of its query photos); the service composes it."""
    import torch

    from bench.quality import OURS, QualityConfig, Task, backbone_key, cache_path
    from bench.relevance import RelevanceConfig, compare, load_catalog, token_queries
    from engine.query import QueryConfig, QueryService
    from engine.store import StoreConfig, open_store
    from engine.tokens import CustomToken, TokenMeta, save_token
    from world.build import make_world
    from world.catalog import catalog_rows
    from world.vocab import CATEGORY_NOUNS, CONTEXTS

    world = make_world(3)
    pid, other = world.splits.heldout[:2]
    parent = CATEGORY_NOUNS[world.product(pid).category][0]
    key = backbone_key(tiny)
    qc = QualityConfig(backbone="tiny-random", world_seed=3, steps=5, cache=str(tmp_path))
    rng = torch.Generator().manual_seed(0)
    for task, steps in [(Task(0, pid, OURS), 5), (Task(1, pid, OURS), 5), (Task(0, other, "ti+ce"), 5),
                        (Task(0, other, OURS), 300)]:  # only the first is ours, first seed, these steps
        token = CustomToken(f"<{task.product_id}>", torch.randn(1, tiny.text_width, generator=rng),
                            TokenMeta(parent=parent, backbone_id=tiny.id, method=task.method))
        save_token(token, cache_path(QualityConfig(world_seed=3, steps=steps, cache=str(tmp_path)), task, key))
    assert cache_path(qc, Task(0, pid, OURS), key).is_file()

    custom = token_queries(world, tiny, RelevanceConfig(backbone="tiny-random", world_seed=3,
                                                        token_cache=str(tmp_path), token_steps=5, token_seed=0))
    assert custom.report["concepts"] == [pid] and custom.tokens.names() == [f"<{pid}>"]
    scenes = [CONTEXTS[world.photo(ph).context][0] for ph in world.splits.query[pid]]
    assert [(q.kind, q.text) for q in custom.queries] == [("token", f"<{pid}> {parent}")] + [
        ("token+scene", f"<{pid}> {parent} {s}") for s in scenes]
    assert all(q.grades == {pid: 3} for q in custom.queries)
    empty = token_queries(world, tiny, RelevanceConfig(backbone="tiny-random", world_seed=3,
                                                       token_cache=str(tmp_path), token_steps=5, token_seed=2))
    assert not empty.queries and "skipped" in empty.report["note"]

    # the concept's photos are in the indexed catalog; the service must compose the token for it to rank first:
    # its photos hold the composed query vector, a look-alike's the query with the token read as its parent word
    rows = catalog_rows(world)
    assert {r["id"] for r in rows if r["product_id"] == pid} == {ph.id for ph in world.photos_of(pid)}
    decoy = next(p.id for p in world.products if p.category == world.product(pid).category and p.id != pid)
    rows = [r for r in rows if r["product_id"] in (pid, decoy)]
    base = QueryConfig(text_runtime="torch", gair=False, max_limit=100)
    with open_store(StoreConfig(path=str(tmp_path / "store"))) as store:
        service = QueryService(tiny, store, custom.tokens, None, base)
        text = custom.queries[0].text
        composed, plain = service.composed_vectors(text, [1.0])[0], service.text_only_vector(text)
        assert not torch.allclose(composed, plain)
        vectors = torch.stack([composed if r["product_id"] == pid else plain for r in rows]).numpy()
        load_catalog(store, "products", rows, vectors, tiny.embed_dim)
        results = compare(tiny, store, custom.tokens, base, custom.queries, ("dbsf",))
    assert results["dense"]["token"]["mrr"] == 1.0 and results["dense"]["token"]["r10"] == 1.0
    assert set(results["lexical"]) == set(results["hybrid"]["dbsf"]) == {"token", "token+scene"}
    # the default retrieval (auto) sends token queries to the dense side; q(w) alone is measured beside it
    assert results["auto"]["token"] == results["dense"]["token"]
    assert set(results["dense_token_alone"]) == {"token", "token+scene"}
