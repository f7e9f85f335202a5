"""bench/speller.py at a tiny size: every figure is there, the baseline index is symspellpy's, and the world-0 cases
show the speller's decisions (real words kept, plurals in the catalog's form on the dense side only)."""
from bench.speller import SymSpellIndex, run, short_words
from engine.spelling_index import DeletionIndex


def test_the_bench_reports_both_indexes_cpu_and_wall_and_the_cases():
    figures = run(words=600, typos=20, old_typos=2, seed=0)
    for name in ("deletion_index", "symspellpy"):
        index = figures["index"][name]
        assert index["build"]["cpu_s"] >= 0 and index["closest"]["n"] > 0
        assert {"p95_ms", "cpu_p95_ms", "mean_ms", "cpu_mean_ms"} <= set(index["closest"])
    assert figures["build_s"]["new_update_100_words_cpu"] >= 0
    cases = {c["query"]: c for c in figures["cases_world0"]}
    assert cases["cat bowl"]["new_lexical"] == cases["cat bowl"]["new_dense"] == "cat bowl"
    assert cases["red dresses"]["new_lexical"] == "red dresses" and cases["red dresses"]["new_dense"] == "red dress"


def test_the_baseline_and_the_new_index_agree_where_the_distances_do():
    words = ["dress", "backpack", "black", "lamp", "lama", "teapot", "trousers", "sneaker"]
    new, old = DeletionIndex(words, 2, 7), SymSpellIndex(words, 2, 7)
    for typed in ("drsss", "bakcpack", "lamx", "teapto", "trousres", "snaeker", "zzzz"):
        assert new.closest(typed, 2) == old.closest(typed, 2), typed


def test_the_short_word_figures_compare_the_configs_on_the_same_draws():
    figures = short_words([0])
    before, kept, both = (figures[k]["total"] for k in ("before", "letters_kept", "letters_kept_and_nothing_matches"))
    assert before["typos"] == kept["typos"] == both["typos"] > 100 and before["foreign_typos"] > 100
    for t in (before, kept, both):
        assert t["right"] + t["wrong"] + t["left"] == t["typos"]
    assert before["right"] < kept["right"] <= both["right"]  # the rules correct more two-typo short words
