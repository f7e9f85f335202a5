"""The speller's deletion index (engine/spelling_index.py): the nearest words within a few edits, exactly the ones a
brute-force scan finds, a swap next to another edit counted as two, and an index the garbage collector never walks."""
import gc
import random
import string

import pytest
from rapidfuzz.distance import DamerauLevenshtein

from engine.spelling_index import DeletionIndex, deletions

WORDS = ["dress", "dotted", "backpack", "black", "back", "lamp", "lama", "t-shirt", "teapot", "trousers",
         "quokkaberry", "zigzag", "striped"]


def test_the_nearest_words_and_their_distance():
    index = DeletionIndex(WORDS, max_edits=2, prefix_length=7)
    assert index.closest("drsss", 2) == (1, ["dress"])
    assert index.closest("lamx", 1) == (1, ["lama", "lamp"])
    assert index.closest("dotdt", 2) == (2, ["dotted"])  # delete + swap: optimal string alignment says 3
    assert index.closest("quokaberri", 2) == (2, ["quokkaberry"])  # past the indexed prefix
    assert index.closest("zzzzzz", 2) == (3, [])
    assert index.closest("dress", 1) == (2, [])  # the word itself is not its own neighbour


def test_it_agrees_with_a_brute_force_scan():
    rng = random.Random(0)
    words = sorted({"".join(rng.choice("abcdeklmnorst") for _ in range(rng.randint(3, 11))) for _ in range(3000)})
    index = DeletionIndex(words, max_edits=2, prefix_length=5)  # a short prefix: the truncated path is exercised
    for _ in range(300):
        word = rng.choice(words)
        for _ in range(rng.choice((1, 2))):
            i = rng.randrange(len(word))
            word = rng.choice([word[:i] + word[i + 1:], word[:i] + rng.choice(string.ascii_lowercase) + word[i:],
                               word[:i] + word[i + 1:i + 2] + word[i:i + 1] + word[i + 2:]])
        for limit in (1, 2):
            scan = {w: DamerauLevenshtein.distance(word, w) for w in words if w != word}
            best = min(scan.values())
            want = (best, sorted(w for w, d in scan.items() if d == best)) if best <= limit else (limit + 1, [])
            assert index.closest(word, limit) == want, (word, limit)


def test_the_index_is_invisible_to_the_garbage_collector():
    index = DeletionIndex(WORDS * 1, max_edits=2, prefix_length=7)
    assert not gc.is_tracked(index._buckets)  # a dict of strings: a full collection never walks it


def test_bad_arguments_name_the_fix():
    with pytest.raises(ValueError, match="raise prefix_length"):
        DeletionIndex(WORDS, max_edits=2, prefix_length=2)
    with pytest.raises(ValueError, match="no whitespace"):
        DeletionIndex(["t shirt"], max_edits=1, prefix_length=7)
    with pytest.raises(ValueError, match="larger max_edits"):
        DeletionIndex(WORDS, max_edits=1, prefix_length=7).closest("drss", 2)
    assert deletions("abc", 1) == {"abc", "bc", "ac", "ab"}


def test_an_updated_index_equals_one_built_from_scratch_and_leaves_the_old_one_alone():
    old = DeletionIndex(WORDS, max_edits=2, prefix_length=7)
    before = dict(old._buckets)
    new = old.updated(added=["dotty", "backpacks"], removed=["black", "dotted"])
    fresh = DeletionIndex([w for w in WORDS if w not in ("black", "dotted")] + ["dotty", "backpacks"], 2, 7)
    assert {k: sorted(v.split()) for k, v in new._buckets.items()} == {
        k: sorted(v.split()) for k, v in fresh._buckets.items()}
    assert len(new) == len(fresh) and old._buckets == before  # searches may still be using the old one
    assert new.closest("dottx", 1) == (1, ["dotty"]) and old.closest("dottx", 1) == (2, [])
