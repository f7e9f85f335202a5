"""The product payload: the fields the indexer stores with each photo, and what search does with each.

Every other module takes field names from here: the indexer (which catalog columns are fields, which
payload indexes a collection gets, where the content hash goes), the lexical side (which fields' text
feeds BM25 and the spelling vocabulary), the query service (what filters, groups, sorts and facets
default to) and what API responses show (never the internal fields).
"""
from __future__ import annotations

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
)

CATALOG_FIELDS = tuple(f.name for f in FIELDS if f.catalog)
PAYLOAD_INDEXES = {f.name: f.index for f in FIELDS if f.index}
TEXT_FIELDS = tuple(f.name for f in FIELDS if f.text)
INTERNAL_FIELDS = frozenset(f.name for f in FIELDS if f.internal)


def public_payload(payload: Mapping[str, Any]) -> dict[str, Any]:
    """The payload as search results show it: without the internal fields."""
    return {k: v for k, v in payload.items() if k not in INTERNAL_FIELDS}
