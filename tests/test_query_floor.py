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
