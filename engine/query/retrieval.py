"""From a prepared query to a page: the store query (dense + BM25, fused in the store), products or photos, facets.

    page = Retriever(store, config, backbone_id).page(request, vector, lexical_text)

The lexical side sees the query's words without custom-token placeholders (`<aurora>` is not a word);
the dense side the composed CLIP vector. A collection built before collections carried BM25 vectors
is still served, dense only, with a note naming `coinage reindex`.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np

from engine.lexical import embed_query, query_terms
from engine.product import public_payload
from engine.store import (
    CollectionNotFound,
    DimensionMismatch,
    Filter,
    Hit,
    NoSparseVectors,
    StoreQuery,
    VectorStore,
)
from . import candidates, fusion
from .config import QueryConfig
from .errors import IndexMismatch, IndexNotFound, QueryError
from .schema import Facets, ProductResult, ResultItem, SearchRequest
from .phrases import WORD_RE
from .understand import CatalogWords, Interpretation

T = TypeVar("T")
# a stage between select and page (merch rules): (the candidates, the collection they were read from) -> candidates
Shape = Callable[[candidates.Candidates, str], candidates.Candidates]
_ORDER = {"price_asc": "asc", "price_desc": "desc"}
REINDEX_NOTE = ("this index was built before name search and typo correction: results come from the image "
                "vectors only; rebuild it with `coinage reindex` (searches keep being served meanwhile)")

log = logging.getLogger(__name__)


@dataclass
class Page:
    results: list[ResultItem]  # photos (mode "photos") or each product's best photo (mode "products")
    products: list[ProductResult]  # the products of the page (mode "products"), else []
    retrieval: str  # the sides that retrieved: "hybrid", "dense" or "lexical"
    facets: Facets | None = None
    notes: list[str] = field(default_factory=list)
    total: int = 0  # products (photos in mode "photos") of the whole list the pages slice, related items too
    next_offset: int | None = None  # where the next page starts; None at the end of the list


class Retriever:
    def __init__(self, store: VectorStore, config: QueryConfig, backbone_id: str,
                 named: Mapping[str, Sequence[str]] | None = None, defines: bool = True):
        self.store = store
        self.config = config
        self.backbone_id = backbone_id
        self.named = dict(named or {})  # facet values the query's text names: payload field -> values (candidates)
        self.defines = defines  # the named values are all the text's catalog words (`defines_query`)

    def naming(self, named: Mapping[str, Sequence[str]], defines: bool = True) -> Retriever:
        """This retriever for one query whose text names these facet values (`named_facets`; `defines`: no other
        catalog word narrows them, `defines_query`): its matches are counted by the named-facets rule of
        engine.query.candidates."""
        return Retriever(self.store, self.config, self.backbone_id, named, defines) if named else self

    def page(self, request: SearchRequest, vector: np.ndarray | None, lexical_text: str,
             shape: Shape | None = None, collection: str | None = None) -> Page:
        """One page of results for the request: `vector` is the dense query (None: lexical only); `shape`
        reorders the candidate list before it is paged and counted (engine/merch/stage.py); `collection`: the one
        the request pinned (Retriever.pin, once per request, in engine/query/prepare.py), else resolved here."""
        sparse = embed_query(lexical_text) if request.retrieval != "dense" and lexical_text else None
        if request.retrieval == "lexical" and not sparse:
            raise QueryError("lexical retrieval needs words to match (custom tokens and stop words are not); "
                             "use retrieval 'hybrid' or 'dense'")
        vector = None if request.retrieval == "lexical" else vector
        query = self._query(request, vector, sparse)
        target = collection or self.pin()
        try:
            return self._serve(request, query, target, shape)
        except IndexNotFound:
            # the pinned collection was dropped while the request ran (a reindex switched the alias and dropped
            # the old one): serve the whole candidate set from the collection the alias names now
            newer = self.pin()
            if newer == target:
                raise
            log.info("collection %s was dropped during the request; serving it from %s", target, newer)
            return self._serve(request, query, newer, shape)

    def _serve(self, request: SearchRequest, query: StoreQuery, target: str, shape: Shape | None) -> Page:
        try:
            return self._run(request, query, target, shape)
        except NoSparseVectors as e:
            if query.dense is None:
                raise QueryError(f"lexical retrieval is unavailable: {e}") from e
            query.sparse = None
            page = self._run(request, query, target, shape)
            page.notes.insert(0, REINDEX_NOTE)
            return page

    def pin(self) -> str:
        """The collection the configured name (an alias, usually) points at now: resolved once per request, so
        every store call of the request reads the same collection even if a reindex moves the alias meanwhile."""
        name = self.config.collection
        return self.store_call(lambda: self.store.get_alias(name)) or name

    def _query(self, request: SearchRequest, vector: np.ndarray | None, sparse) -> StoreQuery:
        """The request's one store query: a fixed window, the same for every page and page size (a price sort's
        may differ: QueryConfig.sort_window)."""
        cfg = self.config
        window = cfg.sort_window if request.sort in _ORDER and cfg.sort_window else cfg.candidate_window
        return StoreQuery(dense=vector, sparse=sparse, filter=self.filter(request), fusion=cfg.store_fusion(),
                          prefetch_limit=window)

    def _run(self, request: SearchRequest, query: StoreQuery, target: str, shape: Shape | None = None) -> Page:
        cfg = self.config
        limit = request.limit or cfg.default_limit
        retrieval = "hybrid" if query.hybrid else ("dense" if query.dense is not None else "lexical")
        hits = self._candidates(target, query)
        order = _ORDER.get(request.sort)
        found = candidates.select(hits, query.prefetch_limit, cfg.group_by, cfg.group_size,
                                  cfg.sort_floor if order else cfg.relevance_floor, self.named, cfg.category_field,
                                  self.defines)
        notes = []
        if order:
            if found.floored:
                notes.append(f"sorted by price: the {found.matched} best-matching of {len(found.products)} candidate "
                             "products; sort by relevance to see them all")
            found = candidates.by_price(candidates.matches(found, cfg.group_by), cfg.price_field, order)
        if shape is not None:  # told the collection served: after a mid-request drop, the alias's new one
            found = shape(found, target)
        products: list[ProductResult] = []
        if request.mode == "products" and found.products:
            shown = candidates.page(found.products, request.offset, limit)
            products = [ProductResult(rank, str(g.key), g.score, [_item(rank, h) for h in g.hits],
                                      related=rank > found.matched)
                        for rank, g in enumerate(shown.items, start=request.offset + 1)]
            results = [p.photos[0] for p in products]
        else:  # photo mode, or points without the group field (a collection not built by the indexer)
            shown = candidates.page(found.photos, request.offset, limit)
            results = [_item(rank, h) for rank, h in enumerate(shown.items, start=request.offset + 1)]
            if request.mode == "products" and hits:
                notes.append(f"these points have no {cfg.group_by!r} field, so results are per photo; "
                             "index the catalog with `coinage index` to group them per product")
        facets = self._facets(found) if request.facets else None  # of the matches (up to the floor)
        return Page(results, products, retrieval, facets, notes, shown.total, shown.next_offset)

    def _candidates(self, target: str, query: StoreQuery) -> list[Hit]:
        """The request's candidate set: each side's window from the store (under the filter), fused here
        (engine.query.fusion), so that every backend and every call gives the same list."""
        window, most = query.prefetch_limit, self.config.candidate_window_most
        sides = [StoreQuery(dense=dense, sparse=sparse, filter=query.filter, prefetch_limit=window)
                 for dense, sparse in ((query.dense, None), (None, query.sparse)) if dense is not None or sparse]
        if self.config.side_batch and len(sides) > 1:  # both sides' first fetch in one store call
            first = self.store_call(lambda: self.store.query_batch(target, sides, limit=window + 1))
        else:
            first = [self._fetch(target, side, window + 1) for side in sides]
        return fusion.fuse([fusion.side_window(lambda n, q=side, got=got: got if n == window + 1
                                               else self._fetch(target, q, n), window, most)
                            for side, got in zip(sides, first, strict=True)], query.fusion)

    def _fetch(self, target: str, query: StoreQuery, n: int) -> list[Hit]:
        return self.store_call(lambda: self.store.query(target, query, limit=n))

    def _facets(self, found: candidates.Candidates) -> Facets:
        cfg = self.config
        fields = {"category": cfg.category_field, "colour": cfg.colour_field}
        counts = candidates.facet_counts(found, cfg.group_by, list(fields.values()),
                                         {cfg.price_field: list(cfg.price_buckets)})
        values = {name: {str(v): n for v, n in counts.values[f].items()} for name, f in fields.items()}
        price = [{"min": lo, "max": hi, "count": n} for lo, hi, n in counts.ranges[cfg.price_field]]
        return Facets(values, price, counts.products, counts.complete)

    def filter(self, request: SearchRequest) -> Filter | None:
        cfg = self.config
        must = dict(request.filters)
        ranges = {k: tuple(v) for k, v in request.ranges.items()}
        if request.category is not None:
            must[cfg.category_field] = request.category
        if request.colour is not None:
            must[cfg.colour_field] = request.colour
        if request.min_price is not None or request.max_price is not None:
            ranges[cfg.price_field] = (request.min_price, request.max_price)
        must_not = {k: list(v) for k, v in request.exclude.items() if v}
        if not must and not ranges and not must_not:
            return None
        try:
            return Filter(must=must, ranges=ranges, must_not=must_not)
        except ValueError as e:
            raise QueryError(f"bad filter: {e}") from e

    def store_call(self, fn: Callable[[], T]) -> T:
        """`fn()`, a call to the store, with a missing or mismatched collection as the search's errors."""
        name = self.config.collection
        try:
            return fn()
        except CollectionNotFound as e:
            raise IndexNotFound(f"no product index {name!r} in the vector store: build it with `coinage index ...` "
                                f"(backbone {self.backbone_id!r}), or point QueryConfig.collection / --store-path "
                                "at an existing one") from e
        except DimensionMismatch as e:
            raise IndexMismatch(f"index {name!r} was built with another backbone ({e}); search with the backbone "
                                f"it was built with (--backbone), or reindex with {self.backbone_id!r}") from e


def named_facets(interpretation: Interpretation | None) -> dict[str, list[str]]:
    """The facet values understanding recognised in the text and left soft (payload field -> values); hard ones
    are filters already, and those the request asked to leave unread (`ignore`) are not named."""
    named: dict[str, list[str]] = {}
    for c in interpretation.constraints if interpretation is not None else ():
        if c.kind == "facet" and not c.hard and c.field is not None and c.key not in interpretation.ignored:
            named.setdefault(c.field, []).extend(v for v in c.values if v not in named.get(c.field, []))
    return named


def defines_query(interpretation: Interpretation | None, words: CatalogWords | None) -> bool:
    """Whether the facet values the text names define the query: no other word of it (bar stop words) is a
    catalog word or a custom token. "striped mug on a beach" is defined by its facets (a scene word is no catalog
    word), "Willow Striped Mug" is not (the product line "willow" is a word of the catalog's names), nor is
    "<aurora> dress" (the concept is narrower than its category): their narrower words, not every striped mug or
    every dress, decide their matches (engine.query.candidates)."""
    if interpretation is None or words is None:
        return True
    typed = WORD_RE.findall(interpretation.text)
    if any(w.startswith("<") for w in typed):
        return False
    facet = set()  # positions of the words a facet value was read from (two-word forms too: "t shirt")
    for i, word in enumerate(typed):
        if words.facet_of(word) is not None:
            facet.add(i)
        if i + 1 < len(typed) and words.facet_of(f"{word} {typed[i + 1]}") is not None:
            facet |= {i, i + 1}
    return not any(i not in facet and w.lower() in words.words and query_terms(w)
                   for i, w in enumerate(typed))


def _item(rank: int, hit: Hit) -> ResultItem:
    """A store hit as a result: its payload without the internal fields (engine.product)."""
    return ResultItem(rank, hit.id, hit.score, public_payload(hit.payload))
