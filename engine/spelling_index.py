"""The speller's candidate index: the words within a few edits of a typed word, in well under a millisecond.

    index = DeletionIndex({"dress": 40, "backpack": 12}, max_edits=2, prefix_length=7)
    index.closest("bakcpack", 2)   # -> (1, ["backpack"])

SymSpell's idea (the deletion index symspellpy implements): every word is filed under the strings its first
`prefix_length` letters give with up to `max_edits` letters deleted; a typed word's own deletions meet those of every
word within `max_edits` edits, whose true distance is then computed (Damerau-Levenshtein in C++, rapidfuzz: a swap is
one edit, also next to another edit, "dotdt" is two from "dotted"). What differs from symspellpy's `SymSpell`:

- the build is one pass (deletions from itertools.combinations, in C), not a recursion per word, and each bucket is
  a string (its words joined by a space), not a list: about half the CPU (bench/speller.py, docs/speller.md);
- a dict of strings is not tracked by the garbage collector: symspellpy's millions of lists are walked by every full
  collection (100,000 words: 0.35 s of CPU each, against 8 ms here; docs/speller.md);
- a new vocabulary version updates a copy of the previous index (`updated`: a dict copy in C, then only the words
  added or removed), instead of building it again;
- a lookup looks for one edit first, and for two only when nothing is one edit away (CLOSEST semantics, so the
  answer is the same, at a fraction of the work for most typos).
"""
from __future__ import annotations

from collections.abc import Iterable
from itertools import combinations

from rapidfuzz.distance import DamerauLevenshtein

SEPARATOR = " "  # between a bucket's words; words here never hold whitespace (engine.lexical.WORD_RE)


class DeletionIndex:
    """Words filed under the deletions of their prefix; `closest` finds the nearest ones."""

    def __init__(self, words: Iterable[str], max_edits: int, prefix_length: int):
        if max_edits < 0 or prefix_length <= max_edits:
            raise ValueError(f"DeletionIndex needs 0 <= max_edits < prefix_length, got max_edits={max_edits}, "
                             f"prefix_length={prefix_length}; lower max_edits or raise prefix_length")
        self.max_edits = max_edits
        self.prefix_length = prefix_length
        self._buckets: dict[str, str] = {}
        self.words = 0
        self._file(words)

    def _file(self, words: Iterable[str]) -> None:
        buckets, prefix_length, max_edits = self._buckets, self.prefix_length, self.max_edits
        get = buckets.get
        for word in words:
            if not word or SEPARATOR in word:
                raise ValueError(f"cannot index {word!r}: index single words (no whitespace, not empty)")
            self.words += 1
            for key in deletions(word[:prefix_length], max_edits):
                bucket = get(key)
                buckets[key] = word if bucket is None else bucket + SEPARATOR + word

    def __len__(self) -> int:
        return self.words

    def updated(self, added: Iterable[str], removed: Iterable[str]) -> DeletionIndex:
        """A new index: this one's words with `added` filed and `removed` taken out (this one is left as it is, so
        searches can keep using it meanwhile)."""
        new = DeletionIndex((), self.max_edits, self.prefix_length)
        buckets = new._buckets = dict(self._buckets)
        new.words = self.words
        for word in removed:
            new.words -= 1
            for key in deletions(word[:self.prefix_length], self.max_edits):
                left = [w for w in buckets.get(key, "").split(SEPARATOR) if w and w != word]
                if left:
                    buckets[key] = SEPARATOR.join(left)
                else:
                    buckets.pop(key, None)
        new._file(added)
        return new

    def closest(self, word: str, max_edits: int) -> tuple[int, list[str]]:
        """(distance, the indexed words at that distance) for the nearest words within `max_edits` edits of
        `word` (itself excluded), or (max_edits + 1, []) when none is."""
        if max_edits > self.max_edits:
            raise ValueError(f"this index was built for {self.max_edits} edits at most, asked {max_edits}; "
                             "build it with a larger max_edits")
        found: dict[str, int] = {word: max_edits + 1}  # candidate -> distance (capped at max_edits + 1)
        frontier = {word[:self.prefix_length]}
        seen = set(frontier)
        for level in range(max_edits + 1):
            for key in frontier:
                bucket = self._buckets.get(key)
                if bucket is None:
                    continue
                for candidate in bucket.split(SEPARATOR):
                    if candidate not in found:
                        found[candidate] = (DamerauLevenshtein.distance(word, candidate, score_cutoff=max_edits)
                                            if abs(len(candidate) - len(word)) <= max_edits else max_edits + 1)
            # every word within `level` edits has been met by now (its deletions and ours meet after at most
            # `level` deletions on our side): the nearest so far is final if it is that close
            best = min((d for w, d in found.items() if w != word), default=max_edits + 1)
            if best <= level or level == max_edits:
                break
            frontier = {k[:i] + k[i + 1:] for k in frontier for i in range(len(k))} - seen
            seen |= frontier
        if best > max_edits:
            return max_edits + 1, []
        return best, sorted(w for w, d in found.items() if d == best and w != word)


def deletions(text: str, edits: int) -> set[str]:
    """`text` and every string made by deleting up to `edits` of its letters."""
    n = len(text)
    return {"".join(kept) for k in range(min(edits, n) + 1) for kept in combinations(text, n - k)}
