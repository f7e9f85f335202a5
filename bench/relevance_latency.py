"""Latency part of `coinage bench relevance --latency-products N ...`: a synthetic scale-up of the world's catalog
and p50/p95 of first pages per retrieval (split from bench/relevance.py); and, on both store backends, a hybrid first
page with the two sides in one store call (QueryConfig.side_batch, off by default: it measured no gain) against
one call per side (the default), timed in the same run, query by query in alternating order."""
from __future__ import annotations

import re
import tempfile
import time
from typing import Any

from bench.relevance import PAGE, RETRIEVALS, BenchQuery, RelevanceConfig, load_catalog


def scaled_rows(rows: list[dict], vectors, products: int, photos: int, seed: int):
    """A synthetic catalog of `products` products: the world's rows repeated under new product ids and names
    (a made-up product line per copy), each vector jittered so copies are not exact duplicates."""
    import numpy as np

    from world.catalog import PRODUCT_LINES

    rng = np.random.default_rng(seed)
    by_product: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        by_product.setdefault(r["product_id"], []).append(i)
    base = sorted(by_product)
    out_rows, out_vecs = [], []
    for n in range(products):
        src = base[n % len(base)]
        line = f"{PRODUCT_LINES[n % len(PRODUCT_LINES)]}{n // len(PRODUCT_LINES)}"
        for k, i in enumerate(by_product[src][:photos]):
            r = rows[i]
            out_rows.append({**r, "id": f"s{n}-{k}", "product_id": f"s{n}",
                             "title": re.sub(r"^\S+", line, r["title"])})
            v = vectors[i] + 0.02 * rng.standard_normal(vectors.shape[1]).astype(np.float32)
            out_vecs.append(v / np.linalg.norm(v))
    return out_rows, np.stack(out_vecs)


def latency(service, queries: list[BenchQuery], n: int) -> dict[str, Any]:
    """p50/p95 of a first page (12 products, no facets) per retrieval, and hybrid sorted by price, with each
    query's CLIP text encoding cached beforehand (the same for all); the first, cold pass is reported apart."""
    from engine.query import SearchRequest

    picked = [q.text for q in queries if "+typo" not in q.kind]
    picked = [picked[(i * 7) % len(picked)] for i in range(min(n, len(picked)))]  # every kind, in turns

    def timed(retrieval: str, sort: str = "relevance") -> list[float]:
        times = []
        for text in picked:
            t = time.perf_counter()
            service.search(SearchRequest(text, gair=False, retrieval=retrieval, facets=False, limit=PAGE, sort=sort))
            times.append((time.perf_counter() - t) * 1000)
        return times

    out: dict[str, Any] = {"queries": len(picked), "cold_dense_with_text_encoding": _percentiles(timed("dense"))}
    for retrieval in RETRIEVALS:
        out[retrieval] = _percentiles(timed(retrieval))
    out["hybrid_p95_over_dense"] = round(out["hybrid"]["p95_ms"] / out["dense"]["p95_ms"], 3)
    # price low to high: the relevance floor's query, then the ordered one, over QueryConfig.sort_window
    out["hybrid_price_sorted"] = _percentiles(timed("hybrid", "price_asc"))
    out["price_sorted_p95_over_hybrid"] = round(out["hybrid_price_sorted"]["p95_ms"] / out["hybrid"]["p95_ms"], 3)
    return out


def side_calls(services: dict[str, Any], queries: list[BenchQuery], n: int) -> dict[str, Any]:
    """p50/p95 of a hybrid first page (12 products, facets as the page asks) per way of fetching the sides
    (`services`: name -> QueryService), after one untimed pass each; per query the services run in turns, the
    first one alternating, so that both meet the same load."""
    from engine.query import SearchRequest

    picked = [q.text for q in queries if "+typo" not in q.kind]
    picked = [picked[(i * 7) % len(picked)] for i in range(min(n, len(picked)))]
    names = list(services)
    times: dict[str, list[float]] = {name: [] for name in names}
    for timed in (False, True):
        for i, text in enumerate(picked):
            for name in (names if i % 2 == 0 else names[::-1]):
                t = time.perf_counter()
                services[name].search(SearchRequest(text, gair=False, retrieval="hybrid", limit=PAGE))
                if timed:
                    times[name].append((time.perf_counter() - t) * 1000)
    out: dict[str, Any] = {"queries": len(picked), **{name: _percentiles(v) for name, v in times.items()}}
    if len(names) == 2:
        a, b = names
        out[f"{a}_over_{b}"] = {k: round(out[a][k] / out[b][k], 3) if out[b][k] else None
                                for k in ("p50_ms", "p95_ms")}
    return out


def _percentiles(times: list[float]) -> dict[str, float]:
    times = sorted(times)
    return {"p50_ms": round(times[len(times) // 2], 2), "p95_ms": round(times[min(len(times) - 1,
                                                                                  int(0.95 * len(times)))], 2)}


def scaled_latency(rc: RelevanceConfig, backbone, rows, vectors, queries, products: int, base) -> dict[str, Any]:
    from engine.query import QueryService
    from engine.store import StoreConfig, open_store
    from engine.tokens import TokenSet

    scaled, vecs = scaled_rows(rows, vectors, products, rc.latency_photos, rc.world_seed)
    with tempfile.TemporaryDirectory() as tmp, open_store(StoreConfig(path=tmp)) as store:
        t = time.perf_counter()
        load_catalog(store, "products", scaled, vecs, backbone.embed_dim)
        build = time.perf_counter() - t
        out = latency(QueryService(backbone, store, TokenSet(), None, base), queries, rc.latency_queries)
        out["side_calls"] = {"embedded": _side_calls(backbone, store, base, queries, rc.latency_queries)}
    with open_store(StoreConfig(backend="server", url=":memory:")) as store:  # the server backend's stand-in
        load_catalog(store, "products", scaled, vecs, backbone.embed_dim)
        out["side_calls"]["server_stand_in"] = _side_calls(backbone, store, base, queries, rc.latency_queries)
    return {"points": len(scaled), "photos_per_product": rc.latency_photos, "build_seconds": round(build, 1), **out}


def _side_calls(backbone, store, base, queries, n: int) -> dict[str, Any]:
    import dataclasses

    from engine.query import QueryService
    from engine.tokens import TokenSet

    return side_calls({name: QueryService(backbone, store, TokenSet(), None, dataclasses.replace(base, side_batch=b))
                       for name, b in (("one_call", True), ("call_per_side", False))}, queries, n)
