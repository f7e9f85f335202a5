"""Suggestions as the shopper types: prefix and fuzzy matches over concept names, facet values (category, colour,
pattern), the catalog's words and product names, each with the number of products it finds.

    suggestions = Suggestions(catalog_source, tokens_fn)
    suggestions.suggest("dre", limit=8)   # [Suggestion("dress", "category", 41, "dress"), ...]

The index is built in memory once per catalog version (CatalogSource.version) and set of concept names: sorted
keys for prefix ranges (bisect), every word start of a product name among them, so "dre" finds "Aurora Dress";
a fuzzy pass (rapidfuzz, OSA distance over the first len(q) letters) over the short vocabulary catches typos
("drss"); under 5 letters a fuzzy match keeps the typed first letter ("dre" does not offer "green"). With
several words, the last one is completed and the others kept ("red dr" -> "red dress").

The shop's synonyms (engine/merch: "trainers, sneakers", "cup => mug") apply in suggestions as in the search:
what is typed, or its last word, beginning a synonym's term offers what that term also searches, when the catalog
has it ("trainers" -> "sneakers", kind "synonym", with its count), before the other suggestions. They are asked
for on every call (engine.merch.MerchSource, which re-reads them when they changed, at most every refresh_s: a
merchandiser's change shows within a second), not built into the index.
"""
from __future__ import annotations

import bisect
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from rapidfuzz import process
from rapidfuzz.distance import OSA

from .catalog_words import CatalogSource
from .phrases import WORD_RE
from .understand import CatalogWords

if TYPE_CHECKING:
    from engine.merch import Synonym

KIND_ORDER = ("concept", "category", "colour", "pattern", "word", "name")  # shown in this order, then by count
SYNONYM = "synonym"  # the kind of a suggestion a shop's synonym offered (shown first)
MAX_NAME_SCAN = 400  # product names read per prefix range (a one-letter prefix would read them all)
MAX_FUZZY_WORDS = 20_000  # words the fuzzy pass compares against
FUZZY_ANY_FIRST_LETTER = 5  # a typed prefix this long may have its first letter wrong too; shorter ones keep it


@dataclass(frozen=True)
class Suggestion:
    text: str  # what the dropdown shows
    kind: str  # one of KIND_ORDER
    count: int  # products it finds (a concept: 0, it is not a catalog value)
    query: str  # the query to search when it is chosen

    def to_json(self) -> dict[str, object]:
        return {"text": self.text, "kind": self.kind, "count": self.count, "query": self.query}


class SuggestIndex:
    def __init__(self, words: CatalogWords | None, concepts: list[str]):
        self._words = words
        entries: list[tuple[str, str, int]] = [(c, "concept", 0) for c in concepts]  # (text, kind, count)
        word_counts: dict[str, int] = {}
        if words is not None:
            for facet, values in words.facets.items():
                kind = facet if facet in KIND_ORDER else "word"
                entries += [(v, kind, n) for v, n in values.items()]
            for name, n in words.names.items():
                for w in {w.lower() for w in WORD_RE.findall(name)}:
                    word_counts[w] = word_counts.get(w, 0) + n
            known = {e[0].lower() for e in entries}
            entries += [(w, "word", n) for w, n in word_counts.items() if w not in known and not w.isdigit()]
            entries += [(name, "name", n) for name, n in words.names.items()]
        self.entries = entries
        terms: list[tuple[str, int]] = []  # (lower-case text, entry index) of everything but product names
        names: list[tuple[str, int]] = []  # (lower-case text from each word start, entry index) of product names
        for i, (text, kind, _n) in enumerate(entries):
            lower = text.lower()
            if kind == "name":
                names += [(lower[m.start():], i) for m in WORD_RE.finditer(lower)]
            else:
                terms.append((lower, i))
        terms.sort()
        names.sort()
        self._term_keys, self._term_ids = [k for k, _ in terms], [i for _, i in terms]
        self._name_keys, self._name_ids = [k for k, _ in names], [i for _, i in names]
        # the fuzzy pass reads the commonest words without digits (model numbers are typed exactly), truncated to
        # each typed length once (rapidfuzz then scans in C)
        common = sorted((e for e in entries if e[1] != "name" and not any(ch.isdigit() for ch in e[0])),
                        key=lambda e: (KIND_ORDER.index(e[1]), -e[2]))[:MAX_FUZZY_WORDS]
        self._vocab = [e[0].lower() for e in common]
        self._truncated: dict[int, list[str]] = {}
        self._by_text = {e[0].lower(): i for i, e in reversed(list(enumerate(entries))) if e[1] != "name"}
        self._short: dict[str, list[Suggestion]] = {}  # results of one- and two-letter prefixes (wide ranges)
        # the synonyms list last seen (held, so compared by identity) and its terms sorted: (list, terms, groups)
        self._synonym_terms: tuple[Sequence["Synonym"] | None, list[str], list[int]] = (None, [], [])

    def suggest(self, q: str, limit: int = 8, synonyms: Sequence["Synonym"] = ()) -> list[Suggestion]:
        """The suggestions for `q`, best first: what the shop's `synonyms` offer, then the index's matches."""
        offered = self.synonyms(q, synonyms, limit) if synonyms else []
        if not offered:
            return self._suggest(q, limit)
        seen = {s.query.lower() for s in offered}
        return (offered + [s for s in self._suggest(q, limit) if s.query.lower() not in seen])[:limit]

    def _suggest(self, q: str, limit: int) -> list[Suggestion]:
        typed = " ".join(q.lower().split())
        if not typed:
            return []
        found = self._prefix(typed, limit)
        head, _, last = typed.rpartition(" ")
        if len(found) < limit and head and last:  # complete the last word, keep the others
            seen = {s.query.lower() for s in found}
            for s in self._prefix(last, limit, names=False) + self._fuzzy(last, limit):
                query = f"{head} {s.text.lower()}"
                if query not in seen:
                    seen.add(query)
                    found.append(Suggestion(query, s.kind, s.count, query))
        elif len(found) < limit:
            seen = {s.text.lower() for s in found}
            found += [s for s in self._fuzzy(typed, limit) if s.text.lower() not in seen]
        return found[:limit]

    def synonyms(self, q: str, synonyms: Sequence["Synonym"], limit: int = 8) -> list[Suggestion]:
        """What the shop's synonyms offer for `q`: each term also searched by a synonym whose term the typed text
        (or its last word) begins, when the catalog has it (the others stay in the query: "red trai" -> "red
        sneakers")."""
        typed = " ".join(q.lower().split())
        pairs = [("", typed)]  # (words kept, words a synonym's term may begin)
        if " " in typed:
            head, last = typed.rsplit(" ", 1)
            pairs.append((head, last))
        found: dict[str, Suggestion] = {}
        known, keys, ids = self._synonym_terms
        if known is not synonyms:  # a new list (MerchSource re-read them): its terms sorted for prefix ranges
            terms = sorted((t, i) for i, synonym in enumerate(synonyms) for t in synonym.terms)
            keys, ids = [t for t, _ in terms], [i for _, i in terms]
            self._synonym_terms = (synonyms, keys, ids)
        for head, last in pairs:
            lo = bisect.bisect_left(keys, last) if len(last) >= 2 else 0
            hi = bisect.bisect_left(keys, last + "\uffff", lo) if len(last) >= 2 else 0
            for k in dict.fromkeys(ids[lo:hi]):  # each synonym with a term `last` begins, once
                synonym = synonyms[k]
                begun = [t for t in synonym.terms if t.startswith(last)]
                for term in synonym.targets or tuple(t for t in synonym.terms if t not in begun):
                    i = self._entry(term)
                    query = f"{head} {self.entries[i][0].lower()}".strip() if i is not None else ""
                    if query and self.entries[i][2] > 0 and query not in found:
                        found[query] = Suggestion(query, SYNONYM, self.entries[i][2], query)
        return list(found.values())[:limit]

    def _entry(self, term: str) -> int | None:
        """The entry of a term as the catalog has it: itself, or the facet value it is a form of ('sneakers')."""
        if term in self._by_text:
            return self._by_text[term]
        facet = self._words.facet_of(term) if self._words is not None else None
        return self._by_text.get(facet[1].lower()) if facet is not None else None

    def _prefix(self, prefix: str, limit: int, names: bool = True) -> list[Suggestion]:
        memo = f"{limit}:{names}:{prefix}"
        if len(prefix) <= 2 and memo in self._short:
            return list(self._short[memo])
        picked: dict[int, None] = {}
        lo = bisect.bisect_left(self._term_keys, prefix)
        hi = bisect.bisect_left(self._term_keys, prefix + "\uffff", lo)
        picked.update((self._term_ids[j], None) for j in range(lo, hi))
        if names:
            lo = bisect.bisect_left(self._name_keys, prefix)
            hi = min(bisect.bisect_left(self._name_keys, prefix + "\uffff", lo), lo + MAX_NAME_SCAN)
            picked.update((self._name_ids[j], None) for j in range(lo, hi))
        found = self._ranked(picked, limit)
        if len(prefix) <= 2:
            self._short[memo] = list(found)
        return found

    def _fuzzy(self, typed: str, limit: int) -> list[Suggestion]:
        if len(typed) < 3 or not self._vocab:
            return []
        edits = 1 if len(typed) <= 5 else 2
        n = len(typed)
        if n not in self._truncated:
            self._truncated[n] = [w[:n] for w in self._vocab]
        found = process.extract(typed, self._truncated[n], scorer=OSA.distance, score_cutoff=edits, limit=4 * limit)
        if n < FUZZY_ANY_FIRST_LETTER:  # a short prefix keeps its first letter: "dre" is not a typo of "gre(en)"
            found = [m for m in found if m[0][:1] == typed[:1]]
        picked = {self._by_text[self._vocab[k]]: None for _w, _d, k in sorted(found, key=lambda m: m[1])}
        return self._ranked(picked, limit)

    def _ranked(self, picked: dict[int, None], limit: int) -> list[Suggestion]:
        order = sorted(picked, key=lambda i: (KIND_ORDER.index(self.entries[i][1]), -self.entries[i][2],
                                              self.entries[i][0]))
        return [Suggestion(self.entries[i][0], self.entries[i][1], self.entries[i][2], self.entries[i][0])
                for i in order[:limit]]


class Suggestions:
    """The suggestion index of the searched collection, rebuilt when its catalog words or concepts change."""

    def __init__(self, catalog: CatalogSource, concepts: Callable[[], list[str]],
                 synonyms: Callable[[], Sequence["Synonym"]] | None = None):
        self.catalog = catalog
        self.concepts = concepts  # the registered concept names as words (understand.concept_words)
        self.synonyms = synonyms  # the shop's synonyms now (engine.merch.MerchSource), asked per call
        self._lock = threading.Lock()
        self._key: tuple[int, tuple[str, ...]] | None = None
        self._index: SuggestIndex | None = None

    def index(self) -> SuggestIndex:
        words = self.catalog.get()
        key = (self.catalog.version, tuple(self.concepts()))
        with self._lock:
            if self._index is None or key != self._key:
                self._index = SuggestIndex(words, list(key[1]))
                self._key = key
            return self._index

    def suggest(self, q: str, limit: int = 8) -> list[Suggestion]:
        return self.index().suggest(q, limit, self.synonyms() if self.synonyms is not None else ())
