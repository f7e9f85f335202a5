"""engine.query.fusion: side windows that end at a score boundary, and Qdrant's RRF / DBSF done in Python."""
import random

import pytest
from qdrant_client.http import models
from qdrant_client.hybrid.fusion import distribution_based_score_fusion, reciprocal_rank_fusion

from engine.query.fusion import fuse, side_window
from engine.store import Fusion, Hit


def hits(scores, prefix="p"):
    return [Hit(f"{prefix}{i:03d}", s, {}) for i, s in enumerate(scores)]


def fetcher(points):
    """fetch(n) as an engine would answer it: the best n, equal scores in an order of its own (shuffled)."""
    calls = []

    def fetch(n):
        calls.append(n)
        shuffled = points[:]
        random.Random(len(calls)).shuffle(shuffled)
        return sorted(shuffled, key=lambda h: -h.score)[:n]
    return fetch, calls


def test_a_window_never_ends_inside_a_run_of_equal_scores():
    points = hits([3.0, 2.0, 2.0, 1.0, 1.0, 1.0, 1.0, 0.5])
    fetch, _ = fetcher(points)
    assert [h.score for h in side_window(fetch, 4, 100)] == [3.0, 2.0, 2.0]  # the 1.0 run crosses the edge: out
    assert [h.score for h in side_window(fetch, 3, 100)] == [3.0, 2.0, 2.0]  # ends at a boundary: kept whole
    assert len(side_window(fetch, 20, 100)) == len(points)  # fewer than the window: all of them


def test_a_run_that_fills_the_window_is_taken_whole_up_to_most():
    points = hits([1.0] * 30 + [0.5] * 5)
    fetch, calls = fetcher(points)
    window = side_window(fetch, 10, 100)
    assert len(window) == 30 and {h.score for h in window} == {1.0} and calls == [11, 101]
    assert [h.id for h in window] == sorted(h.id for h in window)  # equal scores by id
    assert len(side_window(fetcher(points)[0], 10, 20)) == 10  # past `most`: the engine's 10


def test_rrf_ranks_ties_equally_whatever_order_the_engine_listed_them():
    dense = hits([0.9, 0.8, 0.7, 0.6])
    lexical = [Hit("p003", 2.0, {}), Hit("p001", 2.0, {}), Hit("p009", 1.0, {})]
    one, other = (fuse([dense, side], Fusion("rrf", 60)) for side in (lexical, [lexical[1], lexical[0], lexical[2]]))
    fused = {h.id: h.score for h in one}
    # 1 / (rank + k) with rank 1 for the best: both tied lexical points get rank 1 (1/60)
    assert fused["p001"] == pytest.approx(1 / 61 + 1 / 60) and fused["p003"] == pytest.approx(1 / 63 + 1 / 60)
    assert fused["p009"] == pytest.approx(1 / 62)  # rank 3: the two tied above it take ranks 1 and 2
    assert [(h.id, h.score) for h in one] == [(h.id, h.score) for h in other]


@pytest.mark.parametrize("method", ["rrf", "rrf-weighted", "dbsf"])
def test_fusion_is_qdrants_formula_on_lists_without_ties(method):
    rng = random.Random(7)
    dense = [Hit(f"d{i}", s, {}) for i, s in enumerate(sorted((rng.random() for _ in range(30)), reverse=True))]
    lexical = [Hit(f"d{i * 2}", s, {}) for i, s in enumerate(sorted((rng.uniform(0, 9) for _ in range(20)),
                                                                     reverse=True))]
    fusion = {"rrf": Fusion("rrf", 60), "rrf-weighted": Fusion("rrf", 60, (3.0, 1.0)), "dbsf": Fusion("dbsf")}[method]
    ours = {h.id: h.score for h in fuse([dense, lexical], fusion)}
    responses = [[models.ScoredPoint(id=i, version=0, score=h.score) for i, h in
                  enumerate(side) for i in [int(h.id[1:])]] for side in (dense, lexical)]
    if fusion.method == "rrf":
        theirs = reciprocal_rank_fusion(responses, limit=100, ranking_constant_k=60,
                                        weights=list(fusion.weights) if fusion.weights else None)
    else:
        theirs = distribution_based_score_fusion(responses, limit=100)
    assert ours == pytest.approx({f"d{p.id}": p.score for p in theirs})


def test_an_empty_side_fuses_to_the_other():
    dense = hits([0.9, 0.5])
    for method in ("rrf", "dbsf"):
        assert [h.id for h in fuse([dense, []], Fusion(method))] == ["p000", "p001"]
