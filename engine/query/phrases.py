"""The phrase table of query understanding (engine/query/understand.py): what shoppers write around prices and
negations. Every rule of the understanding stage reads its words from here; add a language or a phrasing here.
"""
from __future__ import annotations

import re

# "<word> 60": an upper bound on the price (inclusive)
PRICE_AT_MOST = ("under", "below", "less than", "up to", "max", "at most", "no more than", "cheaper than", "within")
# "<word> 60": a lower bound on the price (inclusive)
PRICE_AT_LEAST = ("over", "above", "from", "at least", "more than", "min", "starting at")
# "60 <word>": the same bounds written after the number
PRICE_AT_MOST_AFTER = ("or less", "or under", "or below", "max", "tops")
PRICE_AT_LEAST_AFTER = ("or more", "or over", "or above", "plus", "+")
# "between 30 and 80", "from 30 to 80", "30-80", "30 to 80"
RANGE_OPENERS = ("between", "from")
RANGE_JOINERS = ("and", "to", "-", "–")
# currency written before or after the number; all mean the shop's currency (one catalog, one currency)
CURRENCY_SIGNS = ("$", "€", "£")
CURRENCY_WORDS = ("dollars", "dollar", "usd", "euros", "euro", "eur", "pounds", "pound", "gbp", "bucks")
# "not pink", "without stripes": what follows is left out
NEGATIONS = ("not", "without", "no", "except", "excluding", "minus")
# articles that may sit between a negation and its word ("without a hood", "no any ..." is not English but typed)
FILLERS = ("a", "an", "any", "the")


def _alternation(phrases: tuple[str, ...]) -> str:
    """Longest first, so 'less than' wins over a shorter phrase sharing its start; spaces match any whitespace."""
    ordered = sorted(phrases, key=len, reverse=True)
    return "|".join(r"\s+".join(re.escape(w) for w in p.split()) for p in ordered)


_SIGN = f"[{''.join(re.escape(c) for c in CURRENCY_SIGNS)}]"
_NUMBER = r"\d+(?:[.,]\d{1,2})?"
# one amount: an optional sign before, the number, an optional sign or currency word after
AMOUNT = rf"(?:{_SIGN}\s*)?({_NUMBER})(?:\s*(?:{_SIGN}|(?:{_alternation(CURRENCY_WORDS)})\b))?"
_B = r"(?<![\w<])"  # a phrase starts at a word boundary (not inside a word or a <placeholder>)
_E = r"(?![\w>])"

# (name, compiled pattern): tried in this order; the groups are the amounts (range: two)
PRICE_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("range", re.compile(rf"{_B}(?:(?:{_alternation(RANGE_OPENERS)})\s+)?{AMOUNT}\s*(?:{_alternation(RANGE_JOINERS)})"
                         rf"\s*{AMOUNT}{_E}", re.IGNORECASE)),
    ("at_most", re.compile(rf"{_B}(?:{_alternation(PRICE_AT_MOST)})\s*{AMOUNT}{_E}", re.IGNORECASE)),
    ("at_least", re.compile(rf"{_B}(?:{_alternation(PRICE_AT_LEAST)})\s*{AMOUNT}{_E}", re.IGNORECASE)),
    ("at_most", re.compile(rf"{_B}{AMOUNT}\s*(?:{_alternation(PRICE_AT_MOST_AFTER)})(?!\w)", re.IGNORECASE)),
    ("at_least", re.compile(rf"{_B}{AMOUNT}\s*(?:{_alternation(PRICE_AT_LEAST_AFTER)})(?!\w)", re.IGNORECASE)),
    # a bare amount with a currency: "$40 dress" reads as "up to 40" (what a shopper names is their budget)
    ("at_most", re.compile(rf"(?:{_SIGN}\s*({_NUMBER})|{_B}({_NUMBER})\s*(?:{_SIGN}|(?:{_alternation(CURRENCY_WORDS)})\b))",
                           re.IGNORECASE)),
)
NEGATION_RE = re.compile(rf"{_B}(?:{_alternation(NEGATIONS)})\s+(?:(?:{_alternation(FILLERS)})\s+)?", re.IGNORECASE)
# words left dangling at either end once a phrase is taken out ("mug for under 20" -> "mug")
TRAILING_FILLERS = ("for", "and", "with", "priced", "costing", "that", "is", "at", "in", "but", "or", "a", "an",
                    "the")
# words of a query: placeholders whole, else runs of letters, digits, hyphens and underscores
WORD_RE = re.compile(r"<[^<>\s]+>|[\w][\w\-]*", re.UNICODE)
