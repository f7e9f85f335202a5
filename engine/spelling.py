"""Typo correction against the catalog's own words (titles, categories, attribute values).

The indexer counts, per word, the catalog rows that contain it (`Vocabulary`), and stores the counts
with the collection (store metadata key METADATA_KEY); `coinage reindex` rebuilds them. At query time a
`Speller` corrects each word the catalog does not know to the closest known word (optimal string alignment
distance via rapidfuzz: a swap of two letters is one edit; ties go to the more frequent word). A query whose words are all known is never rewritten;
custom-token placeholders (`<aurora>`) and numbers are left alone.
"""
from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from rapidfuzz import process
from rapidfuzz.distance import OSA

from engine.lexical import WORD_RE, document_text, words

METADATA_KEY = "spelling"  # collection metadata: {"version", "rows", "words": {word: rows containing it}}
FORMAT_VERSION = 1
# English function words a query may hold although no catalog row does; never "corrected" into catalog words.
FUNCTION_WORDS = frozenset("a an and at by for from in into near of on or over the to under with without".split())


class Vocabulary:
    """Word -> number of catalog rows containing it, accumulated row by row at index time."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.rows = 0

    def add(self, payload: Mapping[str, Any]) -> None:
        self.counts.update(set(words(document_text(payload))))
        self.rows += 1

    def to_metadata(self) -> dict[str, Any]:
        return {METADATA_KEY: {"version": FORMAT_VERSION, "rows": self.rows, "words": dict(self.counts)}}


@dataclass(frozen=True)
class SpellingConfig:
    # Words shorter than this are never corrected (too many neighbours at distance 1).
    min_word_length: int = 3
    # Most edits for a word of up to 5 letters; longer words allow one more.
    max_edits_short: int = 1
    # Most edits for a word longer than 5 letters.
    max_edits_long: int = 2


@dataclass(frozen=True)
class Correction:
    original: str  # the query as typed
    corrected: str  # the query searched
    changes: tuple[tuple[str, str], ...]  # (typed word, replacement)

    @property
    def changed(self) -> bool:
        return bool(self.changes)


class Speller:
    """Corrects unknown query words to the closest catalog word."""

    def __init__(self, counts: Mapping[str, int], config: SpellingConfig | None = None):
        self.config = config or SpellingConfig()
        self.counts = {w: int(c) for w, c in counts.items()}
        self._words = sorted(self.counts)

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any], config: SpellingConfig | None = None) -> Speller | None:
        """The speller of a collection's metadata, or None when it has no vocabulary (built before it had one)."""
        found = metadata.get(METADATA_KEY)
        if not isinstance(found, Mapping) or found.get("version") != FORMAT_VERSION:
            return None
        return cls(found.get("words") or {}, config)

    def known(self, word: str) -> bool:
        return word.lower() in self.counts

    def correct_word(self, word: str) -> str | None:
        """The replacement of an unknown word, or None (known, too short, a number, or nothing close)."""
        lower = word.lower()
        if (lower in self.counts or lower in FUNCTION_WORDS or len(lower) < self.config.min_word_length
                or any(ch.isdigit() for ch in lower)):
            return None
        limit = self.config.max_edits_short if len(lower) <= 5 else self.config.max_edits_long
        found = process.extract(lower, self._words, scorer=OSA.distance, score_cutoff=limit, limit=None)
        if not found:
            return None
        best = min(found, key=lambda m: (m[1], -self.counts[m[0]], m[0]))[0]
        return best.capitalize() if word[:1].isupper() else best

    def correct(self, query: str) -> Correction:
        """The query with each unknown word replaced (placeholders and spacing kept)."""
        changes: list[tuple[str, str]] = []
        pieces = []
        last = 0
        for start, end in _plain_spans(query):
            pieces.append(query[last:start])
            segment = query[start:end]
            pieces.append(WORD_RE.sub(lambda m: self._replace(m.group(0), changes), segment))
            last = end
        pieces.append(query[last:])
        return Correction(query, "".join(pieces), tuple(changes))

    def _replace(self, word: str, changes: list[tuple[str, str]]) -> str:
        fixed = self.correct_word(word)
        if fixed is None:
            return word
        changes.append((word, fixed))
        return fixed


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
