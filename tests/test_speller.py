"""The speller (engine/spelling.py): real words are never rewritten, typos are, confident ones automatically and on
both sides, unsure ones only as "Did you mean", spelling variants ("tshirt") on the lexical side only."""
import pytest

from engine.spelling import Speller, SpellingConfig
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


def speller_vocabulary() -> Vocabulary:
    vocabulary = Vocabulary()
    for row in CATALOG * 3:
        vocabulary.add(row)
    return vocabulary


@pytest.fixture(scope="module")
def speller():
    return Speller(speller_vocabulary(), extra_words=["newcomer"])


@pytest.mark.parametrize("query,dense", [
    ("cat bowl", "cat bowl"), ("milk jug", "milk jug"), ("goat", "goat"), ("cape", "cape"), ("sneaker", "sneaker"),
    # plurals: the lexical side matches them as typed; the dense side reads the catalog's own form (CLIP learnt it)
    ("dresses", "dress"), ("Dresses", "Dress"), ("striped mugs", "striped mug"),
    ("backpacks on a beach", "backpack on a beach"), ("red coats", "red coat")])
def test_real_words_and_plurals_are_never_rewritten_or_suggested(speller, query, dense):
    found = speller.correct(query)
    assert (found.corrected, found.changes, found.suggested, found.suggestion) == (query, (), (), None)
    assert found.dense == dense and not found.changed  # the catalog's form is analysis: never shown as a change


def test_the_dense_side_reads_the_catalogs_most_frequent_form_of_a_stem():
    vocabulary = Vocabulary()
    for row in [{"title": "Dotted Mug"}] * 3 + [{"title": "Dots Lamp"}]:
        vocabulary.add(row)
    speller = Speller(vocabulary)
    assert speller.catalog_form("dot") == "dotted" and speller.catalog_form("dots") is None  # "dots" is a row's word
    found = speller.correct("mug with dot")
    assert found.dense == "mug with dotted" and found.corrected == "mug with dot" and found.suggestion is None


def test_plurals_are_known_through_the_bm25_analyser(speller):
    # "dresses" is no catalog word, but its BM25 stem is: the lexical side matches it as typed
    assert "dresses" not in speller.counts and speller.known("dresses") and speller.known("mugs")
    assert not speller.known("drsss")


@pytest.mark.parametrize("typed,fixed", [
    ("drsss", "dress"), ("sneekers", "sneakers"), ("backpak", "backpack"),
    ("quokaberri parasol", "quokkaberry parasol"),  # two typos in one word of a product name
    ("Drsss on a beach", "Dress on a beach"), ("<aurora> drsss", "<aurora> dress"),
    ("newcomr dress", "newcomer dress"),  # a concept name joined the vocabulary (extra_words)
    ("strpd dress", "striped dress"), ("bakpak", "backpack"),  # a typo under 6 letters of a long word: two edits
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
    found = speller.correct("black sneekrs")
    assert found.corrected == found.dense == "black sneekrs" and not found.changed
    assert found.suggestion == "black sneakers" and found.suggested == (("sneekrs", "sneakers"),)
    # "lamx": "lamp" and "lama" are one edit away, in as many rows: a race, so a suggestion
    race = speller.correct("black lamx")
    assert race.corrected == "black lamx" and race.suggestion in ("black lamp", "black lama")
    # a certain typo in the same query is still applied, and the suggestion builds on it
    both = speller.correct("drsss sneekrs")
    assert both.corrected == both.dense == "dress sneekrs" and both.suggestion == "dress sneakers"


@pytest.mark.parametrize("typed,searched", [
    ("sneekrs", "sneakers"), ("the sneekrs", "the sneakers"), ("<aurora> sneekrs", "<aurora> sneakers")])
def test_a_query_whose_words_would_match_nothing_searches_its_suggestion(speller, typed, searched):
    # "Showing results for": no word of the query is the catalog's, so as typed it would match nothing by its words
    found = speller.correct(typed)
    assert found.corrected == found.dense == searched and found.changed and found.suggestion is None
    # one catalog word in the query keeps it a suggestion (a stop word such as "the" is no catalog word)
    kept = speller.correct(f"coat {typed}")
    assert kept.corrected == f"coat {typed}" and kept.suggestion == f"coat {searched}"
    off = Speller(speller_vocabulary(), SpellingConfig(apply_when_nothing_matches=False)).correct(typed)
    assert off.corrected == typed and off.suggestion == searched
    race = speller.correct("lamx")  # "lamp" and "lama" in as many rows: the race's first is searched and shown
    assert race.corrected in ("lamp", "lama") and race.changes == (("lamx", race.corrected),)


def test_a_short_word_takes_two_edits_only_to_a_word_keeping_all_its_letters_but_one():
    vocabulary = Vocabulary()
    for row in [{"title": "Plain Dress"}, {"title": "Brick Lamp"}] * 3:
        vocabulary.add(row)
    speller = Speller(vocabulary)
    # "dxesx": two edits from "dress" but keeps only "des" of it (3 of 5 letters); "drsex" keeps "drse"
    assert speller.correct("desss").corrected == "dress"  # "desks" is one edit away, but as typed nothing matches
    assert speller.correct("plain desss").suggestion == "plain dress"  # the English rival keeps it a suggestion
    assert speller.correct("dxesx").corrected == "dxesx" and speller.correct("dxesx").suggestion is None
    off = Speller(vocabulary, SpellingConfig(short_word_letters_lost=-1))
    assert off.correct("desss").corrected == "desss" and off.correct("desss").suggestion is None


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


def test_a_new_vocabulary_version_updates_the_previous_speller_s_index():
    first = Vocabulary()
    for row in CATALOG:
        first.add(row)
    second = Vocabulary(dict(first.counts) | {"zanzibar": 2}, first.rows + 1)
    del second.counts["yarrow"]
    old = Speller(first)
    new = Speller(second, previous=old)
    assert new.correct("zanzibra lamp").corrected == "zanzibar lamp" and new.correct("yarow").corrected == "yarow"
    assert old.correct("yarow").corrected == "yarrow"  # the previous speller is unchanged (still serving)
    fresh = Speller(second)._index._buckets
    assert {k: sorted(v.split()) for k, v in new._index._buckets.items()} == {
        k: sorted(v.split()) for k, v in fresh.items()}
