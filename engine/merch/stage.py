"""The rules stage of a search: the hook `Retriever.page(..., shape=stage)` calls between `candidates.select` and
`candidates.page` (engine/query/retrieval.py), with the request's one candidate list.

    stage = merch.stage(service, request, placeholders, vector, lexical)   # None: no rule applies
    page = retriever.page(request, vector, lexical, shape=stage)
    stage.applied                                                        # the rules that changed the list

The rules shape the whole candidate list (the same list for every page and page size), so a pinned product sits at
its position once and is not repeated on a later page, a boosted product moves by the same amount on every page,
and the count and facets describe the shaped list; paging stays in engine/query/candidates.py. Rules shape
relevance-ranked product pages; a price sort (an order the shopper chose) and photo pages are served as ranked
(MerchSource.stage returns None for them).

Boosts are applied here, over the candidate products in hand, not in the store: see docs/merch.md ("Why boosts are
applied over the candidate window") for the formula-query alternative both store backends offer.
"""
from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from engine.store.hybrid import payload_value

from .errors import MerchError
from .rules import Applied, Rule, pinned_ids, shape

log = logging.getLogger(__name__)

# (product ids, the collection served) -> their Groups (engine.store.hybrid.Group)
Lookup = Callable[[list[str], str | None], Mapping[str, Any]]


class RulesStage:
    """One request's rules, callable on its `candidates.Candidates`; `applied` lists what they changed."""

    def __init__(self, rules: Sequence[Rule], members: Callable[[str], frozenset[str]], lookup: Lookup,
                 group_by: str, asked: Sequence[Rule] = ()):
        self.rules = list(rules)  # the shop's
        self.asked = list(asked)  # the query's own (engine/query/understood_rules.py): see `shape`
        self.group_by = group_by  # the photos' product field (QueryConfig.group_by)
        self._members = members  # a concept filter's products (ConceptProducts.get); MerchError when not live
        self._lookup = lookup  # pinned products the candidate list lacks (one filtered store query)
        self.applied: list[Applied] = []

    def __call__(self, found: Any, collection: str | None = None) -> Any:
        """The rules applied to `found` (candidates.Candidates) read from `collection` (where pinned products the
        list lacks are looked up too)."""
        rules, skipped, members = [], [], {}
        for rule in self.rules:
            try:
                if rule.concept is not None and rule.concept not in members:
                    members[rule.concept] = self._members(rule.concept)
                rules.append(rule)
            except MerchError as e:  # a concept deactivated since the rule was written: the search goes on
                log.warning("rule %r not applied: %s", rule.name, e)
                skipped.append(Applied(rule, skipped=str(e)))
        self.applied = skipped
        if not (rules or self.asked) or not found.products:  # nothing to do, or points without the product field
            return found
        have = {str(g.key) for g in found.products}
        missing = [p for p in pinned_ids(rules + self.asked) if p not in have]
        extra = dict(self._lookup(missing, collection)) if missing else {}
        shaped = shape(found.products, found.matched, rules, extra, members, asked=self.asked)
        self.applied = shaped.applied + skipped
        keys = {str(g.key) for g in shaped.products}
        photos = [h for h in found.photos if str(payload_value(h.payload, self.group_by)) in keys]
        photos += [h for g in extra.values() if str(g.key) in keys for h in g.hits]
        return dataclasses.replace(found, products=shaped.products, photos=photos, matched=shaped.matched)

    def applied_json(self) -> list[dict[str, Any]]:
        """What the shop's rules did (the query's own, `asked`, show as its interpretation instead)."""
        return [a.to_json() for a in self.applied if not any(a.rule is r for r in self.asked)]


def stage_for(service: Any, request: Any, rules: Sequence[Rule], vector: Any, lexical: str,
              collection: str | None = None, members: Callable[[str], frozenset[str]] | None = None,
              asked: Sequence[Rule] = ()) -> RulesStage | None:
    """The rules stage of one search, for Retriever.page's `shape` hook: the shop's `rules` and those query
    understanding `asked` for (engine/query/understood_rules.py); None when no rule applies, or the page is not a
    relevance-ranked product page (a price sort, photos). `collection`: the request's pinned collection."""
    if not (rules or asked) or request.mode != "products" or request.sort != "relevance":
        return None
    return RulesStage(rules, members or _no_concepts,
                      pinned_lookup(service.retriever, request, vector, lexical, collection), service.config.group_by,
                      asked)


def _no_concepts(placeholder: str) -> frozenset[str]:
    raise MerchError(f"a concept filter ({placeholder}) needs merchandising: it is off in this deployment")


def pinned_lookup(retriever: Any, request: Any, vector: Any, lexical: str, collection: str | None = None) -> Lookup:
    """Pinned products by id, for those the query's candidate list does not reach: one store query, the request's
    vector under the request's filters, restricted to their ids (their scores are shown, their place is the
    pin's). The collection is the one the candidates were served from (else `collection`, the request's pinned
    one); a collection dropped meanwhile is IndexNotFound, which the retriever serves again from the alias's new
    one."""
    from engine.lexical import embed_query
    from engine.query.candidates import group_products  # here: engine.query imports engine.merch
    from engine.store import Filter, StoreQuery

    cfg = retriever.config

    def lookup(ids: list[str], served: str | None = None) -> Mapping[str, Any]:
        sparse = embed_query(lexical) if vector is None and lexical else None
        if vector is None and not sparse:
            return {}  # nothing to score them by: a pin the query cannot reach is left out
        shopper = retriever.filter(request) or Filter()
        only = dataclasses.replace(shopper, must={**shopper.must, cfg.group_by: ids})
        query = StoreQuery(dense=vector, sparse=None if vector is not None else sparse, filter=only,
                           prefetch_limit=len(ids) * cfg.group_size)
        target = served or collection or retriever.pin()
        hits = retriever.store_call(lambda: retriever.store.query(target, query, limit=len(ids) * cfg.group_size))
        return {str(g.key): g for g in group_products(hits, cfg.group_by, cfg.group_size)}

    return lookup

