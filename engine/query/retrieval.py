"""From a prepared query to a page: the store query (dense + BM25, fused in the store), products or photos, facets.

    page = Retriever(store, config, backbone_id).page(request, vector, lexical_text)

The lexical side sees the query's words without custom-token placeholders (`<aurora>` is not a word);
the dense side the composed CLIP vector. A collection built before collections carried BM25 vectors
is still served, dense only, with a note naming `coinage reindex`.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np

from engine.lexical import embed_query
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

T = TypeVar("T")
_ORDER = {"price_asc": "asc", "price_desc": "desc"}
REINDEX_NOTE = ("this index was built before name search and typo correction: results come from the image "
                "vectors only; rebuild it with `coinage reindex` (searches keep being served meanwhile)")


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
    def __init__(self, store: VectorStore, config: QueryConfig, backbone_id: str):
        self.store = store
        self.config = config
        self.backbone_id = backbone_id

    def page(self, request: SearchRequest, vector: np.ndarray | None, lexical_text: str) -> Page:
        """One page of results for the request: `vector` is the dense query (None: lexical only)."""
        sparse = embed_query(lexical_text) if request.retrieval != "dense" and lexical_text else None
        if request.retrieval == "lexical" and not sparse:
            raise QueryError("lexical retrieval needs words to match (custom tokens and stop words are not); "
                             "use retrieval 'hybrid' or 'dense'")
        vector = None if request.retrieval == "lexical" else vector
        query = self._query(request, vector, sparse)
        target = self.pin()
        try:
            return self._run(request, query, target)
        except NoSparseVectors as e:
            if vector is None:
                raise QueryError(f"lexical retrieval is unavailable: {e}") from e
            query.sparse = None
            page = self._run(request, query, target)
            page.notes.insert(0, REINDEX_NOTE)
            return page

    def pin(self) -> str:
        """The collection the configured name (an alias, usually) points at now: resolved once per request, so
        every store call of the request reads the same collection even if a reindex moves the alias meanwhile."""
        name = self.config.collection
        return self._call(lambda: self.store.get_alias(name)) or name

    def _query(self, request: SearchRequest, vector: np.ndarray | None, sparse) -> StoreQuery:
        """The request's one store query: a fixed window, the same for every page, page size and sort."""
        cfg = self.config
        return StoreQuery(dense=vector, sparse=sparse, filter=self.filter(request), fusion=cfg.store_fusion(),
                          prefetch_limit=cfg.candidate_window)

    def _run(self, request: SearchRequest, query: StoreQuery, target: str) -> Page:
        cfg = self.config
        limit = request.limit or cfg.default_limit
        retrieval = "hybrid" if query.hybrid else ("dense" if query.dense is not None else "lexical")
        hits = self._candidates(target, query)
        order = _ORDER.get(request.sort)
        found = candidates.select(hits, query.prefetch_limit, cfg.group_by, cfg.group_size,
                                  cfg.sort_floor if order else cfg.relevance_floor)
        notes = []
        if order:
            if found.floored:
                notes.append(f"sorted by price: the {found.matched} best-matching of {len(found.products)} candidate "
                             "products; sort by relevance to see them all")
            found = candidates.by_price(candidates.matches(found, cfg.group_by), cfg.price_field, order)
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
        sides = []
        for dense, sparse in ((query.dense, None), (None, query.sparse)):
            if dense is not None or sparse:
                side = StoreQuery(dense=dense, sparse=sparse, filter=query.filter, prefetch_limit=window)
                sides.append(fusion.side_window(lambda n, q=side: self._fetch(target, q, n), window, most))
        return fusion.fuse(sides, query.fusion)

    def _fetch(self, target: str, query: StoreQuery, n: int) -> list[Hit]:
        return self._call(lambda: self.store.query(target, query, limit=n))

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

    def _call(self, fn: Callable[[], T]) -> T:
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


def _item(rank: int, hit: Hit) -> ResultItem:
    """A store hit as a result: its payload without the internal fields (engine.product)."""
    return ResultItem(rank, hit.id, hit.score, public_payload(hit.payload))
