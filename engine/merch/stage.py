"""The rules stage where the page is cut: a fixed window of the ranked products, the rules applied (rules.shape),
then the page sliced out of it.

    page, applied = shaped_page(retriever, request, vector, lexical_text, rules, window=100)

The rules shape the request's whole candidate list (engine.query.candidates: the same list for every page), so
a pinned product sits at its position once and is not repeated on a later page, and a boosted product moves by the
same amount on every page; the page is then sliced out of the shaped list. Rules shape relevance-ranked product pages; a price sort or a photo page is served as
the store ranks it (a price sort is an explicit order the shopper chose).

Boosts are applied here, over the candidate products in hand, not in the store: see docs/merch.md ("Why boosts are
applied over the candidate window") for the formula-query alternative both store backends offer.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np

from .rules import Applied, Rule, pinned_ids, shape

WINDOW = 100  # products ranked before the rules apply: boosts and buries reorder within it


def shaped_page(retriever: Any, request: Any, vector: np.ndarray | None, lexical: str, rules: Sequence[Rule],
                window: int = WINDOW) -> tuple[Any, list[Applied]]:
    """One page (engine.query.retrieval.Page) of `request` with `rules` applied, and the rules that changed it."""
    if not rules or request.mode != "products" or request.sort != "relevance":
        return retriever.page(request, vector, lexical), []
    limit = request.limit or retriever.config.default_limit
    pins = pinned_ids(rules)
    # the whole candidate list (it is in memory: at most the two sides' windows) plus the pinned products
    size = max(window, request.offset + limit, 2 * retriever.config.candidate_window_most) + len(pins)
    page = retriever.page(dataclasses.replace(request, offset=0, limit=size), vector, lexical)
    if not page.products:  # points without the product field: nothing to shape
        return retriever.page(request, vector, lexical), []
    found = {p.product_id for p in page.products}
    missing = [p for p in pins if p not in found]
    extra = {}
    if missing:  # pinned products the query's window does not reach: the same query, restricted to them
        group_by = retriever.config.group_by
        lookup = dataclasses.replace(request, offset=0, limit=len(missing), facets=False,
                                     filters={**request.filters, group_by: missing})
        extra = {p.product_id: p for p in retriever.page(lookup, vector, lexical).products}
    shaped = shape(page.products, rules, extra)
    end = request.offset + limit
    products = [dataclasses.replace(p, rank=rank) for rank, p in enumerate(shaped.products[request.offset:end],
                                                                             start=request.offset + 1)]
    return dataclasses.replace(page, products=products, results=[p.photos[0] for p in products],
                               total=len(shaped.products),
                               next_offset=end if end < len(shaped.products) else None), shaped.applied
