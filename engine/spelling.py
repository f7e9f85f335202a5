"""Typo correction of search queries: symspellpy over the catalog's words, English words never corrected.

    speller = Speller(vocabulary, extra_words=["newcomer"])   # engine.vocabulary.Vocabulary (or word -> rows)
    found = speller.correct("sneekers tshirt")
    found.corrected   # the lexical (BM25) side's text: "sneakers t-shirt"
    found.dense       # the dense (CLIP) side's text: "sneakers tshirt" (only certain typos change it)
    found.suggestion  # a "Did you mean" query, or None

A word is left alone when it is known: a catalog word, a word whose BM25 stems the catalog holds (the same
analyser as BM25: "dresses" matches "dress"), an English word (symspellpy's shipped frequency dictionary: "cat",
"goat", "jug" and "cape" are words, not typos of "cap" or "coat"), shorter than min_word_length, or holding a digit.
An unknown word is
- joined or split as the catalog spells it ("tshirt" -> "t-shirt", "coffeemug" -> "coffee mug"; and the pair
  "t shirt" -> "t-shirt"): a spelling variant, applied to the lexical side only (CLIP reads it as typed);
- corrected to the closest catalog word (symspellpy's deletion index, optimal string alignment: a swap is one
  edit; one edit for words shorter than long_word letters, two from there on), or to an English word one edit
  away whose stems the catalog holds when no catalog word is that close ("sneekers" -> "sneakers" for a catalog
  saying "sneaker"). The correction is automatic (both sides) only when confident: no other candidate (of another
  stem) at that distance within auto_margin of its row count (English: corpus count), and, for a two-edit
  correction, no English word one edit away. Otherwise it is only suggested (`suggestion`, "Did you mean ..."),
  and nothing is searched differently.
Custom-token placeholders (`<aurora>`) are left alone.
"""
from __future__ import annotations

import functools
import importlib.resources
import re
import string
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from symspellpy import SymSpell, Verbosity
from symspellpy.editdistance import DistanceAlgorithm, EditDistance

from engine.lexical import WORD_RE, query_terms, words
from engine.vocabulary import Vocabulary

ENGLISH_DICTIONARY = "frequency_dictionary_en_82_765.txt"  # shipped with symspellpy: "word count" per line


@dataclass(frozen=True)
class SpellingConfig:
    # Words shorter than this are never corrected (too many neighbours at distance 1).
    min_word_length: int = 3
    # Words longer than this are never corrected either: no catalog word is that long, and judging one costs
    # memory quadratic in its length (the compound split tries every cut): a 100,000-letter "word" took 24 GB.
    max_word_length: int = 40
    # Most edits for a word shorter than long_word letters ("drsss" -> "dress", "backpak" -> "backpack").
    max_edits_short: int = 1
    # Words of at least this many letters allow max_edits_long edits ("sneekrs" -> "sneakers").
    long_word: int = 6
    # Most edits for a long word.
    max_edits_long: int = 2
    # Automatic only when the best catalog word is in this many times more rows than the best one of another stem
    # at the same distance; a closer race is a suggestion.
    auto_margin: float = 3.0
    # Shortest part of a split compound ("coffeemug" -> "coffee mug").
    min_part_length: int = 3
    # symspellpy's indexed prefix (its default). On 100k of bench/speller.py's pseudo-words (a one-off run, 2 shared
    # cores), 5 built in 8 s / 128 MB with lookups of 1.7 ms mean, 9.7 ms p95; 7 in 17 s / 393 MB with 0.45 ms
    # mean, 0.53 ms p95 (docs/speller.md).
    prefix_length: int = 7


@dataclass(frozen=True)
class Verdict:
    kind: str  # "auto" (a certain typo: both sides), "lexical" (a spelling variant: BM25 side only), "suggest"
    replacement: str


@dataclass(frozen=True)
class Correction:
    original: str  # the query as typed
    corrected: str  # what the lexical side searches: automatic corrections and spelling variants applied
    changes: tuple[tuple[str, str], ...]  # (typed, replacement) applied to the lexical side
    dense: str = ""  # what the dense side searches: only the automatic corrections applied
    suggested: tuple[tuple[str, str], ...] = ()  # (typed, suggested) not applied
    suggestion: str | None = None  # the query with the suggestions applied too ("Did you mean ..."), if any

    @property
    def changed(self) -> bool:
        return bool(self.changes)


@functools.lru_cache(maxsize=1)
def english_words() -> Mapping[str, int]:
    """symspellpy's English frequency dictionary (82,765 words -> corpus count), read once per process (0.2 s)."""
    path = importlib.resources.files("symspellpy") / ENGLISH_DICTIONARY
    with path.open(encoding="utf-8") as f:
        return MappingProxyType({w: int(c) for w, c in (line.split() for line in f if line.strip())})


class Speller:
    """Corrects unknown query words to catalog words (see the module docstring for what counts as unknown)."""

    def __init__(self, vocabulary: Vocabulary | Mapping[str, int], config: SpellingConfig | None = None, *,
                 extra_words: Iterable[str] = (), english: Mapping[str, int] | None = None):
        """`extra_words`: words searched although no catalog row holds them, e.g. registered concept names."""
        self.config = config or SpellingConfig()
        vocab = vocabulary if isinstance(vocabulary, Vocabulary) else Vocabulary(vocabulary)
        self.counts: dict[str, int] = dict(vocab.counts)
        self._terms = set(vocab.terms)
        for name in extra_words:
            for word in words(name):
                self.counts.setdefault(word, 1)
                self._terms.update(query_terms(word))
        self._english = english_words() if english is None else english
        # DAMERAU_OSA_FAST: the same distance, computed by editdistpy (C++) instead of Python
        self._index = SymSpell(max(self.config.max_edits_short, self.config.max_edits_long), self.config.prefix_length,
                               distance_comparer=EditDistance(DistanceAlgorithm.DAMERAU_OSA_FAST))
        for word, count in self.counts.items():
            if len(word) >= self.config.min_word_length and not _has_digit(word):
                self._index.create_dictionary_entry(word, max(1, count))
        self._joined = {w.replace("-", ""): w for w in self.counts if "-" in w}

    def known(self, word: str) -> bool:
        """A catalog word, or one whose BM25 terms the catalog holds all of ("dresses": "dress")."""
        lower = word.lower()
        if lower in self.counts:
            return True
        terms = query_terms(lower)
        return bool(terms) and all(t in self._terms for t in terms)

    def judge(self, word: str) -> Verdict | None:
        """What to do with one word; None: leave it alone."""
        lower = word.lower()
        cfg = self.config
        if (not cfg.min_word_length <= len(lower) <= cfg.max_word_length or _has_digit(lower) or lower in self._english
                or self.known(lower)):
            return None
        variant = self._joined.get(lower) or self._split(lower)
        if variant is not None:
            return Verdict("lexical", variant)
        limit = cfg.max_edits_long if len(lower) >= cfg.long_word else cfg.max_edits_short
        found = self._index.lookup(lower, Verbosity.CLOSEST, limit)
        distance = found[0].distance if found else limit + 1
        english = [w for w in _edits1(lower) if w in self._english] if distance > 1 else []
        # an English word one edit away whose BM25 stems the catalog holds ("sneekers" -> "sneakers" for a catalog
        # that says "sneaker") is closer than any catalog word two edits away
        via_stem = [(w, self._english[w]) for w in english if self.known(w)]
        if via_stem:
            return self._verdict(via_stem, closer_english=False)
        if not found:
            return None
        return self._verdict([(s.term, s.count) for s in found], closer_english=bool(english))

    def _verdict(self, candidates: list[tuple[str, int]], closer_english: bool) -> Verdict:
        """The best of candidates at one distance ((word, frequency)): automatic when it has no rival of another
        stem within auto_margin of its frequency and no English word is closer than it; else a suggestion."""
        candidates = sorted(candidates, key=lambda c: (-c[1], c[0]))
        (best, count), stems = candidates[0], query_terms(candidates[0][0])
        rival = next((c for w, c in candidates[1:] if query_terms(w) != stems), None)
        clear = rival is None or count >= self.config.auto_margin * rival
        return Verdict("auto" if clear and not closer_english else "suggest", best)

    def correct(self, query: str) -> Correction:
        """The query's lexical and dense texts and its suggestion (placeholders and spacing kept)."""
        found: list[tuple[int, int, str, Verdict]] = []  # (start, end, typed, verdict)
        for start, end in _plain_spans(query):
            found.extend(self._verdicts(query, start, end))
        applied = [f for f in found if f[3].kind in ("auto", "lexical")]
        sure = [f for f in found if f[3].kind == "auto"]
        guessed = [f for f in found if f[3].kind == "suggest"]
        return Correction(
            original=query,
            corrected=_render(query, applied),
            changes=tuple((typed, _cased(typed, v.replacement)) for _, _, typed, v in applied),
            dense=_render(query, sure),
            suggested=tuple((typed, _cased(typed, v.replacement)) for _, _, typed, v in guessed),
            suggestion=_render(query, found) if guessed else None)

    def _verdicts(self, query: str, start: int, end: int) -> Iterator[tuple[int, int, str, Verdict]]:
        matches = list(WORD_RE.finditer(query, start, end))
        i = 0
        while i < len(matches):
            m = matches[i]
            if i + 1 < len(matches) and query[m.end():matches[i + 1].start()].isspace():
                joined = self._join(m.group(0), matches[i + 1].group(0))
                if joined is not None:
                    yield m.start(), matches[i + 1].end(), query[m.start():matches[i + 1].end()], Verdict(
                        "lexical", joined)
                    i += 2
                    continue
            verdict = self.judge(m.group(0))
            if verdict is not None:
                yield m.start(), m.end(), m.group(0), verdict
            i += 1

    def _join(self, first: str, second: str) -> str | None:
        """The catalog word two typed words make ("t shirt" -> "t-shirt"), unless both are catalog words."""
        a, b = first.lower(), second.lower()
        joined = self._joined.get(a + b) or (a + b if a + b in self.counts else None)
        if joined is None or (self.known(a) and self.known(b)):
            return None
        return joined

    def _split(self, lower: str) -> str | None:
        """Two catalog words `lower` runs together ("coffeemug" -> "coffee mug"), the most frequent pair."""
        n = self.config.min_part_length
        pairs = [(lower[:i], lower[i:]) for i in range(n, len(lower) - n + 1)]
        pairs = [(a, b) for a, b in pairs if a in self.counts and b in self.counts]
        if not pairs:
            return None
        a, b = max(pairs, key=lambda p: (min(self.counts[p[0]], self.counts[p[1]]), p))
        return f"{a} {b}"


def _has_digit(word: str) -> bool:
    return any(ch.isdigit() for ch in word)


def _edits1(word: str) -> set[str]:
    """Every string one edit (delete, swap, replace, insert of a-z) from `word` (Norvig's, as comprehensions)."""
    letters = string.ascii_lowercase
    splits = [(word[:i], word[i:]) for i in range(len(word) + 1)]
    deletes = {a + b[1:] for a, b in splits if b}
    swaps = {a + b[1] + b[0] + b[2:] for a, b in splits if len(b) > 1}
    replaces = {a + c + b[1:] for a, b in splits if b for c in letters}
    return deletes | swaps | replaces | {a + c + b for a, b in splits for c in letters}


def _cased(typed: str, replacement: str) -> str:
    return replacement.capitalize() if typed[:1].isupper() else replacement


def _render(query: str, found: list[tuple[int, int, str, Verdict]]) -> str:
    pieces, last = [], 0
    for start, end, typed, verdict in sorted(found, key=lambda f: f[0]):
        pieces.append(query[last:start])
        pieces.append(_cased(typed, verdict.replacement))
        last = end
    pieces.append(query[last:])
    return "".join(pieces)


def _placeholder_re() -> re.Pattern:
    # imported here: engine.tokenizer loads torch, and the indexer's ONNX path (which builds the vocabulary) runs
    # without it
    from engine.tokenizer import PLACEHOLDER_RE

    return PLACEHOLDER_RE


def _plain_spans(text: str) -> Iterable[tuple[int, int]]:
    """Spans of `text` outside custom-token placeholders."""
    PLACEHOLDER_RE = _placeholder_re()
    last = 0
    for m in PLACEHOLDER_RE.finditer(text):
        yield last, m.start()
        last = m.end()
    yield last, len(text)


def strip_placeholders(text: str) -> str:
    """The query's words without custom-token placeholders: what the lexical side searches."""
    return re.sub(r"\s+", " ", _placeholder_re().sub(" ", text)).strip()
