"""Typo correction of search queries: a deletion index over the catalog's words, English words never corrected.

    speller = Speller(vocabulary, extra_words=["newcomer"])   # engine.vocabulary.Vocabulary (or word -> rows)
    found = speller.correct("sneekers tshirt")
    found.corrected   # the lexical (BM25) side's text: "sneakers t-shirt"
    found.dense       # the dense (CLIP) side's text: "sneaker tshirt" (certain typos, and the catalog's forms)
    found.suggestion  # a "Did you mean" query, or None

A word is left alone when it is known: a catalog word, a word whose BM25 stems the catalog holds (the same
analyser as BM25: "dresses" matches "dress"), an English word (symspellpy's shipped frequency dictionary: "cat",
"goat", "jug" and "cape" are words, not typos of "cap" or "coat"), shorter than min_word_length, or holding a digit.
Left alone means shown and searched by BM25 as typed; the dense side reads the catalog's own form of a word the
catalog knows only through its stem ("dresses" -> "dress": CLIP learnt the catalog's words), which is analysis, not
a correction, and is never shown. An unknown word is
- joined or split as the catalog spells it ("tshirt" -> "t-shirt", "coffeemug" -> "coffee mug"; and the pair
  "t shirt" -> "t-shirt"): a spelling variant, applied to the lexical side only (CLIP reads it as typed);
- corrected to the closest catalog word (engine/spelling_index.py's deletion index, Damerau-Levenshtein: a swap is
  one edit; one edit, or two when the typed word or the candidate has long_word letters or more), or to an English
  word one edit away whose stems the catalog holds when no catalog word is that close ("sneekers" -> "sneakers" for
  a catalog saying "sneaker"). Among candidates at one distance the one keeping most typed letters in order wins,
  then the most frequent. The correction is automatic (both sides) only when confident: no other candidate (of
  another stem, keeping as many letters) within auto_margin of its row count (English: corpus count), and, for a
  two-edit correction, no English word one edit away. Otherwise it is only suggested (`suggestion`, "Did you
  mean ..."), and nothing is searched differently.
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

from rapidfuzz.distance import LCSseq

from engine.lexical import WORD_RE, query_terms, words
from engine.spelling_index import DeletionIndex
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
    # A word of long_word - 1 letters may also take two edits to a short catalog word when it keeps all its letters
    # in order but this many ("desss" -> "dress"); -1 turns that off (docs/speller.md has the measurement).
    short_word_letters_lost: int = 1
    # A query none of whose words the catalog knows searches its suggestion ("Showing results for ... search instead
    # for ..."): as typed, its words would match nothing ("desss" -> "dress", although "desks" is one edit away).
    apply_when_nothing_matches: bool = True
    # Automatic only when the best catalog word is in this many times more rows than the best one of another stem
    # at the same distance; a closer race is a suggestion.
    auto_margin: float = 3.0
    # Shortest part of a split compound ("coffeemug" -> "coffee mug").
    min_part_length: int = 3
    # Letters of a word's prefix the deletion index files it under (symspellpy's default): longer is faster to look
    # up and bigger (engine/spelling_index.py; docs/speller.md has the figures).
    prefix_length: int = 7


@dataclass(frozen=True)
class Verdict:
    kind: str  # "auto" (a certain typo: both sides), "lexical" (a spelling variant: BM25 side only), "suggest",
    # or "dense": the catalog's own form of a word it knows only through its BM25 stem ("dresses" -> "dress"), for
    # the dense side only; analysis, not spelling: never shown as a correction
    replacement: str


@dataclass(frozen=True)
class Correction:
    original: str  # the query as typed
    corrected: str  # what the lexical side searches: automatic corrections and spelling variants applied
    changes: tuple[tuple[str, str], ...]  # (typed, replacement) applied to the lexical side
    dense: str = ""  # what the dense side searches: the automatic corrections and the catalog's forms applied
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
                 extra_words: Iterable[str] = (), english: Mapping[str, int] | None = None,
                 previous: Speller | None = None):
        """`extra_words`: words searched although no catalog row holds them, e.g. registered concept names.
        `previous`: the speller of the vocabulary's previous version: its index is updated with the words added
        and removed instead of being built again (a few words added to 300,000: a second, not a full build)."""
        self.config = config or SpellingConfig()
        vocab = vocabulary if isinstance(vocabulary, Vocabulary) else Vocabulary(vocabulary)
        self.counts: dict[str, int] = dict(vocab.counts)
        for name in extra_words:
            for word in words(name):
                self.counts.setdefault(word, 1)
        # each word's BM25 terms (the analyser is Rust: 300,000 words in about 2 s): the terms the catalog holds, and
        # the catalog's own form of each, its most frequent word ("dress" for the terms of "dresses")
        forms: dict[tuple[int, ...], tuple[int, str]] = {}
        for word, count in self.counts.items():
            terms = query_terms(word)
            if terms and (terms not in forms or (count, word) > forms[terms]):
                forms[terms] = (count, word)
        self._forms = {terms: word for terms, (_, word) in forms.items()}
        self._terms = {t for terms in self._forms for t in terms}
        self._english = english_words() if english is None else english
        cfg = self.config
        self._indexed = frozenset(w for w in self.counts if len(w) >= cfg.min_word_length and not _has_digit(w))
        if previous is not None and previous.config == cfg:
            self._index = previous._index.updated(self._indexed - previous._indexed, previous._indexed - self._indexed)
        else:
            self._index = DeletionIndex(self._indexed, max(cfg.max_edits_short, cfg.max_edits_long), cfg.prefix_length)
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
        if not cfg.min_word_length <= len(lower) <= cfg.max_word_length or _has_digit(lower):
            return None
        if lower in self._english or self.known(lower):
            form = self.catalog_form(lower)
            return None if form is None else Verdict("dense", form)
        variant = self._joined.get(lower) or self._split(lower)
        if variant is not None:
            return Verdict("lexical", variant)
        distance, found = self._candidates(lower)
        english = sorted(_edits1(lower) & self._english.keys()) if distance > 1 else []
        # an English word one edit away whose BM25 stems the catalog holds ("sneekers" -> "sneakers" for a catalog
        # that says "sneaker") is closer than any catalog word two edits away
        via_stem = [(w, self._english[w]) for w in english if self.known(w)]
        if via_stem:
            return self._verdict(lower, via_stem, closer_english=False)
        if not found:
            return None
        return self._verdict(lower, [(w, self.counts[w]) for w in found], closer_english=bool(english))

    def catalog_form(self, word: str) -> str | None:
        """The catalog's own word for a word it knows only through its BM25 terms ("dresses" -> "dress", "dots" ->
        "dotted" when the catalog says "dotted" most), else None: what the dense side reads instead, since CLIP
        learnt the catalog's words (the lexical side already matches the word as typed)."""
        lower = word.lower()
        if lower in self.counts:
            return None
        form = self._forms.get(query_terms(lower))
        return form if form != lower else None

    def _candidates(self, lower: str) -> tuple[int, list[str]]:
        """The nearest catalog words: within max_edits_short edits, or max_edits_long when the typed word or the
        candidate has long_word letters or more (two typos can shorten "dotted" to "dotdt", "striped" to "strpd")."""
        cfg = self.config
        reach = cfg.max_edits_long - cfg.max_edits_short  # how much shorter than long_word a typed word may be
        limit = cfg.max_edits_long if len(lower) >= cfg.long_word - reach else cfg.max_edits_short
        distance, found = self._index.closest(lower, limit)
        if distance > cfg.max_edits_short and len(lower) < cfg.long_word:
            # a short word at two edits: a long candidate, or one that keeps all typed letters but one in order
            # ("desss" -> "dress"; not "zzyzx" -> anything)
            found = [w for w in found if len(w) >= cfg.long_word
                     or LCSseq.similarity(lower, w) >= len(lower) - cfg.short_word_letters_lost]
        return (distance, found) if found else (limit + 1, [])

    def _verdict(self, typed: str, candidates: list[tuple[str, int]], closer_english: bool) -> Verdict:
        """The best of candidates at one distance ((word, frequency)): the one keeping most of the typed letters in
        order (dropped letters are the commonest typo: "bapack" is "backpack", not "black"), then the most frequent.
        Automatic when no candidate of another stem keeps as many letters within auto_margin of its frequency and
        no English word is closer than it; else a suggestion."""
        ranked = sorted(((LCSseq.similarity(typed, w), c, w) for w, c in candidates),
                        key=lambda c: (-c[0], -c[1], c[2]))
        kept, count, best = ranked[0]
        stems = query_terms(best)
        rival = next((c for k, c, w in ranked[1:] if k == kept and query_terms(w) != stems), None)
        clear = rival is None or count >= self.config.auto_margin * rival
        return Verdict("auto" if clear and not closer_english else "suggest", best)

    def correct(self, query: str) -> Correction:
        """The query's lexical and dense texts and its suggestion (placeholders and spacing kept)."""
        found: list[tuple[int, int, str, Verdict]] = []  # (start, end, typed, verdict)
        for start, end in _plain_spans(query):
            found.extend(self._verdicts(query, start, end))
        if self.config.apply_when_nothing_matches and self._matches_nothing(query, found):
            # "Showing results for": unsure corrections are searched when no word of the query is the catalog's
            found = [(s, e, t, Verdict("auto", v.replacement) if v.kind == "suggest" else v) for s, e, t, v in found]
        applied = [f for f in found if f[3].kind in ("auto", "lexical")]
        # the dense side: certain typos and the catalog's forms ("bckpacks" -> "backpacks" -> "backpack")
        dense = [(s, e, t, Verdict("dense", self.catalog_form(v.replacement) or v.replacement) if v.kind == "auto"
                  else v) for s, e, t, v in found if v.kind in ("auto", "dense")]
        guessed = [f for f in found if f[3].kind == "suggest"]
        return Correction(
            original=query,
            corrected=_render(query, applied),
            changes=tuple((typed, _cased(typed, v.replacement)) for _, _, typed, v in applied),
            dense=_render(query, dense),
            suggested=tuple((typed, _cased(typed, v.replacement)) for _, _, typed, v in guessed),
            suggestion=_render(query, [f for f in found if f[3].kind != "dense"]) if guessed else None)

    def _matches_nothing(self, query: str, found: list[tuple[int, int, str, Verdict]]) -> bool:
        """True when something is suggested and, with the certain corrections applied, no word of the query's
        text (placeholders aside) is one the catalog knows: searched as typed, its words would match nothing."""
        if not any(v.kind == "suggest" for *_, v in found):
            return False
        text = _render(query, [f for f in found if f[3].kind in ("auto", "lexical")])
        typed = [m.group(0) for s, e in _plain_spans(text) for m in WORD_RE.finditer(text, s, e)]
        return not any(self.known(w) for w in typed if query_terms(w))

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
