"""What query understanding asks of the ranking, as rules for the rules stage (engine/merch/stage.py), so that
the page is shaped in one place whether a merchandiser or the query asked:

    rules = understood_rules(prep.interpretation, config)   # [] when understanding asked nothing of the ranking
    stage = merch.stage(..., extra=rules) or stage_for(service, request, (), ..., asked=rules)   # engine/merch
    page = retriever.page(request, vector, lexical, shape=stage, collection=prep.collection)

- `Interpretation.pins` (a word both a concept name and an exact product id): a pin of that product at
  position 1, so the exact id match comes first while the concept ranks the rest;
- `Interpretation.boost` (facet values named beside a typed price or negation): a boost of the products having
  the named category by QueryConfig.named_facet_boost and of those having the named colour by half that, so the
  page reads: both, the category alone, the colour alone, then the rest (the category is what is sought, the
  colour qualifies it); nothing is filtered, so the other categories stay on the page after them, as related
  items (a hard filter hid them: docs/relevance.md); a boost only orders, so they are not counted
  (engine/merch/rules.py `shape`, `asked`). A merchandising rule filters on category and colour only, so a named
  pattern is not boosted.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from engine.merch import Rule

if TYPE_CHECKING:
    from .config import QueryConfig
    from .understand import Interpretation

PIN_NAME = "understood: exact product id"
BOOST_NAME = "understood: facet values named beside a price or negation"


def understood_rules(found: "Interpretation | None", config: "QueryConfig") -> list[Rule]:
    if found is None:
        return []
    rules = []
    if found.pins:
        rules.append(Rule(PIN_NAME, "always", "", "pin", products=found.pins, position=1))
    boost, amount = found.boost, config.named_facet_boost
    category, colour = boost.get(config.category_field), boost.get(config.colour_field)
    if category and amount > 0:
        rules.append(Rule(BOOST_NAME, "always", "", "boost", category=category, amount=amount))
    if colour and amount > 0:  # half: a product of the category named ranks above one of the colour only
        rules.append(Rule(BOOST_NAME, "always", "", "boost", colour=colour, amount=amount / 2))
    return rules

