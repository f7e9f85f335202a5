"""Synonyms on the lexical side: one-way ("cup => mug": a query saying cup also searches mug) and two-way groups
("trainers, sneakers": each searches all). Pure: the store (engine/merch/store.py) keeps them, this expands text.

    group = Synonym.parse("cup => mug")            # or Synonym.parse("trainers, sneakers")
    text, used = expand("blue cup", [group])       # ("blue cup mug", [group])

Terms are compared as lower-cased word sequences (engine.lexical.words, the BM25 side's own tokenising), so a term
may be a phrase ("tee shirt => t-shirt"). Expansion only adds words: the words typed are always searched.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from engine.lexical import words

from .errors import MerchError

KINDS = ("oneway", "twoway")
MAX_TERMS = 50  # terms in one group: a longer one is a mistake (a pasted list), not a synonym
MAX_TERM_WORDS = 6


@dataclass(frozen=True)
class Synonym:
    terms: tuple[str, ...]  # two-way: the group; one-way: what the shopper types
    targets: tuple[str, ...] = ()  # one-way: what those terms also search; empty for a two-way group
    id: int | None = None  # database row id (None until stored)
    updated: str = ""  # ISO time of the last change
    updated_by: str = ""  # who made it

    def __post_init__(self) -> None:
        terms = _terms(self.terms, "terms")
        targets = _terms(self.targets, "targets") if self.targets else ()
        if not targets and len(terms) < 2:
            raise MerchError(f"a two-way synonym group needs at least two terms, got {list(terms)}; write "
                             "'trainers, sneakers', or 'cup => mug' for a one-way synonym")
        object.__setattr__(self, "terms", terms)
        object.__setattr__(self, "targets", targets)

    @property
    def kind(self) -> str:
        return "oneway" if self.targets else "twoway"

    @property
    def text(self) -> str:
        """The one-line form Synonym.parse reads: 'cup => mug' or 'trainers, sneakers'."""
        return f"{', '.join(self.terms)} => {', '.join(self.targets)}" if self.targets else ", ".join(self.terms)

    @classmethod
    def parse(cls, text: str, **fields: Any) -> "Synonym":
        if not isinstance(text, str) or not text.strip():
            raise MerchError("a synonym must be text like 'cup => mug' (one-way) or 'trainers, sneakers' (two-way)")
        if text.count("=>") > 1:
            raise MerchError(f"{text!r} has more than one '=>'; write one-way synonyms as 'cup, beaker => mug'")
        left, arrow, right = text.partition("=>")
        return cls(tuple(left.split(",")), tuple(right.split(",")) if arrow else (), **fields)

    @classmethod
    def from_json(cls, data: Any) -> "Synonym":
        """{"text": "cup => mug"} or {"terms": [...], "targets": [...]} (targets optional)."""
        if not isinstance(data, dict):
            raise MerchError(f"a synonym must be a JSON object, got {type(data).__name__}")
        if "text" in data:
            return cls.parse(data["text"])
        if not isinstance(data.get("terms"), list):
            raise MerchError("a synonym needs 'text' ('cup => mug') or 'terms' (a list of words)")
        targets = data.get("targets") or []
        if not isinstance(targets, list):
            raise MerchError("field 'targets' must be a list of words (empty for a two-way group)")
        return cls(tuple(data["terms"]), tuple(targets))

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "terms": list(self.terms), "targets": list(self.targets),
                "text": self.text, "updated": self.updated, "updated_by": self.updated_by}

    def applied_json(self) -> dict[str, Any]:
        """How a response names it when it shaped the results."""
        return {"kind": "synonym", "id": self.id, "text": self.text}

    def expansions(self, query_words: Sequence[str]) -> list[str]:
        """The terms this synonym adds to a query of `query_words` (lower-cased words); [] when it does not apply."""
        found = [t for t in self.terms if _contains(query_words, t.split())]
        if not found:
            return []
        added = self.targets if self.targets else tuple(t for t in self.terms if t not in found)
        return [t for t in added if not _contains(query_words, t.split())]


@dataclass
class Expansion:
    text: str  # the lexical text searched: the words typed, then the words synonyms added
    applied: list[Synonym] = field(default_factory=list)  # the synonyms that added words


def expand(text: str, synonyms: Sequence[Synonym]) -> Expansion:
    """`text` with the terms of every synonym that applies appended (each added once)."""
    query_words = words(text)
    added: list[str] = []
    applied = []
    for synonym in synonyms:
        extra = [t for t in synonym.expansions(query_words) if t not in added]
        if extra:
            applied.append(synonym)
            added.extend(extra)
    return Expansion(" ".join([text, *added]).strip() if added else text, applied)


def _terms(values: Sequence[Any], name: str) -> tuple[str, ...]:
    if isinstance(values, str) or not all(isinstance(v, str) for v in values):
        raise MerchError(f"synonym {name} must be a list of words, got {values!r}")
    out: list[str] = []
    for value in values:
        term = " ".join(words(value))
        if not term:
            raise MerchError(f"synonym {name} has an empty term in {list(values)!r}; remove the stray comma")
        if len(term.split()) > MAX_TERM_WORDS:
            raise MerchError(f"synonym term {term!r} has more than {MAX_TERM_WORDS} words; shorten it")
        if term not in out:
            out.append(term)
    if len(out) > MAX_TERMS:
        raise MerchError(f"a synonym has at most {MAX_TERMS} {name}, got {len(out)}; split it into groups")
    return tuple(out)


def _contains(haystack: Sequence[str], needle: Sequence[str]) -> bool:
    n = len(needle)
    return any(list(haystack[i:i + n]) == list(needle) for i in range(len(haystack) - n + 1))
