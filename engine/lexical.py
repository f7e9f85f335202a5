"""The lexical side of search: a product row's text and its BM25 sparse vector, one function each.

Both store backends store the vectors made here (the server backend gets them computed client-side by
the same code), so the two agree. The engine applies the IDF modifier at query time; the vectors carry
BM25's saturated term frequencies (documents) or 1.0 per distinct word (queries). Tokenising, lower-
casing, English stop words and stemming are qdrant-edge's `Bm25` (offline, no model download).
"""
from __future__ import annotations

import functools
import numbers
import re
from collections.abc import Iterator, Mapping
from typing import Any

from engine.product import ATTRIBUTES, TEXT_FIELDS
from engine.store.hybrid import SparseVector

# Average document length in words for BM25's length normalisation: a title, a category and a few attribute
# values and a caption (the demo world's rows have 15-30 words; Qdrant's default of 256 fits long pages).
AVG_DOC_WORDS = 24.0
WORD_RE = re.compile(r"[^\W_]+(?:[-'][^\W_]+)*", re.UNICODE)  # words, keeping "t-shirt" and "o'neill" whole


def document_text(payload: Mapping[str, Any]) -> str:
    """The text of a catalog row the lexical index sees: the TEXT_FIELDS (title, category) and the attribute values."""
    parts = [str(payload[f]) for f in TEXT_FIELDS if isinstance(payload.get(f), str)]
    parts.extend(_strings(payload.get(ATTRIBUTES)))
    return " ".join(parts)


def words(text: str) -> list[str]:
    """Lower-cased words of `text` as the spelling vocabulary counts them."""
    return [w.lower() for w in WORD_RE.findall(text)]


def embed_document(payload: Mapping[str, Any]) -> SparseVector:
    """BM25 document vector of a catalog row's text (see document_text)."""
    return _sparse(_bm25().embed_document(document_text(payload)))


def embed_query(text: str) -> SparseVector:
    """BM25 query vector of `text` (custom-token placeholders removed by the caller); may be empty."""
    return _sparse(_bm25().embed_query(text))


def query_terms(text: str) -> tuple[int, ...]:
    """The analyser's term ids of `text` (lower-cased, stop words dropped, stemmed): "dresses" and "dress" share
    one; the spelling vocabulary uses them to know a word the catalog holds in another form."""
    return tuple(int(i) for i in _bm25().embed_query(text).indices)


@functools.lru_cache(maxsize=1)
def _bm25():
    import qdrant_edge as qe

    return qe.Bm25(qe.Bm25Config(avg_len=AVG_DOC_WORDS))


def _sparse(vector) -> SparseVector:
    return SparseVector(tuple(int(i) for i in vector.indices), tuple(float(v) for v in vector.values))


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from _strings(v)
    elif isinstance(value, numbers.Integral) and not isinstance(value, bool):
        yield str(value)
