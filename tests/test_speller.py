"""The speller (engine/spelling.py): real words are never rewritten, typos are, confident ones automatically and on
both sides, unsure ones only as "Did you mean", spelling variants ("tshirt") on the lexical side only."""
import pytest

from engine.spelling import Speller
from engine.vocabulary import Vocabulary

CATALOG = [
    {"title": "Aurora Striped Dress", "category": "dress", "attributes": {"colour": "red"}},
    {"title": "Basil Plain Mug", "category": "mug", "attributes": {"colour": "pink"}},
    {"title": "Cascade Sneakers", "category": "sneaker", "attributes": {"colour": "black"}},
    {"title": "Dune Backpack", "category": "backpack"},
    {"title": "Ember Cap", "category": "cap"},
    {"title": "Fjord Coat", "category": "coat"},
    {"title": "Green T-Shirt", "category": "t-shirt"},
    {"title": "Yarrow Bowl", "category": "bowl"},
    {"title": "Quokkaberry Parasol", "category": "parasol"},
    {"title": "Coffee Lamp", "category": "lamp"},
    {"title": "Lama Throw", "category": "throw"},
]


@pytest.fixture(scope="module")
def speller():
    vocabulary = Vocabulary()
    for row in CATALOG * 3:
        vocabulary.add(row)
    return Speller(vocabulary, extra_words=["newcomer"])


@pytest.mark.parametrize("query", ["cat bowl", "milk jug", "goat", "cape", "dresses", "Dresses", "sneaker",
                                   "striped mugs", "backpacks on a beach", "red coats"])
def test_real_words_and_plurals_are_never_rewritten_or_suggested(speller, query):
    found = speller.correct(query)
    assert (found.corrected, found.dense, found.changes, found.suggestion) == (query, query, (), None)


def test_plurals_are_known_through_the_bm25_analyser(speller):
    # "dresses" is no catalog word, but its BM25 stem is: the lexical side matches it as typed
    assert "dresses" not in speller.counts and speller.known("dresses") and speller.known("mugs")
    assert not speller.known("drsss")


@pytest.mark.parametrize("typed,fixed", [
    ("drsss", "dress"), ("sneekers", "sneakers"), ("backpak", "backpack"),
    ("quokaberri parasol", "quokkaberry parasol"),  # two typos in one word of a product name
    ("Drsss on a beach", "Dress on a beach"), ("<aurora> drsss", "<aurora> dress"),
    ("newcomr dress", "newcomer dress"),  # a concept name joined the vocabulary (extra_words)
])
def test_confident_typos_are_corrected_on_both_sides(speller, typed, fixed):
    found = speller.correct(typed)
    assert found.corrected == found.dense == fixed and found.changed and found.suggestion is None


@pytest.mark.parametrize("typed,lexical,changes", [
    ("tshirt", "t-shirt", [("tshirt", "t-shirt")]),
    ("green tshirt", "green t-shirt", [("tshirt", "t-shirt")]),
    ("t shirt", "t-shirt", [("t shirt", "t-shirt")]),
    ("coffeelamp", "coffee lamp", [("coffeelamp", "coffee lamp")]),
])
def test_compounds_are_split_and_joined_as_the_catalog_spells_them_on_the_lexical_side_only(
        speller, typed, lexical, changes):
    found = speller.correct(typed)
    assert found.corrected == lexical and list(found.changes) == changes
    assert found.dense == typed and found.suggestion is None  # CLIP reads the variant as typed


def test_an_unsure_correction_is_only_suggested(speller):
    # two edits from "sneakers", but "sneers" (English) is one edit away: not certain
    found = speller.correct("sneekrs")
    assert found.corrected == found.dense == "sneekrs" and not found.changed
    assert found.suggestion == "sneakers" and found.suggested == (("sneekrs", "sneakers"),)
    # "lamx": "lamp" and "lama" are one edit away, in as many rows: a race, so a suggestion
    race = speller.correct("black lamx")
    assert race.corrected == "black lamx" and race.suggestion in ("black lamp", "black lama")
    # a certain typo in the same query is still applied, and the suggestion builds on it
    both = speller.correct("drsss sneekrs")
    assert both.corrected == both.dense == "dress sneekrs" and both.suggestion == "dress sneakers"


def test_numbers_short_words_and_unrelated_words_stay(speller):
    for query in ["42", "xl", "zzyzx", "size 38"]:
        found = speller.correct(query)
        assert found.corrected == query and found.suggestion is None


def test_a_word_longer_than_any_catalog_word_is_left_alone_without_judging_it(speller):
    # a 100,000-letter "word" (tests/reliability/test_http_attacks.py sends one): judging it tried every compound
    # cut, memory quadratic in its length (24 GB); now it is left as typed, like any word over max_word_length
    word = "coffeemug" * 11_112
    found = speller.correct(f"red {word}")
    assert (found.corrected, found.changes, found.suggestion) == (f"red {word}", (), None)
    assert speller.correct("coffeemug").corrected == "coffee mug"  # a compound of ordinary length still splits
