"""The relevance floor of a price-sorted list (engine.query.floor): where each rule ends the list."""
import pytest

from engine.query import QueryConfig, QueryError
from engine.query.floor import kept, parse_rule

SCORES = [0.95, 0.93, 0.92, 0.90, 0.61, 0.60, 0.58, 0.30]  # best first: four matches, a drop, then weaker ones


def test_gap_ends_the_list_at_the_largest_drop():
    assert kept(SCORES, "gap") == 4
    assert kept([0.9, 0.5, 0.49, 0.48], "gap") == 1  # one clear match: a name, a custom token
    assert kept([1.0, 0.75, 0.5, 0.25], "gap") == 1  # even drops: the first of them


def test_z_keeps_the_scores_k_deviations_above_the_mean():
    assert kept(SCORES, "z:0") == 4  # mean 0.724, standard deviation 0.221
    assert kept(SCORES, "z:0.5") == 4  # >= 0.834
    assert kept(SCORES, "z:1") == 1  # >= 0.945
    assert kept(SCORES, "z:-1") == 7  # >= 0.502
    assert kept(SCORES, "z:10") == 1  # never less than the best product


def test_none_keeps_every_candidate_and_tiny_lists_stay_whole():
    assert kept(SCORES, "none") == len(SCORES)
    for rule in ("gap", "z:1", "none"):
        assert kept([], rule) == 0 and kept([0.5], rule) == 1


@pytest.mark.parametrize("spec", ["largest", "z", "z:", "z:many", "z:nan", "gap:2", ""])
def test_a_bad_rule_names_the_accepted_forms(spec):
    with pytest.raises(ValueError, match="gap, z:K, none"):
        parse_rule(spec)
    with pytest.raises(QueryError, match="sort_floor.*z:1.5"):
        QueryConfig(sort_floor=spec)


def _hit(pid: str, score: float, category: str, colour: str):
    from engine.store import Hit

    return Hit(f"{pid}-0", score, {"product_id": pid, "category": category, "attributes": {"colour": colour}})


def test_named_facets_count_every_product_having_them_and_drop_another_named_category_above_the_floor():
    from engine.query.candidates import select

    hits = [_hit("a", 0.95, "dress", "red"), _hit("b", 0.94, "mug", "red"),  # the gap floor keeps these two
            _hit("c", 0.50, "dress", "red"), _hit("d", 0.49, "dress", "blue"), _hit("e", 0.48, "mug", "red")]
    plain = select(hits, 100, "product_id", 3, "gap")
    assert [g.key for g in plain.products[:plain.matched]] == ["a", "b"]
    named = select(hits, 100, "product_id", 3, "gap", {"category": ["dress"], "attributes.colour": ["Red"]},
                   "category")
    # matches first (a above the floor, c having every named value), then the related items, each by relevance
    assert [g.key for g in named.products] == ["a", "c", "b", "d", "e"] and named.matched == 2
    colour_only = select(hits, 100, "product_id", 3, "gap", {"attributes.colour": ["red"]}, "category")
    assert [g.key for g in colour_only.products[:colour_only.matched]] == ["a", "b", "c", "e"]
    nothing = select(hits, 100, "product_id", 3, "gap", {"category": ["lamp"]}, "category")
    assert nothing.matched == 1 and [g.key for g in nothing.products] == ["a", "b", "c", "d", "e"]  # the best stays
    # words narrower than the named values (a product's name): the floor's products of the named category alone
    narrower = select(hits, 100, "product_id", 3, "gap", {"category": ["dress"], "attributes.colour": ["red"]},
                      "category", defines=False)
    assert [g.key for g in narrower.products] == ["a", "b", "c", "d", "e"] and narrower.matched == 1
