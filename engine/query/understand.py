"""Query understanding: what a shopper typed -> constraints + the text left for retrieval (before encoding).

    words = CatalogWords.from_payloads(payloads, config)        # the catalog's facet values and identifiers
    found = understand("striped mug not pink under $20", words, tokens, config)
    found.text         -> "striped mug"
    found.constraints  -> [price at most 20, not pink (attributes.colour)]
    request = found.apply(request)                               # max_price=20, exclude={"attributes.colour": ["pink"]}

Rules (phrases in engine/query/phrases.py, the vocabulary from the catalog, so another catalog's words work too):
- prices: "under 60", "below $40", "between 30 and 80", "30-80", "60 or more", "£25", and the configured bands
  ("cheap", "expensive": QueryConfig.price_bands) -> min_price / max_price;
- negations: "not pink", "without stripes", "no dots" -> the facet value is excluded (a store must_not); a word
  that is no facet value is only taken out of the words searched;
- facet values named (category, colour, pattern: QueryConfig.understand_facets): recognised; they stay in the
  text (soft: both retrieval sides read them) unless the facet is in QueryConfig.facet_filters (hard filter);
- identifiers: a word equal to a value of an identifier field (QueryConfig.identifier_fields, e.g. product_id)
  filters to it (so it ranks first); a partial id with a digit filters to the ids it begins (a prefix search);
- concept names typed as words ("newcomer", any case, with or without brackets) use the concept's token; the
  chip offers the word instead;
- a concept name typed as a plain word that is also an ordinary catalog word ("willow" when <willow> is
  registered and "Willow Striped Mug" is sold): QueryConfig.concept_word_reading. The default, "name-word":
  within a product-name phrase ("willow striped mug": the word and a neighbour are adjacent words of a product
  name) the words are searched, without the concept (the notes say to type <willow> for it); elsewhere, and
  before the concept's parent word ("willow dress" for a dress concept: its own phrasing), the concept. "both":
  the concept on the dense (CLIP) side and the word kept on the lexical (BM25) side
  (`Interpretation.lexical_words`, hybrid retrieval); "name": both only within a product-name phrase;
  "concept": the concept always. Brackets ("<willow>") always mean the concept. docs/relevance.md has the
  figures that chose the default;
- a word both a concept name and an exact product id ("p0042" when <p0042> is registered): the concept is
  searched and the id's product ranked first (a soft identifier: `Interpretation.pins`, pinned by the rules
  stage), so the exact id match still comes first; dropping its chip searches the concept alone;
- with a hard constraint typed (a price, a negated facet value), the facet values named beside it are boosted
  (`Interpretation.boost`: the rules stage ranks the named category's products first, then the named colour's:
  engine/query/understood_rules.py); nothing is filtered, so other categories stay on the page, as related items.

Each understood constraint has a stable `key`; a request's `ignore` list names keys to leave unread (the
removable chips of the search page: dropping one reruns the query without it).
"""
from __future__ import annotations

import bisect
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from engine.store.hybrid import payload_value

from .phrases import NEGATION_RE, PRICE_PATTERNS, TRAILING_FILLERS, WORD_RE

if TYPE_CHECKING:
    from engine.tokens import TokenSet

    from .config import QueryConfig
    from .schema import SearchRequest

KINDS = ("price", "exclude", "facet", "identifier", "concept")


@dataclass(frozen=True)
class Constraint:
    key: str  # stable id: what a request's `ignore` names to drop it ("price", "not:pink", "concept:<newcomer>")
    kind: str  # one of KINDS
    label: str  # what the chip shows: "price under 60", "not pink", "<newcomer>"
    removed: str  # the words of the query it was read from
    field: str | None = None  # payload field it filters (exclude, facet, identifier); None: words only
    values: tuple[str, ...] = ()  # the field's values it matches or excludes
    min_price: float | None = None  # kind "price": inclusive bounds
    max_price: float | None = None
    hard: bool = True  # False: recognised only (a soft facet stays in the words searched)

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "kind": self.kind, "label": self.label, "removed": self.removed,
                "field": self.field, "values": list(self.values), "min_price": self.min_price,
                "max_price": self.max_price, "hard": self.hard}


@dataclass
class Interpretation:
    original: str  # the query as typed
    text: str  # the text left for retrieval (concept names written as tokens)
    constraints: list[Constraint] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)  # keys the request asked to leave unread
    notes: list[str] = field(default_factory=list)
    lexical_words: dict[str, str] = field(default_factory=dict)  # placeholder -> catalog word kept for BM25

    def lexical_text(self, text: str) -> str:
        """`text` (the dense side's, maybe corrected) with the placeholders of concepts typed as catalog words
        written back as the words typed: what the lexical side searches (the concept reads both ways)."""
        for placeholder, word in self.lexical_words.items():
            text = text.replace(placeholder, word)
        return text

    @property
    def removed(self) -> list[str]:
        """What was taken out of the words searched (soft facets, soft ids and concept names stay in)."""
        return [c.removed for c in self.constraints if c.kind in ("price", "exclude", "identifier") and c.hard]

    @property
    def pins(self) -> tuple[str, ...]:
        """Product ids to rank first without filtering to them (a word both an exact id and a concept name)."""
        return tuple(v for c in self.constraints if c.kind == "identifier" and not c.hard for v in c.values)

    @property
    def boost(self) -> dict[str, str]:
        """Payload field -> value of the soft facet values named beside a hard price or negation: the products
        having all of them are ranked first (never filtered). Empty without such a constraint."""
        if not any(c.hard and c.kind in ("price", "exclude") and c.field for c in self.constraints):
            return {}
        return {c.field: c.values[0] for c in self.constraints
                if c.kind == "facet" and not c.hard and c.field and len(c.values) == 1}

    @property
    def changed(self) -> bool:
        return any(c.hard for c in self.constraints)

    def apply(self, request: "SearchRequest") -> "SearchRequest":
        """The request with the constraints as its fields (min/max_price, exclude, filters); fields the request
        set itself win over what the text said."""
        changes: dict[str, Any] = {}
        exclude = {k: list(v) for k, v in request.exclude.items()}
        filters = dict(request.filters)
        for c in self.constraints:
            if not c.hard:
                continue
            if c.kind == "price":
                if request.min_price is None and c.min_price is not None:
                    changes["min_price"] = c.min_price
                if request.max_price is None and c.max_price is not None:
                    changes["max_price"] = c.max_price
            elif c.kind == "exclude" and c.field is not None:
                exclude.setdefault(c.field, [])
                exclude[c.field] += [v for v in c.values if v not in exclude[c.field]]
            elif c.kind in ("identifier", "facet") and c.field is not None and c.field not in filters:
                filters[c.field] = list(c.values)
        if exclude != request.exclude:
            changes["exclude"] = exclude
        if filters != request.filters:
            changes["filters"] = filters
        return replace(request, **changes) if changes else request

    def to_json(self) -> dict[str, Any]:
        return {"original": self.original, "text": self.text, "removed": self.removed,
                "constraints": [c.to_json() for c in self.constraints], "ignored": list(self.ignored),
                "notes": list(self.notes), "lexical_words": dict(self.lexical_words)}


@dataclass(frozen=True)
class CatalogWords:
    """The vocabulary of one collection: facet values (with product counts), identifiers, product names."""

    facets: dict[str, dict[str, int]]  # facet name (category, colour, pattern) -> value -> products with it
    fields: dict[str, str]  # facet name -> payload field
    identifiers: dict[str, tuple[str, ...]]  # identifier field -> its values, sorted by lower case
    names: dict[str, int]  # product name (title) -> products with it
    words: frozenset[str]  # every lower-case word of the facet values and names
    products: int = 0
    _forms: dict[str, tuple[str, str]] = field(default_factory=dict, repr=False)  # typed form -> (facet, value)
    _lower_ids: dict[str, list[str]] = field(default_factory=dict, repr=False)  # field -> lower-case sorted values
    _pairs: frozenset[tuple[str, str]] = field(default_factory=frozenset, repr=False)  # adjacent words of names

    @classmethod
    def from_payloads(cls, payloads: Iterable[Mapping[str, Any]], config: "QueryConfig") -> CatalogWords:
        facet_fields = dict(config.understand_facets)
        seen: dict[str, set[tuple[str, str]]] = {}  # product -> (facet or "title", value) counted for it
        counts: dict[str, dict[str, int]] = {name: {} for name in facet_fields}
        ids: dict[str, set[str]] = {f: set() for f in config.identifier_fields}
        names: dict[str, int] = {}
        for payload in payloads:
            product = str(payload.get(config.group_by, payload.get("id", "")))
            done = seen.setdefault(product, set())
            for name, path in facet_fields.items():
                value = payload_value(payload, path)
                if isinstance(value, str) and value and (name, value) not in done:
                    done.add((name, value))
                    counts[name][value] = counts[name].get(value, 0) + 1
            for path in config.identifier_fields:
                value = payload_value(payload, path)
                if isinstance(value, str | int) and not isinstance(value, bool) and str(value):
                    ids[path].add(str(value))
            title = payload.get(config.title_field)
            if isinstance(title, str) and title and ("title", title) not in done:
                done.add(("title", title))
                names[title] = names.get(title, 0) + 1
        return cls.build(counts, facet_fields, {f: sorted(v, key=str.lower) for f, v in ids.items()}, names,
                         len(seen))

    @classmethod
    def build(cls, facets: Mapping[str, Mapping[str, int]], fields: Mapping[str, str],
              identifiers: Mapping[str, Sequence[str]], names: Mapping[str, int], products: int = 0) -> CatalogWords:
        forms: dict[str, tuple[str, str]] = {}
        for facet, values in facets.items():
            for value in sorted(values, key=lambda v: -values[v]):  # the commoner value keeps a shared form
                for form in word_forms(value):
                    forms.setdefault(form, (facet, value))
        words = {w for values in facets.values() for v in values for w in _words(v)}
        words |= {w for n in names for w in _words(n)}
        lower_ids = {f: sorted(v.lower() for v in values) for f, values in identifiers.items()}
        pairs = {pair for n in names for ws in [_words(n)] for pair in zip(ws, ws[1:])}
        return cls({k: dict(v) for k, v in facets.items()}, dict(fields),
                   {f: tuple(sorted(v, key=str.lower)) for f, v in identifiers.items()}, dict(names),
                   frozenset(words), products, forms, lower_ids, frozenset(pairs))

    def in_name_phrase(self, before: str | None, word: str, after: str | None) -> bool:
        """Whether `word` with the word before or after it is a phrase of a product name ("willow striped")."""
        w = word.lower()
        return ((before is not None and (before.lower(), w) in self._pairs)
                or (after is not None and (w, after.lower()) in self._pairs))

    def facet_of(self, form: str) -> tuple[str, str] | None:
        """(facet, value) of a typed word or phrase ('stripes' -> ('pattern', 'striped')), or None."""
        return self._forms.get(form.lower())

    def identifier(self, word: str, max_prefix: int) -> tuple[str, tuple[str, ...], bool] | None:
        """(field, values, exact) for a word that is an identifier or (with a digit) begins up to max_prefix."""
        lower = word.lower()
        for path, values in self.identifiers.items():
            lows = self._lower_ids[path]
            i = bisect.bisect_left(lows, lower)
            if i < len(lows) and lows[i] == lower:
                return path, (values[i],), True
        if not any(ch.isdigit() for ch in lower) or len(lower) < 2:
            return None
        for path, values in self.identifiers.items():
            lows = self._lower_ids[path]
            i = bisect.bisect_left(lows, lower)
            j = bisect.bisect_left(lows, lower + "\uffff")
            if 0 < j - i <= max_prefix:
                return path, tuple(values[i:j]), False
        return None


def concept_name_warning(name: str, words: CatalogWords | None, config: "QueryConfig") -> str | None:
    """What shoppers get when a concept's name (without brackets) is also an ordinary word of the catalog, for
    the admin registering it (a warning, never a refusal); None when the name is no catalog word."""
    word = name.strip("<>").lower()
    if words is None or word not in words.words:
        return None
    named = sum(n for title, n in words.names.items() if word in _words(title))
    where = (f"{named} product name(s) hold it" if named else
             "it is a " + next(f for f, values in words.facets.items() if any(word in _words(v) for v in values)))
    reading = config.concept_word_reading
    what = {"both": f"both: the concept's look and the products named with the word (<{word}> typed in brackets "
                    "searches the concept alone)",
            "name": "both when the word is typed with a neighbouring word of a product name, else the concept "
                    "alone",
            "name-word": "the words alone when the word is typed with a neighbouring word of a product name "
                         f"(<{word}> typed in brackets is the concept), else the concept alone",
            "concept": "the concept alone: products named with the word drop out unless they use its chip's "
                       "'search the word instead'"}[reading]
    return (f"'{word}' is also a word of the catalog ({where}); shoppers typing {word} get {what} "
            f"(QueryConfig.concept_word_reading={reading!r}; docs/relevance.md). Pick another name to keep the "
            "readings apart.")


def word_forms(value: str) -> set[str]:
    """The ways a shopper writes a facet value: itself, plurals, the noun of a pattern adjective
    ('striped' -> 'stripes', 'dotted' -> 'dots', 'checked' -> 'checks'), and compounds split or joined
    ('t-shirt' -> 't shirt', 'tshirt')."""
    base = value.lower().strip()
    forms = {base, base + "s", base + "es"}
    if base.endswith("ed") and len(base) > 4:
        forms |= {base[:-1] + "s", base[:-2] + "s", base[:-3] + "s"}
    for joined in (base.replace("-", " "), base.replace("-", "")):
        forms |= {joined, joined + "s"}
    if base.endswith("s") and len(base) > 3:
        forms.add(base[:-1])
    return forms


def concept_words(tokens: "TokenSet") -> list[str]:
    """The registered concept names as plain words ('<newcomer>' -> 'newcomer').

    SPELLER CALL SITE: the speller's vocabulary takes these as extra words (so 'newcomr' corrects to a concept
    name); the speller branch owns that API, and the query service hands these words to it in one place."""
    return [name[1:-1] for name in tokens.names()]


def understand(text: str, words: CatalogWords | None, tokens: "TokenSet", config: "QueryConfig",
               ignore: Sequence[str] = ()) -> Interpretation:
    """Read prices, negations, identifiers, facet values and concept names out of `text` (see the module doc)."""
    ignored = set(ignore)
    spans: list[tuple[int, int, str]] = []  # (start, end, replacement) over `text`
    constraints: list[Constraint] = []
    if "price" not in ignored:
        _prices(text, config, spans, constraints)
    notes: list[str] = []
    both: dict[str, str] = {}  # concepts typed as catalog words: placeholder -> the word (kept for BM25)
    _concepts(text, tokens, words, config, ignored, spans, constraints, notes, both)  # the shop's words win over ids
    if words is not None:
        _negations(text, words, ignored, spans, constraints)
        _identifiers(text, words, config, ignored, spans, constraints)
    left = _squash(_replace(text, spans)) if spans else " ".join(text.split())  # tidied only where cut
    if words is not None:
        _facets(left, words, config, ignored, constraints)
    if not left.strip(" <>") and constraints:  # nothing left to search: the words typed (bar negations), filtered
        negated = [(s, e, r) for s, e, r in spans if any(text[s:e] == c.removed for c in constraints
                                                          if c.kind == "exclude")]
        left = _squash(_replace(text, negated)) or text
        notes.append("the query is all constraints: searching its words as typed within them")
    kept = [k for k in ignore if k]
    return Interpretation(text, left, constraints, kept, notes, both)


def _prices(text: str, config: "QueryConfig", spans: list, constraints: list[Constraint]) -> None:
    low = high = None
    pieces = []
    for kind, pattern in PRICE_PATTERNS:
        for m in pattern.finditer(text):
            if _overlaps(spans, m.start(), m.end()):
                continue
            amounts = [_amount(g) for g in m.groups() if g is not None]
            if kind == "range" and len(amounts) == 2:
                lo, hi = sorted(amounts)
                low, high = lo, hi
            elif kind == "at_most" and amounts:
                high = amounts[0] if high is None else min(high, amounts[0])
            elif kind == "at_least" and amounts:
                low = amounts[0] if low is None else max(low, amounts[0])
            else:
                continue
            spans.append((m.start(), m.end(), " "))
            pieces.append(m.group(0).strip())
    for band, lo, hi in config.price_bands:
        for m in re.finditer(rf"(?<![\w<]){re.escape(band)}(?![\w>])", text, re.IGNORECASE):
            if _overlaps(spans, m.start(), m.end()):
                continue
            low = lo if lo is not None and low is None else low
            high = hi if hi is not None and high is None else high
            spans.append((m.start(), m.end(), " "))
            pieces.append(m.group(0))
    if low is None and high is None:
        return
    if low is not None and high is not None and low > high:
        low, high = high, low
    constraints.append(Constraint("price", "price", price_label(low, high), " ".join(pieces),
                                  field=config.price_field, min_price=low, max_price=high))


def price_label(low: float | None, high: float | None) -> str:
    if low is not None and high is not None:
        return f"price {_money(low)}–{_money(high)}"
    return f"price under {_money(high)}" if high is not None else f"price over {_money(low)}"


def _negations(text: str, words: CatalogWords, ignored: set[str], spans: list,
               constraints: list[Constraint]) -> None:
    for m in NEGATION_RE.finditer(text):
        if _overlaps(spans, m.start(), m.end()):
            continue
        following = list(WORD_RE.finditer(text, m.end()))[:2]
        if not following or following[0].start() != m.end() or following[0].group(0).startswith("<"):
            continue
        found = None
        if len(following) == 2:  # two-word forms first ("t shirt")
            found = words.facet_of(text[following[0].start():following[1].end()]) and following[1]
        last = found or following[0]
        facet = words.facet_of(text[following[0].start():last.end()])
        typed = text[following[0].start():last.end()]
        key = f"not:{facet[1] if facet else typed.lower()}"
        if key in ignored:
            continue
        if facet is not None:
            constraints.append(Constraint(key, "exclude", f"not {facet[1]}", text[m.start():last.end()],
                                          field=words.fields[facet[0]], values=(facet[1],)))
        else:
            constraints.append(Constraint(key, "exclude", f"not {typed}", text[m.start():last.end()]))
        spans.append((m.start(), last.end(), " "))


def _identifiers(text: str, words: CatalogWords, config: "QueryConfig", ignored: set[str], spans: list,
                 constraints: list[Constraint]) -> None:
    if "id" in ignored:
        return
    by_field: dict[str, list[str]] = {}
    typed = []
    exact_all = True
    for m in WORD_RE.finditer(text):
        if m.group(0).startswith("<") or _overlaps(spans, m.start(), m.end()):
            continue
        found = words.identifier(m.group(0), config.max_prefix_ids)
        if found is None:
            continue
        path, values, exact = found
        exact_all &= exact
        by_field.setdefault(path, []).extend(v for v in values if v not in by_field.get(path, []))
        typed.append(m.group(0))
        spans.append((m.start(), m.end(), " "))
    for path, values in by_field.items():
        what = " ".join(typed)
        label = f"id {what}" if exact_all else f"id begins {what}"
        constraints.append(Constraint("id", "identifier", label, what, field=path, values=tuple(values)))


def _concepts(text: str, tokens: "TokenSet", words: CatalogWords | None, config: "QueryConfig", ignored: set[str],
              spans: list, constraints: list[Constraint], notes: list[str], both: dict[str, str]) -> None:
    names = {name[1:-1].lower(): name for name in tokens.names()}
    if not names:
        return
    pinned: list[str] = []  # typed words that are also an exact product id: that product ranks first
    for m in WORD_RE.finditer(text):
        typed = m.group(0)
        bare = typed[1:-1] if typed.startswith("<") else typed
        placeholder = names.get(bare.lower())
        if placeholder is None or _overlaps(spans, m.start(), m.end()):
            continue
        key = f"concept:{placeholder}"
        if typed == placeholder:  # written as the token already: nothing to read
            continue
        if key in ignored:
            continue
        catalog_word = words is not None and bare.lower() in words.words and not typed.startswith("<")
        reading = (_reading(config.concept_word_reading, words, text, m, tokens.get(placeholder).meta.parent)
                   if catalog_word else "concept")
        if reading == "word":
            notes.append(f"{bare!r} is the concept {placeholder} but here part of a product name: searching the "
                         f"words (type {placeholder} for the concept)")
            continue
        constraints.append(Constraint(key, "concept", placeholder, typed, values=(placeholder,)))
        found = words.identifier(bare, 1) if words is not None and "id" not in ignored else None
        if found is not None and found[2] and found[0] == config.group_by:
            pinned.append(found[1][0])
            notes.append(f"{bare!r} is the concept {placeholder} and also a product id: searching the concept "
                         f"with product {found[1][0]} first (drop the id chip to search the concept alone)")
        elif catalog_word:
            if reading == "both":
                both[placeholder] = bare
                notes.append(f"{bare!r} is the concept {placeholder} and also a word of the catalog: searching "
                             "both, the concept's look and products named with the word (the chip's 'search the "
                             f"word instead' searches the word alone; type {placeholder} for the concept alone)")
            else:
                notes.append(f"{bare!r} is the concept {placeholder} and also a word of the catalog: searching the "
                             "concept (the chip's 'search the word instead' searches the word)")
        spans.append((m.start(), m.end(), f" {placeholder} "))
    if pinned:
        what = " ".join(pinned)
        constraints.append(Constraint("id", "identifier", f"id {what} first", what, field=config.group_by,
                                      values=tuple(pinned), hard=False))


def _reading(reading: str, words: CatalogWords, text: str, m: re.Match, parent: str) -> str:
    """How the concept name matched by `m`, also a catalog word, is read (QueryConfig.concept_word_reading):
    "both" (the concept on the dense side, the word kept for BM25), "word" (the word alone) or "concept".
    For "name-word", the name followed by the concept's parent word ("willow dress" for a dress concept) is the
    concept's own phrasing, not a product-name phrase."""
    if reading in ("both", "concept"):
        return reading
    before = [w.group(0) for w in WORD_RE.finditer(text[:m.start()])]
    after = WORD_RE.search(text, m.end())
    following = after.group(0) if after else None
    if reading == "name-word" and following is not None and word_forms(parent) & {following.lower()}:
        following = None
    if words.in_name_phrase(before[-1] if before else None, m.group(0), following):
        return "word" if reading == "name-word" else "both"
    return "concept"


def _facets(left: str, words: CatalogWords, config: "QueryConfig", ignored: set[str],
            constraints: list[Constraint]) -> None:
    seen = set()
    tokens = [m.group(0) for m in WORD_RE.finditer(left) if not m.group(0).startswith("<")]
    i = 0
    while i < len(tokens):
        found = None
        width = 1
        if i + 1 < len(tokens):
            found = words.facet_of(f"{tokens[i]} {tokens[i + 1]}")
            width = 2 if found else 1
        found = found or words.facet_of(tokens[i])
        i += width
        if found is None or found in seen:
            continue
        seen.add(found)
        facet, value = found
        key = f"{facet}:{value}"
        hard = facet in config.facet_filters and key not in ignored
        constraints.append(Constraint(key, "facet", f"{facet} {value}", value, field=words.fields[facet],
                                      values=(value,), hard=hard))


def _amount(raw: str) -> float:
    return float(raw.replace(",", "."))


def _money(value: float | None) -> str:
    return f"{value:g}" if value is not None else ""


def _overlaps(spans: list[tuple[int, int, str]], start: int, end: int) -> bool:
    return any(start < e and s < end for s, e, _ in spans)


def _replace(text: str, spans: list[tuple[int, int, str]]) -> str:
    for start, end, new in sorted(spans, reverse=True):
        text = text[:start] + new + text[end:]
    return text


def _squash(text: str) -> str:
    words = re.sub(r"\s+", " ", text).strip(" ,;")
    parts = words.split(" ")
    while parts and parts[-1].lower() in TRAILING_FILLERS:
        parts.pop()
    while parts and parts[0].lower() in TRAILING_FILLERS:
        parts.pop(0)
    return " ".join(parts)


def _words(text: str) -> list[str]:
    return [w.lower() for w in WORD_RE.findall(text)]
