"""Merchandising rules: for a query, pin products to positions, boost or bury products matching a filter, hide
products. Pure functions over the request's ranked candidate products (engine.store.hybrid.Group); the store
(engine/merch/store.py) keeps the rules and engine/merch/stage.py plugs them into the retrieval.

    rule = Rule(name="mugs first", match="contains", pattern="cup", action="boost", category="mug", amount=1.0)
    live = [r for r in rules if r.applies(query_text, placeholders, now)]
    shaped = shape(groups, matched, live, extra=pinned_products_found_elsewhere, members={"<aurora>": ids})

Order of the stage: hide -> boost and bury (re-scored: score + amount, or - amount, then re-sorted, ties keep the
fused order) -> pins (each pinned product moved to its position, so it appears exactly once). A product both
hidden and pinned stays hidden. The list keeps its two parts, the query's matches and then the related items: a
boosted or pinned product counts as a match (the merchandiser chose it for the query), a buried match stays a
match (at most at the end of the matches: hide it to take it out).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Mapping, Sequence

from engine.lexical import words
from engine.product import CATEGORY, COLOUR, PRICE
from engine.store.hybrid import Group, payload_value

from .errors import MerchError

MATCHES = ("exact", "contains", "concept", "always")  # concept: the query uses that <placeholder>
ACTIONS = ("pin", "boost", "bury", "hide")
MAX_PRODUCTS = 100


@dataclass(frozen=True)
class Rule:
    name: str  # what the merchandiser calls it
    match: str  # one of MATCHES
    pattern: str  # the query (exact, contains: compared as lower-cased words) or the concept's <placeholder>
    action: str  # one of ACTIONS
    products: tuple[str, ...] = ()  # product ids: pinned (in order), hidden, or boosted/buried
    position: int = 1  # pin: 1-based position of the first pinned product, the next ones after it
    category: str | None = None  # boost/bury/hide filter: payload category equals
    colour: str | None = None  # ... payload attributes.colour equals
    min_price: float | None = None  # ... price at least
    max_price: float | None = None  # ... price at most
    concept: str | None = None  # ... one of the concept's products: the matches of its own query '<aurora>'
    amount: float = 1.0  # boost/bury: score added (subtracted); fused scores lie in [0, 1] (RRF: ~0.03)
    start: str | None = None  # ISO date-time (UTC when no zone) from which it applies; None: at once
    end: str | None = None  # ISO date-time until which it applies; None: no end
    enabled: bool = True  # switched off: kept but not applied
    id: int | None = None  # database row id (None until stored)
    updated: str = ""
    updated_by: str = ""

    def __post_init__(self) -> None:
        _one_of("match", self.match, MATCHES)
        _one_of("action", self.action, ACTIONS)
        if not isinstance(self.name, str) or not self.name.strip():
            raise MerchError("a rule needs a name (field 'name'), e.g. 'mugs first for cup'")
        if not isinstance(self.pattern, str) or (self.match != "always" and not self.pattern.strip()):
            raise MerchError(f"a {self.match!r} rule needs the query it matches (field 'pattern')")
        if self.match == "concept":
            _placeholder("pattern", self.pattern, "a concept rule's pattern")
        if self.concept is not None:
            _placeholder("concept", self.concept, "the concept filter")
        if isinstance(self.products, str) or not all(isinstance(p, str) and p for p in self.products):
            raise MerchError(f"field 'products' must be a list of product ids, got {self.products!r}")
        object.__setattr__(self, "products", tuple(dict.fromkeys(self.products)))
        if len(self.products) > MAX_PRODUCTS:
            raise MerchError(f"a rule names at most {MAX_PRODUCTS} products, got {len(self.products)}")
        if self.action == "pin" and not self.products:
            raise MerchError("a pin rule needs the product ids to pin (field 'products')")
        if self.action != "pin" and not self.products and not self.has_filter:
            raise MerchError(f"a {self.action} rule needs products (field 'products') or a filter (category, "
                             "colour, min_price, max_price, concept) to say what it applies to")
        if isinstance(self.position, bool) or not isinstance(self.position, int) or self.position < 1:
            raise MerchError(f"field 'position' must be an integer >= 1, got {self.position!r}")
        for name in ("min_price", "max_price", "amount"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise MerchError(f"field {name!r} must be a number, got {value!r}")
        if self.amount < 0:
            raise MerchError(f"field 'amount' must be >= 0 (bury subtracts it), got {self.amount}")
        start, end = parse_time("start", self.start), parse_time("end", self.end)
        if start and end and end <= start:
            raise MerchError(f"the rule ends ({self.end}) before it starts ({self.start}); swap them")
        if not isinstance(self.enabled, bool):
            raise MerchError(f"field 'enabled' must be true or false, got {self.enabled!r}")

    @property
    def has_filter(self) -> bool:
        return any(v is not None for v in (self.category, self.colour, self.min_price, self.max_price, self.concept))

    def applies(self, query: str, placeholders: Sequence[str], now: datetime) -> bool:
        """Whether the rule is on, in its dates, and matches the query (text as typed, its placeholders)."""
        if not self.enabled:
            return False
        start, end = parse_time("start", self.start), parse_time("end", self.end)
        if (start and now < start) or (end and now >= end):
            return False
        if self.match == "always":
            return True
        if self.match == "concept":
            return self.pattern in placeholders
        typed, wanted = words(query), words(self.pattern)
        if self.match == "exact":
            return typed == wanted
        n = len(wanted)
        return any(typed[i:i + n] == wanted for i in range(len(typed) - n + 1))

    def selects(self, product_id: str, payload: Mapping[str, Any],
                members: Mapping[str, frozenset[str]] | None = None) -> bool:
        """Whether a product is one the rule acts on: named in `products`, or matching every filter given.
        `members`: each concept's products by placeholder (engine/merch/concept_products.py)."""
        if product_id in self.products:
            return True
        if not self.has_filter:
            return False
        if self.concept is not None and product_id not in (members or {}).get(self.concept, ()):
            return False
        if self.category is not None and payload.get(CATEGORY) != self.category:
            return False
        if self.colour is not None and payload_value(payload, COLOUR) != self.colour:
            return False
        if self.min_price is not None or self.max_price is not None:
            try:
                price = float(payload.get(PRICE))
            except (TypeError, ValueError):
                return False
            if (self.min_price is not None and price < self.min_price) or (
                    self.max_price is not None and price > self.max_price):
                return False
        return True

    def to_json(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["products"] = list(self.products)
        return out

    @classmethod
    def from_json(cls, data: Any, **fields: Any) -> "Rule":
        if not isinstance(data, Mapping):
            raise MerchError(f"a rule must be a JSON object, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)} - {"id", "updated", "updated_by"}
        unknown = sorted(set(data) - known - {"id", "updated", "updated_by"})
        if unknown:
            raise MerchError(f"unknown rule field(s) {unknown}; known fields: {sorted(known)}")
        values = {k: v for k, v in data.items() if k in known}
        if "products" in values:
            if isinstance(values["products"], str):
                values["products"] = [p for p in values["products"].replace(",", " ").split() if p]
            if not isinstance(values["products"], list):
                raise MerchError("field 'products' must be a list of product ids")
            values["products"] = tuple(values["products"])
        try:
            return cls(**values, **fields)
        except TypeError as e:  # a required field missing
            raise MerchError(f"a rule needs name, match, pattern and action ({e})") from e


# the columns of a rules CSV, the admin form's fields
TEXT_FIELDS = ("name", "match", "pattern", "action", "products", "position", "category", "colour", "min_price",
               "max_price", "concept", "amount", "start", "end", "enabled")


def rule_from_text(values: Mapping[str, str]) -> Rule:
    """A Rule from text fields (an admin form, a CSV row): empty means not given; products separated by spaces or
    commas; enabled 'on'/'true'/'1' (absent: on)."""
    data: dict[str, Any] = {}
    for name in TEXT_FIELDS:
        raw = values.get(name)
        raw = "" if raw is None else str(raw).strip()
        if raw == "" and name != "pattern":
            continue
        if name == "position":
            data[name] = _number(name, raw, int)
        elif name in ("min_price", "max_price", "amount"):
            data[name] = _number(name, raw, float)
        elif name == "enabled":
            data[name] = raw.lower() in ("on", "1", "true", "yes")
        else:
            data[name] = raw
    return Rule.from_json(data)


def rule_to_text(rule: Rule) -> dict[str, str]:
    """The CSV row of a rule (rule_from_text reads it back)."""
    data = rule.to_json()
    row = {name: "" if data[name] is None else str(data[name]) for name in TEXT_FIELDS}
    row["products"] = " ".join(rule.products)
    row["enabled"] = "true" if rule.enabled else "false"
    return row


def _number(name: str, raw: str, kind: type) -> Any:
    try:
        return kind(raw)
    except ValueError:
        raise MerchError(f"field {name!r} must be a{'n integer' if kind is int else ' number'}, got {raw!r}") from None


@dataclass
class Applied:
    rule: Rule
    products: list[str] = field(default_factory=list)  # the products it moved, boosted, buried or hid
    skipped: str | None = None  # why the rule could not apply (its concept has no live token), for the admin

    def to_json(self) -> dict[str, Any]:
        out = {"kind": "rule", "id": self.rule.id, "name": self.rule.name, "action": self.rule.action,
               "products": self.products}
        return out if self.skipped is None else {**out, "skipped": self.skipped}


@dataclass
class Shaped:
    products: list[Group]  # the candidate products after the rules, in the list's order
    matched: int  # the first `matched` are the query's matches, the rest related items (candidates.Candidates)
    applied: list[Applied]  # the rules that changed something


def shape(ranked: Sequence[Group], matched: int, rules: Sequence[Rule], extra: Mapping[str, Group] | None = None,
          members: Mapping[str, frozenset[str]] | None = None, asked: Sequence[Rule] = ()) -> Shaped:
    """The rules applied to `ranked` (products best first, the first `matched` of them the query's matches).
    `extra`: pinned products not in `ranked`, by product id (found by their own store query); `members`: each
    concept filter's products (Rule.selects). `asked`: rules the query itself asks for (query understanding's
    boosts of the facet values it names), applied after `rules` alike, except that what they boost stays a
    related item if it was one: the shop's boost makes a product a match (the merchandiser chose it for the query),
    the query's only orders ("red dress under 40" puts red mugs first among the related items, not in the count)."""
    extra = extra or {}
    shop = len(rules)  # rules[:shop] are the shop's
    rules = [*rules, *asked]
    applied: dict[int, Applied] = {}

    def note(i: int, rule: Rule, product_id: str) -> None:
        applied.setdefault(i, Applied(rule)).products.append(product_id)

    def selected(rule: Rule, g: Group) -> bool:
        return rule.selects(str(g.key), g.hits[0].payload if g.hits else {}, members)

    hidden: set[str] = set()
    for i, rule in enumerate(rules):
        if rule.action == "hide":
            for g in list(ranked) + list(extra.values()):
                if str(g.key) not in hidden and selected(rule, g):
                    hidden.add(str(g.key))
                    note(i, rule, str(g.key))
    scored = []  # (not a match, -(score + boosts - buries), fused order, product): scores shown stay the query's
    for order, g in enumerate(ranked):
        if str(g.key) in hidden:
            continue
        delta, boosted = 0.0, False
        for i, rule in enumerate(rules):
            if rule.action in ("boost", "bury") and selected(rule, g):
                delta += rule.amount if rule.action == "boost" else -rule.amount
                boosted = boosted or (rule.action == "boost" and i < shop)
                note(i, rule, str(g.key))
        scored.append((not (order < matched or boosted), -(g.score + delta), order, g))
    scored.sort(key=lambda t: t[:3])
    products = [t[3] for t in scored]
    matched = sum(1 for t in scored if not t[0])
    pins: list[tuple[int, int, str]] = []  # (position, order given, product id)
    for i, rule in enumerate(rules):
        if rule.action == "pin":
            for j, product_id in enumerate(rule.products):
                if product_id not in hidden and product_id not in {pid for *_, pid in pins}:
                    pins.append((rule.position + j, i, product_id))
    by_id = {str(g.key): g for g in products}
    pinned = [(pos, i, by_id.get(pid) or extra.get(pid)) for pos, i, pid in sorted(pins)]
    pinned = [(pos, i, g) for pos, i, g in pinned if g is not None]  # a pinned product the query cannot reach
    chosen = {str(g.key) for _, _, g in pinned}
    matched -= sum(1 for g in products[:matched] if str(g.key) in chosen)
    products = [g for g in products if str(g.key) not in chosen]
    for position, i, g in pinned:
        at = min(position - 1, len(products))
        products.insert(at, g)
        matched += at <= matched  # pinned among (or right after) the matches: one of them
        note(i, rules[i], str(g.key))
    return Shaped(products, matched, [applied[i] for i in sorted(applied)])


def pinned_ids(rules: Sequence[Rule]) -> list[str]:
    return list(dict.fromkeys(p for r in rules if r.action == "pin" for p in r.products))


def parse_time(name: str, value: str | None) -> datetime | None:
    """An ISO date or date-time as an aware UTC datetime (a value without a zone is UTC); None stays None."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise MerchError(f"field {name!r} must be an ISO date-time like 2026-12-24T00:00, got {value!r}")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as e:
        raise MerchError(f"field {name!r} is not an ISO date-time ({e}); write e.g. 2026-12-24T00:00") from e
    return parsed.replace(tzinfo=timezone.utc) if parsed.tzinfo is None else parsed.astimezone(timezone.utc)


def _placeholder(name: str, value: Any, what: str) -> None:
    if not (isinstance(value, str) and len(value) > 2 and value.startswith("<") and value.endswith(">")):
        raise MerchError(f"{what} (field {name!r}) is the concept's placeholder, e.g. '<aurora>', got {value!r}")


def _one_of(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise MerchError(f"field {name!r} must be one of {allowed}, got {value!r}")
