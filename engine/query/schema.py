"""Request and response dataclasses of the query service; each serialises with `to_json()` (a JSON-ready dict)."""
from __future__ import annotations

import base64
import binascii
import math
import numbers
import re
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, Mapping

from engine.text_checks import first_unencodable

from .errors import ConflictingFields, QueryError
from .gair import GairOutcome, WeightScore
from .previews import Preview

if TYPE_CHECKING:
    from .config import QueryConfig
    from .understand import Interpretation

# Query vectors: "composed" is q_pool(w) (w from the request, GAIR or 1); the others are the paper's baselines.
METHODS = ("composed", "text-only", "text+image")
# Results per product (one card per product, its best photos) or per photo (the paper-protocol unit).
MODES = ("products", "photos")
# Which sides retrieve: both fused in the store (default), the CLIP vector alone, or BM25 over the product text alone.
# auto: dense for a query with a custom token (the lexical side cannot read a token, and it cost custom-token queries
# nDCG@10 0.18-0.22, `coinage bench relevance`, docs/relevance.md), hybrid otherwise
RETRIEVALS = ("auto", "hybrid", "dense", "lexical")
# Result order: fused relevance, or price (QueryConfig.price_field) over the query's candidates.
SORTS = ("relevance", "price_asc", "price_desc")
# Largest diffusion seed (the documented bound of `seed`; torch generators take 64 bits, the API promises 32).
MAX_SEED = 2**32 - 1
# Integer filter values are stored as 64-bit signed integers by the vector store.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
# A payload field path in `filters` and `ranges`: keys of letters, digits, '_' or '-', joined by dots, each
# optionally followed by [] or [N] (the subset of Qdrant's JSON paths both store backends read alike)
FIELD_PATH = re.compile(r"[A-Za-z0-9_-]+(\[\d*\])*(\.[A-Za-z0-9_-]+(\[\d*\])*)*", re.ASCII)
MAX_FIELD_PATH = 200


@dataclass
class SearchRequest:
    query: str = ""  # text with <placeholders>; may be empty when `image` is given
    image: Any = None  # a PIL image or the bytes of an uploaded image file; searched by its CLIP feature
    category: str | list[str] | None = None  # exact category (or any of a list): payload QueryConfig.category_field
    colour: str | list[str] | None = None  # exact colour (or any of a list): payload QueryConfig.colour_field
    min_price: float | None = None  # inclusive lower bound on payload QueryConfig.price_field
    max_price: float | None = None  # inclusive upper bound on payload QueryConfig.price_field
    filters: dict[str, Any] = field(default_factory=dict)  # any payload field -> exact value (str/int) or list
    ranges: dict[str, tuple[float | None, float | None]] = field(default_factory=dict)  # field -> (min, max)
    limit: int | None = None  # results per page; None = QueryConfig.default_limit
    offset: int = 0  # results skipped (pagination)
    gair: bool | None = None  # run GAIR for this query in gair(); None = QueryConfig.gair
    weight: float | None = None  # a fixed w in [0, 1] (no GAIR); None = w* from GAIR when known, else 1
    seed: int | None = None  # diffusion seed for GAIR and previews; None = QueryConfig.seed
    method: str = "composed"  # one of METHODS
    mode: str = "products"  # one of MODES: a page of products (each with its matching photos) or of photos
    retrieval: str = "auto"  # one of RETRIEVALS
    sort: str = "relevance"  # one of SORTS
    correct: bool = True  # correct typos against the catalog's words; False searches the query as typed
    facets: bool = True  # count categories, colours and price ranges over the matching products
    exclude: dict[str, list[str]] = field(default_factory=dict)  # payload field -> values a result must not have
    understand: bool = True  # read prices, negations, ids and concept names out of the text (engine/query/understand)
    ignore: list[str] = field(default_factory=list)  # keys of understood constraints to leave unread (removed chips)

    def to_json(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "image"}
        out["ranges"] = {k: list(v) for k, v in self.ranges.items()}
        out["image"] = self.image is not None  # the image itself is not echoed back
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any], config: "QueryConfig | None" = None) -> "SearchRequest":
        """A request from a JSON object (the API body); `image` may be a base64 string of an image file.

        Unknown fields and wrong types raise QueryError naming the field, never a KeyError or TypeError;
        with `config`, pages past its bounds too (see validate).
        """
        if not isinstance(data, Mapping):
            raise QueryError(f"the search request must be a JSON object, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise QueryError(f"unknown search request field(s) {unknown}; known fields: {sorted(known)}")
        bad_text = first_unencodable({k: v for k, v in data.items() if k != "image"})
        if bad_text:
            raise QueryError(f"field {bad_text!r} holds a lone surrogate (an unpaired \\ud800-\\udfff escape), "
                             "which is not valid Unicode text; send the text as UTF-8")
        values = dict(data)
        if isinstance(values.get("image"), str):
            try:
                values["image"] = base64.b64decode(values["image"], validate=True)
            except (binascii.Error, ValueError) as e:
                raise QueryError(f"field 'image' is not valid base64 ({e}); send the image file base64-encoded") from e
        elif values.get("image") not in (None, False):
            raise QueryError("field 'image' must be a base64 string of an image file (or null)")
        else:
            values["image"] = None
        for name in ("limit", "offset", "seed"):
            if name in values:
                values[name] = _json_int(values[name])
        if isinstance(values.get("filters"), Mapping):
            values["filters"] = {k: [_json_int(x) for x in v] if isinstance(v, list) else _json_int(v)
                                 for k, v in values["filters"].items()}
        if isinstance(values.get("ranges"), Mapping):
            values["ranges"] = {k: _pair(k, v) for k, v in values["ranges"].items()}
        request = cls(**values)
        request.validate(config)
        return request

    def validate(self, config: "QueryConfig | None" = None) -> None:
        """Check types and ranges at the boundary, pages against `config`'s max_limit and max_offset when given;
        QueryError names the field and the fix."""
        max_limit = config.max_limit if config is not None else None
        max_offset = config.max_offset if config is not None else None
        _expect("query", self.query, str)
        _expect_optional_number("min_price", self.min_price)
        _expect_optional_number("max_price", self.max_price)
        if self.min_price is not None and self.max_price is not None and self.min_price > self.max_price:
            raise ConflictingFields(f"min_price {self.min_price} is above max_price {self.max_price}; swap or drop one")
        for name in ("category", "colour"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, str) or (
                    isinstance(value, list) and value and all(isinstance(c, str) for c in value))):
                raise QueryError(f"field {name!r} must be a string or a non-empty list of strings, got {value!r}")
        bad_text = first_unencodable({"query": self.query, "category": self.category, "colour": self.colour,
                                       "filters": self.filters, "ranges": self.ranges,
                                       "exclude": self.exclude, "ignore": self.ignore})
        if bad_text:
            raise QueryError(f"field {bad_text!r} holds a lone surrogate, which is not valid Unicode text")
        _expect("filters", self.filters, dict)
        _expect("ranges", self.ranges, dict)
        for key, value in self.filters.items():
            _field_path("filters", key)
            _filter_value(key, value)
        _expect("exclude", self.exclude, dict)
        for key, values in self.exclude.items():
            _field_path("exclude", key)
            if not (isinstance(values, list) and values and all(isinstance(v, str) for v in values)):
                raise QueryError(f"field 'exclude' maps a payload field to a non-empty list of strings; "
                                 f"{key!r} has {values!r}")
        if not (isinstance(self.ignore, list) and all(isinstance(k, str) for k in self.ignore)):
            raise QueryError(f"field 'ignore' must be a list of constraint keys (strings), got {self.ignore!r}")
        for key, bounds in self.ranges.items():
            _field_path("ranges", key)
            low, high = _pair(key, bounds)
            if low is not None and high is not None and low > high:
                raise ConflictingFields(f"range for field {key!r} has min {low} above max {high}; swap them")
        if self.limit is not None:
            if not _is_int(self.limit) or self.limit < 1 or (max_limit is not None and self.limit > max_limit):
                raise QueryError(f"field 'limit' must be an integer from 1 to {max_limit or 'the maximum'}, "
                                 f"got {self.limit!r}")
        if not _is_int(self.offset) or self.offset < 0 or (max_offset is not None and self.offset > max_offset):
            bound = f"from 0 to {max_offset}" if max_offset is not None else ">= 0"
            raise QueryError(f"field 'offset' must be an integer {bound}, got {self.offset!r}; results deeper than "
                             "that are not served: narrow the search with filters instead")
        if self.gair is not None and not isinstance(self.gair, bool):
            raise QueryError(f"field 'gair' must be true, false or null, got {self.gair!r}")
        if self.weight is not None and (not _is_number(self.weight) or not 0.0 <= float(self.weight) <= 1.0):
            raise QueryError(f"field 'weight' must be a number in [0, 1] (or null for GAIR/default), got {self.weight!r}")
        if self.seed is not None and (not _is_int(self.seed) or not 0 <= self.seed <= MAX_SEED):
            raise QueryError(f"field 'seed' must be an integer from 0 to {MAX_SEED}, got {self.seed!r}")
        if self.method not in METHODS:
            raise QueryError(f"field 'method' must be one of {METHODS}, got {self.method!r}")
        for name, allowed in (("mode", MODES), ("retrieval", RETRIEVALS), ("sort", SORTS)):
            if getattr(self, name) not in allowed:
                raise QueryError(f"field {name!r} must be one of {allowed}, got {getattr(self, name)!r}")
        for name in ("correct", "facets", "understand"):
            if not isinstance(getattr(self, name), bool):
                raise QueryError(f"field {name!r} must be true or false, got {getattr(self, name)!r}")


@dataclass
class ResultItem:
    rank: int  # 1-based position in the whole ranking (offset included)
    id: str  # point id in the vector store
    score: float  # similarity to the query vector (cosine for cosine collections)
    payload: dict[str, Any]  # the product as the indexer stored it (id, title, category, price, image, ...)

    def to_json(self) -> dict[str, Any]:
        return {"rank": self.rank, "id": self.id, "score": self.score, "payload": self.payload}


@dataclass
class ProductResult:
    rank: int  # 1-based position among products (offset included)
    product_id: str  # the catalog's product id (payload product_id)
    score: float  # its best photo's score (fused relevance; under a price sort, still the ranking's score)
    photos: list[ResultItem]  # its matching photos, best first: photos[0] is the card's image, the rest thumbnails
    # below the relevance floor (QueryConfig.relevance_floor): a related item listed after the query's matches,
    # not in the count or the facets
    related: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"rank": self.rank, "product_id": self.product_id, "score": self.score,
                "payload": self.photos[0].payload, "photos": [p.to_json() for p in self.photos],
                "related": self.related}


@dataclass
class Correction:
    original: str  # the query as typed
    corrected: str  # the query searched by the lexical (BM25) side
    changes: list[tuple[str, str]]  # (typed word, replacement) applied to the lexical side
    dense: str = ""  # the query searched by the dense (CLIP) side: only certain typos corrected ("" = original)
    suggestion: str | None = None  # "Did you mean ...": the query with unsure corrections too; not searched
    suggested: list[tuple[str, str]] = field(default_factory=list)  # (typed word, suggested word), not applied

    def to_json(self) -> dict[str, Any]:
        return {"original": self.original, "corrected": self.corrected, "changes": [list(c) for c in self.changes],
                "dense": self.dense or self.original, "suggestion": self.suggestion,
                "suggested": [list(c) for c in self.suggested]}


@dataclass
class Facets:
    values: dict[str, dict[str, int]]  # field (category, colour) -> value -> matching products with it
    price: list[dict[str, Any]]  # [{"min", "max", "count"}] per price range; min/max null when open
    products: int  # products matching the query (up to the relevance floor): what the count says
    complete: bool  # False when the candidate window was full (more products could match further down)

    def to_json(self) -> dict[str, Any]:
        return {"values": self.values, "price": self.price, "products": self.products, "complete": self.complete}


@dataclass
class SearchResponse:
    query: str  # the query as typed
    prompt: str | None  # what was encoded (parent words inserted); None for an image-only query
    tokens: list[str]  # custom tokens in the query
    notes: list[str]  # what the service changed or noticed (parent inserted, GAIR skipped, ...)
    method: str  # one of METHODS
    weight: float | None  # the w the query vector was composed with; None when the query has no token
    # 'request', 'default' (1.0), 'gair-pending' (1.0 until GAIR has chosen; QueryConfig.gair_ranks), 'gair',
    # 'gair-cache' or 'none'
    weight_source: str
    results: list[ResultItem]
    limit: int
    offset: int
    next_offset: int | None  # offset of the next page, None when this page was not full
    collection: str  # collection or alias searched
    backbone: str  # backbone id the query was encoded with
    timings_ms: dict[str, float] = field(default_factory=dict)  # parse, encode, search, total
    mode: str = "photos"  # "products": `products` holds the page and `results` each product's best photo
    products: list[ProductResult] = field(default_factory=list)  # the page of products (mode "products")
    retrieval: str = "dense"  # the sides that retrieved: "hybrid", "dense" or "lexical"
    sort: str = "relevance"  # one of SORTS
    correction: Correction | None = None  # the typo correction applied, if any
    facets: Facets | None = None  # counts over the matching products (when asked for)
    # weight of the concept prototype fused into the composed query (QueryConfig.concept_photo_weight); None: not
    # fused (no token, a baseline method, the weight 0, or a concept without photos: see notes)
    concept_photos: float | None = None
    # what query understanding read out of the text (engine/query/understand.py); None when it was off
    interpretation: "Interpretation | None" = None
    # the synonyms and merchandising rules that shaped these results ({"kind": "synonym"|"rule", ...}); for the
    # admin: the web app leaves it out for shoppers
    merch: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["interpretation"] = self.interpretation.to_json() if self.interpretation else None
        out["results"] = [r.to_json() for r in self.results]
        out["products"] = [p.to_json() for p in self.products]
        out["correction"] = self.correction.to_json() if self.correction else None
        out["facets"] = self.facets.to_json() if self.facets else None
        return out


@dataclass
class GairResult:
    response: SearchResponse  # the results for w* (with the request's filters and page)
    outcome: GairOutcome | None  # w*, every w's score and preview; None when GAIR did not run
    preview: Preview | None  # the image generated for the chosen query (I_w*, or the w=1 preview without GAIR)
    timings_ms: dict[str, float] = field(default_factory=dict)  # text, context_generation, generation, scoring, search, total

    @property
    def w_star(self) -> float | None:
        return self.outcome.w_star if self.outcome else self.response.weight

    @property
    def scores(self) -> list[WeightScore]:
        return self.outcome.scores if self.outcome else []

    @property
    def previews(self) -> dict[float, Preview]:
        return dict(self.outcome.previews) if self.outcome else {}

    def to_json(self, include_png: bool = False) -> dict[str, Any]:
        """JSON-ready dict; previews are referenced by key, or inlined as base64 with include_png=True."""
        out = {"w_star": self.w_star, "scores": [s.to_json() for s in self.scores],
               "cached": self.outcome.cached if self.outcome else None,
               "preview": self.preview.to_json() if self.preview else None,
               "response": self.response.to_json(), "timings_ms": dict(self.timings_ms)}
        if include_png and self.preview is not None:
            out["preview"]["png_base64"] = base64.b64encode(self.preview.png).decode()
        return out


def _json_int(value: Any) -> Any:
    """An integral float as the int it is (JSON and JSON Schema count 3.0 as an integer); anything else as is."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(float(value))


def _expect(name: str, value: Any, kind: type) -> None:
    if not isinstance(value, kind):
        raise QueryError(f"field {name!r} must be a {kind.__name__}, got {type(value).__name__}")


def _expect_optional_number(name: str, value: Any) -> None:
    if value is not None and not _is_number(value):
        raise QueryError(f"field {name!r} must be a finite number or null, got {value!r}")


def _field_path(name: str, key: Any) -> None:
    if not (isinstance(key, str) and len(key) <= MAX_FIELD_PATH and FIELD_PATH.fullmatch(key)):
        shown = key if isinstance(key, str) and not first_unencodable(key) else type(key).__name__
        raise QueryError(f"{name} key {shown!r} is not a payload field path; use names of letters, digits, '_' "
                         f"and '-' joined by dots (e.g. 'attributes.colour'), at most {MAX_FIELD_PATH} characters")


def _filter_value(key: str, value: Any) -> None:
    items = value if isinstance(value, list) else [value]
    ok = bool(items) and all(isinstance(v, (str, bool)) or (_is_int(v) and INT64_MIN <= v <= INT64_MAX)
                             for v in items)
    if not ok:
        raise QueryError(f"filter on field {key!r} must be a string, a 64-bit integer or a non-empty list of "
                         f"them, got {value!r:.100}")


def _pair(key: str, bounds: Any) -> tuple[float | None, float | None]:
    if not (isinstance(bounds, (list, tuple)) and len(bounds) == 2) or not all(
            b is None or _is_number(b) for b in bounds) or bounds == (None, None) or list(bounds) == [None, None]:
        raise QueryError(f"range for field {key!r} must be [min, max] with finite numbers or null "
                         f"(at least one given), got {bounds!r}")
    return (bounds[0], bounds[1])
