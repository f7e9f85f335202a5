"""Benchmark the query service: plain search latency, and GAIR's time split and caches.

    coinage bench query [--sizes 10000,100000] [--queries 200] [--backbone tiny-random]
                        [--gair-runs 3] [--steps 4] [--note TEXT] [--out bench/results/query.json]

Search (no GAIR), per catalog size, on the embedded store (engine.store, HNSW at StoreConfig
defaults, built by optimize()):
- text encoding of a composed query alone (the prompt and its attribute prompts in one batch;
  every query distinct, so the text cache never hits), per text runtime (PyTorch, ONNX);
- store search alone (precomputed vectors), unfiltered and filtered (2 categories + a price range);
- QueryService.search end to end: cold (distinct queries: parse + encode + search) and warm
  (repeated queries: the text cache hits), unfiltered and filtered.
Data: product vectors of the backbone's embed dim, drawn around 200 cluster centres that share a
common direction (CLIP embeddings are anisotropic); 20 categories, prices uniform in [1, 1000].

GAIR (the backbone's diffusion stack; steps as given):
- the time split of a cold run (text, context generation, candidate generation, scoring, search);
- batched vs one-by-one generation of the weight grid (same seed, so the same images);
- cold vs warm cache (the same request again: nothing is generated).

Torch runs on 2 threads; cap BLAS threads from outside, `OMP_NUM_THREADS=2 coinage bench query` (recorded
in the result's machine.omp_num_threads), since numpy is loaded before any benchmark code runs.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from bench.common import header, write_json
from engine.query import QueryConfig, QueryService, SearchRequest
from engine.store import Filter, Point, StoreConfig, open_store
from engine.tokens import CustomToken, TokenMeta, TokenSet

N_CATEGORIES = 20
CENTRES = 200
BATCH = 2000
COLORS = ["red", "blue", "green", "black", "white", "pink", "gold", "grey", "striped", "floral"]
PLACES = ["on a beach", "in a city", "at night", "on a brick wall", "in the snow", "in a garden", "at a party",
          "in the rain", "on a table", "in a shop"]
ATTRIBUTES = ["red", "old", "worn", "bright", "dark", "pink"]


def log(msg: str) -> None:
    print(f"[bench/query {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def stats(ms: Sequence[float]) -> dict[str, float]:
    a = np.asarray(ms, dtype=np.float64)
    return {"p50_ms": round(float(np.percentile(a, 50)), 3), "p95_ms": round(float(np.percentile(a, 95)), 3),
            "mean_ms": round(float(a.mean()), 3), "n": int(a.size)}


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    out = fn()
    return (time.perf_counter() - start) * 1000.0, out


def queries(n: int, offset: int = 0) -> list[str]:
    """n distinct composed queries (distinct strings: the text cache cannot hit)."""
    out = []
    for i in range(offset, offset + n):
        out.append(f"<aurora> {COLORS[i % 10]} {PLACES[(i // 10) % 10]} number {i}")
    return out


def clustered(n: int, dim: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    common = rng.standard_normal(dim)
    common /= np.linalg.norm(common)
    c = rng.standard_normal((CENTRES, dim))
    c = 0.5 * common + c / np.linalg.norm(c, axis=1, keepdims=True)
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    x = c[rng.integers(0, CENTRES, n)] + rng.standard_normal((n, dim)) * (0.6 / np.sqrt(dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def build_store(root: Path, n: int, dim: int, seed: int) -> tuple[Any, dict[str, float]]:
    store = open_store(StoreConfig(path=str(root)))
    name = f"products-{n}"
    store.create_collection(name, dim=dim, payload_indexes={"category": "keyword", "price": "float"})
    vectors = clustered(n, dim, seed)
    rng = np.random.default_rng(seed + 1)
    cats, prices = rng.integers(0, N_CATEGORIES, n), np.round(rng.uniform(1, 1000, n), 2)
    upsert_ms, _ = timed(lambda: [store.upsert(name, [
        Point(f"00000000-0000-4000-8000-{i:012x}", vectors[i], {"product_id": f"p{i}", "category": f"c{cats[i]:02d}",
                                                             "price": float(prices[i])})
        for i in range(start, min(n, start + BATCH))]) for start in range(0, n, BATCH)])
    optimize_ms, _ = timed(lambda: store.optimize(name))
    store.set_alias("products", name)
    return store, {"upsert_s": round(upsert_ms / 1000, 2), "optimize_s": round(optimize_ms / 1000, 2)}


def make_tokens(backbone) -> tuple[TokenSet, dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(0)
    meta = TokenMeta(parent="dress", backbone_id=backbone.id, attributes=ATTRIBUTES)
    tokens = TokenSet([CustomToken("<aurora>", torch.randn(4, backbone.text_width, generator=gen) * 0.02, meta)])
    features = {"<aurora>": torch.nn.functional.normalize(torch.randn(5, backbone.embed_dim, generator=gen), dim=-1)}
    return tokens, features


def request_filter(i: int) -> dict[str, Any]:
    a, b = i % N_CATEGORIES, (i * 7 + 3) % N_CATEGORIES
    return {"category": sorted({f"c{a:02d}", f"c{b:02d}"}), "min_price": 100.0, "max_price": 600.0}


def bench_search(service: QueryService, dim: int, n_queries: int, seed: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    store = service.store
    vecs = clustered(n_queries, dim, seed + 7)
    for i in range(5):  # warm up the store and the tower
        service.search(SearchRequest(queries(1, 10_000 + i)[0], gair=False))
    out["store_only"] = stats([timed(lambda: store.search("products", v, limit=10))[0] for v in vecs])
    out["store_only_filtered"] = stats([timed(lambda: store.search(
        "products", v, limit=10, filter=Filter(must={"category": request_filter(i)["category"]},
                                               ranges={"price": (100.0, 600.0)})))[0]
        for i, v in enumerate(vecs)])
    cold = queries(n_queries, 20_000 + seed * n_queries)
    out["service_cold_text"] = stats([timed(lambda: service.search(SearchRequest(q, gair=False)))[0] for q in cold])
    cold_f = queries(n_queries, 40_000 + seed * n_queries)
    out["service_cold_text_filtered"] = stats([timed(lambda: service.search(SearchRequest(
        q, gair=False, **request_filter(i))))[0] for i, q in enumerate(cold_f)])
    out["service_warm_text"] = stats([timed(lambda: service.search(SearchRequest(q, gair=False)))[0] for q in cold])
    sample = service.search(SearchRequest(queries(1, 90_000 + seed)[0], gair=False))  # a query not seen before
    out["split_of_one_cold_query_ms"] = {k: v for k, v in sample.timings_ms.items()}
    return out


def bench_text(services: dict[str, QueryService], n_queries: int) -> dict[str, Any]:
    """Composed-query encoding: w = 1 needs the prompt alone; w < 1 adds the |A| attribute prompts (one batch)."""
    out: dict[str, Any] = {}
    for k, (runtime, service) in enumerate(services.items()):
        for q in queries(3, 70_000):
            service.composed_vectors(q, [0.5])  # warm-up
        figures = {}
        for name, weights, offset in (("w_1", [1.0], 0), ("w_below_1", [0.5], 1)):
            qs = queries(n_queries, 60_000 + 10_000 * (2 * k + offset))
            figures[name] = stats([timed(lambda: service.composed_vectors(q, weights))[0] for q in qs])
        figures["w_1"]["prompts_per_query"] = 1
        figures["w_below_1"]["prompts_per_query"] = 1 + len(ATTRIBUTES)
        out[runtime] = figures
        if runtime == "torch":  # intra-op threads fight over 2 busy cores: one thread is often faster
            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                qs = queries(n_queries, 85_000)
                out["torch_1_thread"] = {"w_1": stats([timed(lambda: service.composed_vectors(q, [1.0]))[0]
                                                       for q in qs])}
            finally:
                torch.set_num_threads(threads)
    return out


def bench_gair(backbone, store, tokens, features, steps: int, runs: int) -> dict[str, Any]:
    config = QueryConfig(text_runtime="torch", steps=steps)
    service = QueryService(backbone, store, tokens, features, config)
    splits, cold_ms, warm_ms = [], [], []
    for r in range(runs):
        request = SearchRequest("<aurora> dress on a beach", seed=100 + r)
        ms, result = timed(lambda: service.gair(request))
        cold_ms.append(ms)
        splits.append(result.timings_ms)
        warm_ms.append(timed(lambda: service.gair(request))[0])
    split = {k: round(float(np.median([s.get(k, 0.0) for s in splits])), 2) for k in splits[0]}
    # batched vs one by one: the composed seqs for the whole grid, same seed
    composed = service.composed_features("<aurora> dress on a beach", config.weights)
    seqs = composed.seq
    batched, one_by_one, max_diff = [], [], 0.0
    for r in range(runs):
        ms, images = timed(lambda: service.generator(seqs, 7 + r, None, None))
        batched.append(ms)
        singles = []
        ms = 0.0
        for i in range(seqs.shape[0]):
            t, img = timed(lambda: service.generator(seqs[i:i + 1], 7 + r, None, None))
            ms += t
            singles.append(img)
        one_by_one.append(ms)
        max_diff = max(max_diff, float((torch.cat(singles) - images).abs().max()))
    return {
        "steps": steps, "weights": list(config.weights), "images_per_weight": config.images_per_weight,
        "guidance_scale": service.sampler.guidance_scale, "image_size": backbone.config.image_size, "runs": runs,
        "cold_split_ms_median": split,
        "cold_total_ms": stats(cold_ms), "warm_total_ms": stats(warm_ms),
        "cold_over_warm": round(float(np.median(cold_ms) / np.median(warm_ms)), 1),
        "generation_batched_ms": stats(batched), "generation_one_by_one_ms": stats(one_by_one),
        "one_by_one_over_batched": round(float(np.median(one_by_one) / np.median(batched)), 2),
        "batched_vs_single_max_abs_pixel_diff": round(max_diff, 6),
        "query_vector_dim": int(composed.pooled.shape[1]),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="coinage bench query", description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="10000,100000", help="catalog sizes, comma-separated")
    p.add_argument("--queries", type=int, default=200, help="queries per latency figure")
    p.add_argument("--backbone", default="tiny-random")
    p.add_argument("--gair-runs", type=int, default=3)
    p.add_argument("--steps", type=int, default=4, help="denoising steps for the GAIR figures")
    p.add_argument("--onnx", action=argparse.BooleanOptionalAction, default=True,
                   help="also time the ONNX text tower (exported into a temporary directory)")
    p.add_argument("--note", default="", help="free text stored in the result (e.g. machine load)")
    p.add_argument("--out", default="bench/results/query.json")
    args = p.parse_args(argv)
    started = time.perf_counter()
    from engine.loading import load_backbone

    torch.set_num_threads(2)
    backbone = load_backbone(args.backbone, device="cpu")
    dim = backbone.embed_dim
    tokens, features = make_tokens(backbone)
    result: dict[str, Any] = {
        **header("query", sys.argv[1:] if argv is None else argv),
        "note": args.note,
        "backbone": {"id": backbone.id, "embed_dim": backbone.embed_dim, "text_width": backbone.text_width,
                     "image_size": backbone.config.image_size},
        "vector_dim": dim, "queries_per_figure": args.queries, "target": "search p95 < 50 ms without GAIR",
    }
    workdir = Path(tempfile.mkdtemp(prefix="coinage-bench-query-"))
    try:
        text_services = {"torch": QueryService(backbone, None, tokens, features, QueryConfig(text_runtime="torch"))}
        if args.onnx:
            log("exporting the ONNX text tower")
            onnx = QueryService(backbone, None, tokens, features,
                                QueryConfig(text_runtime="auto", onnx_cache_dir=str(workdir / "onnx")))
            if onnx.text_runtime != "torch":
                text_services["onnx"] = onnx
        result["text_encoding"] = bench_text(text_services, args.queries)
        log(f"text encoding: {result['text_encoding']}")
        result["search"] = {}
        for n in [int(s) for s in args.sizes.split(",") if s.strip()]:
            log(f"building the embedded store: {n} x {dim}")
            store, build = build_store(workdir / f"store-{n}", n, dim, seed=n % 997)
            try:
                runtime = "onnx" if "onnx" in text_services else "torch"
                service = QueryService(backbone, store, tokens, features,
                                       QueryConfig(text_runtime=runtime, onnx_cache_dir=str(workdir / "onnx")))
                figures = bench_search(service, dim, args.queries, seed=1)
                result["search"][str(n)] = {"build": build, "text_runtime": service.text_runtime, **figures}
                log(f"n={n}: {json.dumps(result['search'][str(n)])}")
                if backbone.has_diffusion and n == min(int(s) for s in args.sizes.split(",")):
                    log("GAIR")
                    result["gair"] = bench_gair(backbone, store, tokens, features, args.steps, args.gair_runs)
                    log(f"gair: {json.dumps(result['gair'])}")
            finally:
                store.close()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    result["total_s"] = round(time.perf_counter() - started, 1)
    result["machine"]["loadavg_1m_at_end"] = round(os.getloadavg()[0], 2)
    out = write_json(args.out, result)
    log(f"wrote {out} ({result['total_s']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
