"""The catalog's spelling vocabulary: its words, how many rows hold each, and their BM25 terms.

The indexer counts, per word, the catalog rows that contain it, with the same text (engine.lexical.document_text)
and the same analyser as the BM25 vectors: `terms` are the analyser's term ids (lower-cased, stop words dropped,
stemmed) of every word, so a query word whose stems the catalog holds ("dresses" for "dress") is known to it. The
vocabulary is stored beside the collection as a versioned artifact (engine/vocabulary_artifact.py), not in its
metadata; collections built before keep theirs in metadata (METADATA_KEY, format 1, read by `from_json`).
"""
from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from engine.lexical import document_text, query_terms, words
from engine.store.artifacts import artifact_version, read_artifact, write_artifact
from engine.store.base import StoreError, VectorStore

METADATA_KEY = "spelling"  # old collections' metadata: {"version": 1, "rows", "words": {word: rows containing it}}
FORMAT_VERSION = 2  # the artifact: {"format": 2, "rows", "words": {word: rows}, "terms": [BM25 term ids]}
READABLE = (1, 2)
ARTIFACT = "spelling.json"  # the artifact's name beside its collection (engine/store/artifacts.py)


class Vocabulary:
    """Word -> number of catalog rows containing it, accumulated row by row at index time, with the BM25 terms."""

    def __init__(self, counts: Mapping[str, int] | None = None, rows: int = 0, terms: Iterable[int] | None = None):
        self.counts: Counter[str] = Counter({str(w): int(c) for w, c in (counts or {}).items()})
        self.rows = int(rows)
        self._terms: set[int] | None = None if terms is None else {int(t) for t in terms}
        self._termed: set[str] = set(self.counts) if terms is not None else set()

    def add(self, payload: Mapping[str, Any]) -> None:
        self.counts.update(set(words(document_text(payload))))
        self.rows += 1

    @property
    def terms(self) -> set[int]:
        """The analyser's term ids of every word (computed once per new word)."""
        if self._terms is None:
            self._terms = set()
        new = [w for w in self.counts if w not in self._termed]
        for word in new:
            self._terms.update(query_terms(word))
        self._termed.update(new)
        return self._terms

    def merge(self, other: Vocabulary) -> Vocabulary:
        """Both vocabularies in one, each word's count the larger of the two: an index run without pruning keeps
        the words of rows it did not see (they stay searchable) and counts the rows it did see once."""
        counts = Counter(self.counts)
        for word, count in other.counts.items():
            counts[word] = max(counts[word], count)
        return Vocabulary(counts, max(self.rows, other.rows), self.terms | other.terms)

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT_VERSION, "rows": self.rows, "words": dict(self.counts), "terms": sorted(self.terms)}

    @classmethod
    def from_json(cls, data: Any) -> Vocabulary | None:
        """The vocabulary of an artifact (format 2) or of old collection metadata's METADATA_KEY value (format 1,
        no terms: computed here); None for anything else."""
        if not isinstance(data, Mapping):
            return None
        version = data.get("format", data.get("version"))
        if version not in READABLE or not isinstance(data.get("words", {}), Mapping):
            return None
        terms = data.get("terms") if version == FORMAT_VERSION else None
        return cls(data.get("words") or {}, int(data.get("rows") or 0), terms)

    def to_metadata(self) -> dict[str, Any]:
        """The old (format 1) metadata form; kept for tests and tools that build collections as before."""
        return {METADATA_KEY: {"version": 1, "rows": self.rows, "words": dict(self.counts)}}


def write_vocabulary(store: VectorStore, collection: str, vocabulary: Vocabulary) -> str:
    """Store the vocabulary beside `collection` (a collection, not an alias), and drop an old copy from its
    metadata; returns the artifact's version."""
    version = write_artifact(store, collection, ARTIFACT, json.dumps(vocabulary.to_json()).encode())
    if store.get_metadata(collection).get(METADATA_KEY) is not None:
        store.set_metadata(collection, {METADATA_KEY: None})
    return version


def vocabulary_version(store: VectorStore, collection: str) -> str | None:
    """The version of the vocabulary artifact of `collection` (one stat or one small point read); None when it
    has none (an old collection may still hold its vocabulary in metadata: read_vocabulary reads that)."""
    return artifact_version(store, collection, ARTIFACT)


def read_vocabulary(store: VectorStore, collection: str) -> tuple[str | None, Vocabulary | None]:
    """(artifact version, vocabulary) of `collection`: the artifact, else the vocabulary of an old collection's
    metadata (version None), else (None, None)."""
    found = read_artifact(store, collection, ARTIFACT)
    if found is None:
        return None, Vocabulary.from_json(store.get_metadata(collection).get(METADATA_KEY))
    version, data = found
    try:
        vocabulary = Vocabulary.from_json(json.loads(data))
    except ValueError as e:
        raise StoreError(f"the spelling vocabulary of collection {collection!r} is not JSON ({e}); rebuild it with "
                         "`coinage index --prune` (which does not read it) or `coinage reindex`") from e
    if vocabulary is None:
        raise StoreError(f"the spelling vocabulary of collection {collection!r} has an unknown format; rebuild it "
                         "with `coinage index --prune` (which does not read it) or `coinage reindex`")
    return version, vocabulary
