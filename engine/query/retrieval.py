"""From a prepared query to a page: the store query (dense + BM25, fused in the store), products or photos, facets.

    page = Retriever(store, config, backbone_id).page(request, vector, lexical_text)

The lexical side sees the query's words without custom-token placeholders (`<aurora>` is not a word);
the dense side the composed CLIP vector. A collection built before collections carried BM25 vectors
is still served, dense only, with a note naming `coinage reindex`.
"""
from __future__ import annotations

import dataclasses
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
    OrderBy,
    StoreQuery,
    VectorStore,
)
from engine.store.hybrid import group_hits

from . import floor
from .config import QueryConfig
from .errors import IndexMismatch, IndexNotFound, QueryError
from .schema import Facets, ProductResult, ResultItem, SearchRequest

T = TypeVar("T")
_ORDER = {"price_asc": "asc", "price_desc": "desc"}
REINDEX_NOTE = ("this index was built before name search and typo correction: results come from the image "
                "vectors only; rebuild it with `coinage reindex` (searches keep being served meanwhile)")


@dataclass(frozen=True)
class Floor:
    threshold: float | None  # the store's score_threshold; None: every candidate stays
    kept: int  # candidate products at or above it
    candidates: int  # candidate products of the window


@dataclass
class Page:
    results: list[ResultItem]  # photos (mode "photos") or each product's best photo (mode "products")
    products: list[ProductResult]  # the products of the page (mode "products"), else []
    retrieval: str  # the sides that retrieved: "hybrid", "dense" or "lexical"
    facets: Facets | None = None
    notes: list[str] = field(default_factory=list)


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
        try:
            return self._run(request, query)
        except NoSparseVectors as e:
            if vector is None:
                raise QueryError(f"lexical retrieval is unavailable: {e}") from e
            query.sparse = None
            page = self._run(request, query)
            page.notes.insert(0, REINDEX_NOTE)
            return page

    def _query(self, request: SearchRequest, vector: np.ndarray | None, sparse) -> StoreQuery:
        cfg = self.config
        limit = request.limit or cfg.default_limit
        order = OrderBy(cfg.price_field, _ORDER[request.sort]) if request.sort in _ORDER else None
        prefetch = max(cfg.prefetch_limit, cfg.prefetch_per_product * (request.offset + limit))
        if order is not None:
            # one fixed window for a sorted list, so every page (and page size) sees the same list: the fused
            # scores (DBSF) and the relevance floor both depend on the window
            prefetch = cfg.sort_window
        return StoreQuery(dense=vector, sparse=sparse, filter=self.filter(request), fusion=cfg.store_fusion(),
                          prefetch_limit=prefetch, order_by=order)

    def _run(self, request: SearchRequest, query: StoreQuery) -> Page:
        cfg = self.config
        name = cfg.collection
        limit = request.limit or cfg.default_limit
        retrieval = "hybrid" if query.hybrid else ("dense" if query.dense is not None else "lexical")
        notes = []
        if query.order_by is not None and cfg.sort_floor != "none":
            cut = self.relevance_floor(query)
            if cut.threshold is not None:
                query = dataclasses.replace(query, score_threshold=cut.threshold)
                notes.append(f"sorted by price: the {cut.kept} best-matching of {cut.candidates} candidate products; "
                             "sort by relevance to see them all")
        products: list[ProductResult] = []
        if request.mode == "products":
            groups = self._call(lambda: self.store.query_groups(name, query, cfg.group_by, limit=limit,
                                                                offset=request.offset, group_size=cfg.group_size))
            products = [ProductResult(request.offset + i + 1, str(g.key), g.score,
                                      [_item(request.offset + i + 1, h) for h in g.hits])
                        for i, g in enumerate(groups)]
        if products:
            results = [p.photos[0] for p in products]
        else:  # photo mode, or points without the group field (a collection not built by the indexer)
            hits = self._call(lambda: self.store.query(name, query, limit=limit, offset=request.offset))
            results = [_item(request.offset + i + 1, h) for i, h in enumerate(hits)]
            if request.mode == "products" and results:
                notes.append(f"these points have no {cfg.group_by!r} field, so results are per photo; "
                             "index the catalog with `coinage index` to group them per product")
        facets = self._facets(query) if request.facets else None  # of the floored list when sorted: what it shows
        return Page(results, products, retrieval, facets, notes)

    def relevance_floor(self, query: StoreQuery) -> Floor:
        """The score below which a sorted query's candidates are dropped (QueryConfig.sort_floor, read from the
        candidate products' scores: each product's best photo; points without the group field are not read). No
        threshold when every candidate stays."""
        cfg = self.config
        ranked = dataclasses.replace(query, order_by=None, score_threshold=None)
        hits = self._call(lambda: self.store.query(cfg.collection, ranked, limit=ranked.window()))
        scores = [g.score for g in group_hits(hits, cfg.group_by, 1)]  # best first
        n = floor.kept(scores, cfg.sort_floor)
        if n >= len(scores):
            return Floor(None, len(scores), len(scores))
        last = scores[n - 1]
        # the store recomputes the scores: leave float noise room so the last product kept stays
        return Floor(last - 1e-6 * max(1.0, abs(last)), n, len(scores))

    def _facets(self, query: StoreQuery) -> Facets:
        cfg = self.config
        fields = {"category": cfg.category_field, "colour": cfg.colour_field}
        counts = self._call(lambda: self.store.facets(cfg.collection, query, cfg.group_by, list(fields.values()),
                                                      {cfg.price_field: list(cfg.price_buckets)}))
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
