"""Where a price-sorted list ends: the relevance floor.

Sorting by price orders the query's matches, not every candidate the vector search found: CLIP scores every
product, so without a floor "purple dotted dress", price low to high, opens with the cheapest mugs. The floor is
read from the candidate products' scores, best first (each product's best photo, over a fixed window), by a rule:

- "gap" (the default): the list ends at the largest drop between neighbouring scores, so a query with a clear
  set of matches (a category, a colour, a name, a custom token) keeps that set and no more;
- "z:K": the products scoring at least the mean plus K standard deviations of the candidates' scores;
- "none": every candidate of the window, however weak (the order before the floor).

The best product always stays. When the query's text names facet values, the matches are the floor's products
plus every product having the named values (engine.query.candidates, "the query's matches"). `coinage bench relevance --sort-floors` measures the rules side by side
(docs/relevance.md has the figures the default was chosen from).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

RULES = ("gap", "z:K", "none")


def parse_rule(spec: str) -> tuple[str, float | None]:
    """'gap', 'none' or 'z:K' -> (name, K); ValueError naming the accepted forms."""
    if spec in ("gap", "none"):
        return spec, None
    name, _, k = spec.partition(":")
    if name == "z":
        try:
            value = float(k)
        except ValueError:
            value = math.nan
        if math.isfinite(value):
            return "z", value
    raise ValueError(f"relevance floor {spec!r} is not one of {', '.join(RULES)} (K a number of standard "
                     "deviations, e.g. 'z:1.5')")


def kept(scores: Sequence[float], rule: str) -> int:
    """How many of the candidates' scores (best first) the rule keeps: at least 1 when there are any."""
    name, k = parse_rule(rule)
    v = np.asarray(scores, dtype=np.float64)
    if len(v) < 2 or name == "none":
        return len(v)
    if name == "gap":
        return int(np.argmax(v[:-1] - v[1:])) + 1
    floor = min(v.mean() + k * v.std(), v[0])
    return max(1, int((v >= floor).sum()))
