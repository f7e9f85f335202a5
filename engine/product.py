"""The product payload: the fields the indexer stores with each photo, and what search does with each.

Every other module takes field names from here: the indexer (which catalog columns are fields, which
payload indexes a collection gets, where the content hash goes), the lexical side (which fields' text
feeds BM25 and the spelling vocabulary), the query service (what filters, groups, sorts and facets
default to) and what API responses show (never the internal fields).

`PayloadLimits` bounds what one row may store (`payload_problem`): the store's reader gives up on objects nested
about 126 levels deep (serde's recursion limit: one such row made the whole collection unreadable), and one row's
attributes once added 20,000 words to the spelling vocabulary. `canonical_id` makes ids that differ only by
Unicode normalisation or an invisible format character (a zero-width space) one id.
"""
from __future__ import annotations

import json
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

ID = "id"
PRODUCT_ID = "product_id"
TITLE = "title"
CATEGORY = "category"
PRICE = "price"
IMAGE = "image"
ATTRIBUTES = "attributes"
COLOUR = f"{ATTRIBUTES}.colour"
HASH = "_hash"
STAMP = "_stamp"  # hash of the model, the payload and the image file's size and mtime (indexer.decode.source_stamp)
RUN = "_run"  # id of the last indexing run that saw the row (mark-and-sweep pruning, engine.store.marks)
ROW = "_row"  # the catalog row that run saw it at: a later row with the same id is a duplicate of this one


@dataclass(frozen=True)
class PayloadField:
    name: str  # payload key; a dotted path names a key inside a nested object ("attributes.colour")
    # Payload index schema the collection gets ("keyword", "integer" or "float"; engine.store.PAYLOAD_SCHEMAS),
    # for the fields search filters, groups, sorts or counts on; None: stored but not indexed.
    index: str | None = None
    catalog: bool = True  # a catalog column (indexer.decode.Row); other columns become attributes
    text: bool = False  # its string value feeds the row's BM25 vector and the spelling vocabulary
    internal: bool = False  # indexing bookkeeping: stored, never shown in search results


FIELDS = (
    PayloadField(ID, "keyword"),  # the catalog row (one photo); the point id derives from it
    PayloadField(PRODUCT_ID, "keyword"),  # the product the photo shows: results group on it
    PayloadField(TITLE, text=True),
    PayloadField(CATEGORY, "keyword", text=True),  # a filter and a facet
    PayloadField(PRICE, "float"),  # a range filter, a sort and the price facet
    PayloadField(IMAGE),  # path under the image root, or an http(s) URL
    PayloadField(ATTRIBUTES),  # free-form object; every string value in it feeds BM25 too
    PayloadField(COLOUR, "keyword", catalog=False),  # a filter and a facet
    PayloadField(HASH, catalog=False, internal=True),  # content hash (indexer.decode.content_hash)
    PayloadField(STAMP, catalog=False, internal=True),  # unchanged stamp: a match skips reading the image
    PayloadField(RUN, catalog=False, internal=True),  # run mark: points without the last run's are pruned
    PayloadField(ROW, catalog=False, internal=True),  # catalog row of the run mark (duplicate-id reports)
)

CATALOG_FIELDS = tuple(f.name for f in FIELDS if f.catalog)
PAYLOAD_INDEXES = {f.name: f.index for f in FIELDS if f.index}
TEXT_FIELDS = tuple(f.name for f in FIELDS if f.text)
INTERNAL_FIELDS = frozenset(f.name for f in FIELDS if f.internal)


def public_payload(payload: Mapping[str, Any]) -> dict[str, Any]:
    """The payload as search results show it: without the internal fields."""
    return {k: v for k, v in payload.items() if k not in INTERNAL_FIELDS}


@dataclass(frozen=True)
class PayloadLimits:
    """What one catalog row may store, checked before anything is written (indexer.decode.validate)."""

    max_depth: int = 8  # nesting levels of `attributes` ({"a": 1} is 1); the store's reader fails near 126
    max_attributes: int = 200  # keys and list items of `attributes`, at every level
    max_attributes_bytes: int = 16_384  # `attributes` as compact UTF-8 JSON (bounds its vocabulary words)
    max_bytes: int = 1 << 20  # the whole payload as compact UTF-8 JSON (a long title counts here)


PAYLOAD_LIMITS = PayloadLimits()


def canonical_id(text: str) -> str:
    """An id as stored: NFC-normalised, invisible format characters (zero-width space, bidi marks: Unicode
    category Cf) removed, so two spellings that look the same are one product."""
    return "".join(c for c in unicodedata.normalize("NFC", text) if unicodedata.category(c) != "Cf")


def payload_problem(payload: Mapping[str, Any], limits: PayloadLimits = PAYLOAD_LIMITS) -> str | None:
    """Why `payload` may not be stored (a sentence naming the field, the limit and the fix), or None."""
    attributes = payload.get(ATTRIBUTES) or {}
    depth, items = _shape(attributes)
    where = "(engine.product.PAYLOAD_LIMITS)"
    if depth > limits.max_depth:
        return (f"attributes nest {depth} levels deep; the limit is {limits.max_depth} {where}: flatten them into "
                "fewer levels")
    if items > limits.max_attributes:
        return (f"attributes hold {items} keys and list items; the limit is {limits.max_attributes} {where}: keep "
                "the ones shoppers search or filter on")
    for key, value in payload.items():
        try:
            _json_bytes(value)
        except UnicodeEncodeError as e:
            bad = e.object[e.start:e.end].encode("unicode_escape").decode("ascii")
            return (f"{key} holds a lone surrogate ({bad}), which is no valid text; fix the encoding of the catalog "
                    "(it was probably written from UTF-16 text)")
    for name, value, limit in ((ATTRIBUTES, attributes, limits.max_attributes_bytes),
                               ("the row", dict(payload), limits.max_bytes)):
        if (size := _json_bytes(value)) > limit:
            return f"{name} is {size:,} bytes as JSON; the limit is {limit:,} {where}: shorten it"
    return None


def _json_bytes(value: Any) -> int:
    return len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))


def _shape(value: Any) -> tuple[int, int]:
    """(nesting depth, keys + list items at every level) of a JSON value, without recursion (no stack limit)."""
    depth, items, stack = 0, 0, [(value, 0)]
    while stack:
        node, level = stack.pop()
        if isinstance(node, dict):
            children = list(node.values())
        elif isinstance(node, (list, tuple)):
            children = list(node)
        else:
            continue
        depth, items = max(depth, level + 1), items + len(children)
        stack.extend((child, level + 1) for child in children)
    return depth, items
