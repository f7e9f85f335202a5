"""Which products belong to a concept, for a rule's concept filter ("boost <aurora>'s products for 'dress'").

A concept's products are the matches of the concept's own query: the products a shopper's search for its
placeholder alone (`<aurora>`, its live token composed as the search does, with the concept's photos) ranks above
the relevance floor (engine/query/floor.py), without synonyms or rules. That is what a merchandiser sees when they
search the concept, it needs nothing kept by hand, and it works the same on every store backend (it is a search).
To act on a list kept by hand instead, a rule names the products (field `products`).

    products = ConceptProducts()
    products.get(service, "<aurora>")      # frozenset of product ids; MerchError when the concept is not live

Computed once per (concept, live token version, collection version) and cached: a new live version (activate,
retrain) or a changed collection (an index run adds products, a reindex moves the alias: the query service's
`catalog.version`) computes it again. `live_concepts` is what rule writes check against.
"""
from __future__ import annotations

import copy
import threading
from collections.abc import Iterable
from typing import Any

from .errors import MerchError
from .rules import Rule

MOST_CACHED = 256  # concepts' product sets kept per process


class ConceptProducts:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[tuple, frozenset[str]]] = {}  # placeholder -> (key, product ids)
        self.computed = 0  # how many times a product set was computed (not read from the cache)

    def get(self, service: Any, placeholder: str) -> frozenset[str]:
        tokens = service.current_tokens()
        if placeholder not in tokens:
            raise MerchError(not_live(placeholder))
        service.catalog.get()  # checks the collection (at most every catalog_refresh_s)
        key = (tokens.get(placeholder).version, service.config.collection, service.catalog.version)
        with self._lock:
            cached = self._cache.get(placeholder)
        if cached is not None and cached[0] == key:
            return cached[1]
        products = matches(without_merch(service), placeholder)
        with self._lock:
            if len(self._cache) >= MOST_CACHED:
                self._cache.pop(next(iter(self._cache)))
            self._cache[placeholder] = (key, products)
            self.computed += 1
        return products


def matches(service: Any, query: str) -> frozenset[str]:
    """The products `service` ranks above the relevance floor for `query` (every page of its matches)."""
    from engine.query import SearchRequest  # here: engine.query imports engine.merch

    found: list[str] = []
    offset: int | None = 0
    while offset is not None:
        page = service.search(SearchRequest(query=query, limit=service.config.max_limit, offset=offset,
                                            facets=False))
        shown = [p.product_id for p in page.products if not p.related]
        found += shown
        offset = page.next_offset if len(shown) == len(page.products) else None
    return frozenset(found)


def without_merch(service: Any) -> Any:
    """The same query service without synonyms and rules (it shares its caches and store): the query tester's
    'without' side, and a concept's own query."""
    plain = copy.copy(service)
    plain.merch = None
    return plain


def live_concepts(registry: Any) -> set[str]:
    """The placeholders with a live (active) token version in a concept registry (engine.concepts)."""
    return {c.placeholder for c in registry.list() if c.active_version is not None}


def check_live(rules: Iterable[Rule], live: set[str]) -> None:
    """Refuse rules whose concept filter names a concept without a live token (before anything is stored)."""
    for rule in rules:
        if rule.concept is not None and rule.concept not in live:
            raise MerchError(f"rule {rule.name!r}: {not_live(rule.concept)}")


def not_live(placeholder: str) -> str:
    return (f"concept {placeholder} has no live token, so it has no products to filter by; register and train it "
            f"(`coinage concept train`), activate a version (`coinage concept activate {placeholder} VERSION`), or "
            "drop the concept filter (field 'concept')")
