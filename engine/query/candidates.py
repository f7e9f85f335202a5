"""One request, one candidate set: group, floor, order, count and page one flat fused window in Python.

A search fetches one fixed window of fused points from the store (`QueryConfig.candidate_window` points per
side, the same for every page and page size), then everything a shopper sees is derived here from that one
list, the same way on every store backend:

    window hits --rank--> photos (score desc, point id) --group--> products (score desc, product id)
                --floor--> the products the query matches --order--> relevance or price --page--> one page

so pages concatenate to one long list, no product appears twice, ties break the same way on every backend and
fusion, and the count and facets describe exactly the products the shopper can page through.

In relevance order the list shows the query's matches and then, marked as related items, the rest of the
window's products, each part in the ranking's order; the count and facets are the matches'. Sorted by price, the
list is the matches alone (a price order of weak candidates is noise).

The query's matches (`select`), one rule on every backend, in relevance and price order:

- no facet value named in the text: the products above the relevance floor (engine.query.floor);
- the text names facet values (understanding's soft facets, `named`: "red striped dress" names colour red,
  pattern striped, category dress): the products above the floor that do not contradict a named category,
  plus, when the named values define the query (`defines`: no other word of the text is a catalog word; a
  scene "on a beach" is none, a product line "willow" in "Willow Striped Mug" is one), every window product
  whose payload has every named facet (one of the named values per field): such a product is a match by
  definition, however low the scores put it. A query with narrower words of the catalog (a product's name)
  keeps the floor's products of the named category only: sorted by price it lists that product, not every
  striped mug. When that leaves none, the floor's best product stays.

A post-retrieval stage (merchandising: pin, boost, bury) plugs in between `select` and `page`: it receives the
`Candidates` and returns them with `products` reordered; paging and counting stay here.
"""
from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from engine.store import Hit
from engine.store.hybrid import FacetCounts, Group, count_facets, group_hits, payload_value

from . import floor


@dataclass(frozen=True)
class Candidates:
    products: list[Group]  # the products the list shows, in the list's order (every page is a slice of it)
    photos: list[Hit]  # their photos (all window photos when none is grouped), in the list's order
    matched: int  # the first `matched` products match the query (the floor's cut); the rest are related items
    window_full: bool  # a side may have filled its window: more could match further down

    @property
    def floored(self) -> bool:
        """Whether the floor put some of the listed products below it."""
        return self.matched < len(self.products)


def rank_hits(hits: Sequence[Hit]) -> list[Hit]:
    """Best first; equal scores (RRF ties) by point id, so every backend and call gives one order."""
    return sorted(hits, key=lambda h: (-h.score, h.id))


def group_products(hits: Sequence[Hit], key: str, group_size: int) -> list[Group]:
    """Products ranked by their best photo's score, ties by product id; each with its best `group_size` photos."""
    groups = group_hits(rank_hits(hits), key, group_size)
    return sorted(groups, key=lambda g: (-g.score, str(g.key)))


def select(hits: Sequence[Hit], full_at: int, group_by: str, group_size: int, rule: str,
           named: Mapping[str, Sequence[str]] | None = None, category_field: str | None = None,
           defines: bool = True) -> Candidates:
    """Every product of the window, the query's matches first (the module doc's rule: the relevance floor `rule`
    of engine.query.floor, and the facet values `named` in the text, payload field -> values, of which
    `category_field` is the category; `defines`: they are all the text's catalog words, so every product having
    them matches), then the related items, each in relevance order. `full_at`: the store's
    per-side window (StoreQuery.prefetch_limit); fewer hits than that mean no side filled its window, so nothing
    further down matches."""
    groups = group_products(hits, group_by, group_size)
    above = floor.kept([g.score for g in groups], rule)
    if named:
        groups, matched = _named_first(groups, above, named, category_field, defines)
    else:
        matched = above
    photos = rank_hits(hits)
    if groups:  # points without the group field are no product's photos
        photos = [h for h in photos if _key(h, group_by) is not None]
    return Candidates(groups, photos, matched, len(hits) >= full_at)


def _named_first(groups: list[Group], above: int, named: Mapping[str, Sequence[str]],
                 category_field: str | None, defines: bool) -> tuple[list[Group], int]:
    """(the products with the matches first, how many match) under the named-facets rule of the module doc."""
    category = {category_field: named[category_field]} if category_field in named else {}
    hits = [i for i, g in enumerate(groups)
            if (i < above and not _contradicts(g, category)) or (defines and _has_all(g, named))]
    if not hits:
        return groups, min(above, 1)
    chosen = set(hits)
    return [groups[i] for i in hits] + [g for i, g in enumerate(groups) if i not in chosen], len(hits)


def _has_all(group: Group, named: Mapping[str, Sequence[str]]) -> bool:
    """Whether the product's payload holds one of the named values of every named field (case-insensitive)."""
    payload = group.hits[0].payload
    return all(_fold(payload_value(payload, f)) & {_fold1(v) for v in values} for f, values in named.items())


def _contradicts(group: Group, named: Mapping[str, Sequence[str]]) -> bool:
    """Whether the product has a value for a named field and it is none of the named ones."""
    payload = group.hits[0].payload
    return any(payload_value(payload, f) is not None and not _fold(payload_value(payload, f)) & {_fold1(v) for v in vs}
               for f, vs in named.items())


def _fold(value: Any) -> set[str]:
    values = value if isinstance(value, (list, tuple)) else [] if value is None else [value]
    return {_fold1(v) for v in values}


def _fold1(value: Any) -> str:
    return str(value).casefold()


def matches(candidates: Candidates, group_by: str) -> Candidates:
    """Only the query's matches (the list cut at the floor), with their photos."""
    if not candidates.floored:
        return candidates
    kept = candidates.products[:candidates.matched]
    keys = {str(g.key) for g in kept}
    photos = [h for h in candidates.photos if _key(h, group_by) in keys]
    return Candidates(kept, photos, len(kept), candidates.window_full)


def by_price(candidates: Candidates, price_field: str, direction: str) -> Candidates:
    """The query's matches only, ordered by price ("asc" or "desc"), products without a price last; equal
    prices by relevance, then product id (the caller cuts the list at the floor first: `matches`)."""
    if candidates.floored:
        raise ValueError("by_price orders the query's matches: cut the list at the floor first (matches)")
    sign = 1 if direction == "asc" else -1

    def key(payload: Mapping[str, Any], score: float, ident: str) -> tuple:
        price = payload_value(payload, price_field)
        if not isinstance(price, numbers.Real) or isinstance(price, bool):
            return (1, 0.0, -score, ident)
        return (0, sign * float(price), -score, ident)

    products = sorted(candidates.products, key=lambda g: key(g.hits[0].payload, g.score, str(g.key)))
    photos = sorted(candidates.photos, key=lambda h: key(h.payload, h.score, h.id))
    return Candidates(products, photos, candidates.matched, candidates.window_full)


def facet_counts(candidates: Candidates, group_by: str, fields: Sequence[str],
                 ranges: Mapping[str, Sequence[tuple[float | None, float | None]]]) -> FacetCounts:
    """Facets (and the count) of the query's matches, over all their window photos; related items beyond the
    floor are not counted. Complete unless the window was full and the floor did not end the matches first."""
    found = matches(candidates, group_by)
    return count_facets(found.photos, group_by, fields, ranges,
                        complete=candidates.floored or not candidates.window_full)


def _key(hit: Hit, group_by: str) -> str | None:
    value = payload_value(hit.payload, group_by)
    return None if value is None else str(value)


@dataclass(frozen=True)
class Slice:
    items: list[Any]  # the page's products (or photos)
    offset: int  # position of the first one in the whole list
    total: int  # length of the whole list

    @property
    def next_offset(self) -> int | None:
        """Where the next page starts; None when this page reaches the end (a past-the-end page is empty)."""
        end = self.offset + len(self.items)
        return end if end < self.total else None


def page(items: Sequence[Any], offset: int, limit: int) -> Slice:
    return Slice(list(items[offset:offset + limit]), offset, len(items))
