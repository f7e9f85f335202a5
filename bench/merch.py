"""What merchandising rules cost a search, in one run (`coinage bench merch`): the query service in process,
tiny-random, the demo world's catalog, the same queries searched with each set of rules, rounds interleaved.

Sides (every rule matches every query):
- `none`: no rules (the baseline);
- `boost`: boost one category (the stage re-scores and re-sorts the candidate list);
- `pin_far`: per query, pin a product its candidate list does not hold (one more store query for it);
- `concept`: boost a concept's products (the concept's own query's matches, cached: the steady state).

Figures: p50 / p95 search latency per side and its ratio to `none` in the same run; store queries per search; and
the cost of computing a concept's products once (uncached: the search of its placeholder alone, every page of its
matches), as a ratio to one plain search's p50. Writes bench/results/merch.json.
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import RESULTS, write_result

SIDES = ("none", "boost", "pin_far", "concept")
PHOTOS = 6  # photos per product (the demo world needs 6: 5 concept photos and a query photo)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="coinage bench merch", description=__doc__.splitlines()[0])
    p.add_argument("--products", type=int, default=200, help=f"catalog products ({PHOTOS} photos each)")
    p.add_argument("--queries", type=int, default=20, help="distinct queries per round")
    p.add_argument("--rounds", type=int, default=3, help="rounds; each searches every query once per side")
    p.add_argument("--out", type=Path, default=RESULTS / "merch.json")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-merch-") as tmp:
        figures = run(args, Path(tmp))
    path = write_result("merch", figures, argv if argv is not None else [], args.out)
    print(json.dumps({k: figures[k] for k in ("ratios_p50", "ratios_p95", "store_queries_per_search",
                                              "concept_products")}, indent=2))
    print(f"wrote {path}")
    return 0


def run(args, root: Path) -> dict[str, Any]:
    import torch

    from engine.merch import MerchSource, MerchStore, Rule
    from engine.merch.concept_products import ConceptProducts
    from engine.query import SearchRequest
    from engine.tokens import CustomToken, TokenMeta, save_token
    from web import create_app
    from web.testing import build_catalog, tiny_settings

    catalog = build_catalog(root, products=args.products, photos=PHOTOS)
    rows = [json.loads(line) for line in catalog.read_text().splitlines() if line]
    app = create_app(tiny_settings(root))
    res = app.extensions["coinage"]
    try:
        torch.manual_seed(0)
        token = save_token(CustomToken("<aurora>", torch.randn(1, res.backbone.text_width),
                                       TokenMeta("dress", "tiny-random")), root / "aurora.safetensors")
        res.registry.import_token(token, parent="dress", backbone_id="tiny-random", width=res.backbone.text_width)
        service = res.query
        texts = queries(rows, args.queries)
        service.merch = None
        plain_lists = {t: every_product(service, t) for t in texts}
        outside = {t: next((r["product_id"] for r in rows if r["product_id"] not in plain_lists[t]), None)
                   for t in texts}
        category = rows[0]["category"]
        rules = {"none": [], "boost": [Rule("boost", "always", "", "boost", category=category, amount=0.5)],
                 "pin_far": [Rule(f"pin {t}", "exact", t, "pin", products=(pid,), position=1)
                             for t, pid in outside.items() if pid is not None],
                 "concept": [Rule("concept", "always", "", "boost", concept="<aurora>", amount=0.5)]}
        sources = {}
        for side, side_rules in rules.items():
            store = MerchStore(root / f"merch-{side}.sqlite3")
            if side_rules:
                store.add_rules(side_rules, "bench")
            sources[side] = MerchSource(store, refresh_s=3600.0)
        counted = {"n": 0}
        real_query = res.store.query

        def counting(*a, **kw):
            counted["n"] += 1
            return real_query(*a, **kw)

        res.store.query = counting
        samples: dict[str, list[float]] = {s: [] for s in SIDES}
        store_queries: dict[str, list[int]] = {s: [] for s in SIDES}
        for side in SIDES:  # warm-up: every query once per side (text caches, the concept's products)
            service.merch = sources[side]
            for t in texts:
                service.search(SearchRequest(t, gair=False, limit=12))
        for _ in range(args.rounds):
            for t in texts:
                for side in SIDES:
                    service.merch = sources[side]
                    counted["n"] = 0
                    start = time.perf_counter()
                    service.search(SearchRequest(t, gair=False, limit=12))
                    samples[side].append((time.perf_counter() - start) * 1000)
                    store_queries[side].append(counted["n"])
        service.merch = None
        concept_ms = []
        for _ in range(args.rounds):
            fresh = ConceptProducts()
            start = time.perf_counter()
            members = fresh.get(service, "<aurora>")
            concept_ms.append((time.perf_counter() - start) * 1000)
        stats = {s: {"p50_ms": round(pct(v, 50), 2), "p95_ms": round(pct(v, 95), 2), "n": len(v)}
                 for s, v in samples.items()}
        base = stats["none"]
        return {
            "catalog": {"products": len({r["product_id"] for r in rows}), "photos_per_product": PHOTOS,
                        "queries": len(texts), "rounds": args.rounds, "backbone": "tiny-random", "store": "embedded"},
            "latency": stats,
            "ratios_p50": {s: round(stats[s]["p50_ms"] / base["p50_ms"], 3) for s in SIDES},
            "ratios_p95": {s: round(stats[s]["p95_ms"] / base["p95_ms"], 3) for s in SIDES},
            "store_queries_per_search": {s: round(statistics.fmean(v), 2) for s, v in store_queries.items()},
            "pins_beyond_the_candidate_list": sum(pid is not None for pid in outside.values()),
            "concept_products": {"products": len(members), "compute_ms_median": round(statistics.median(concept_ms), 2),
                                 "compute_vs_plain_search_p50": round(statistics.median(concept_ms) / base["p50_ms"],
                                                                      2)},
        }
    finally:
        res.close()


def queries(rows: list[dict[str, Any]], n: int) -> list[str]:
    """Category and colour + category queries drawn from the catalog, in catalog order (deterministic)."""
    out: list[str] = []
    for r in rows:
        colour = (r.get("attributes") or {}).get("colour")
        for text in (r["category"], f"{colour} {r['category']}" if colour else None):
            if text and text not in out:
                out.append(text)
    return out[:n]


def every_product(service: Any, text: str) -> list[str]:
    from engine.query import SearchRequest

    found, offset = [], 0
    while offset is not None:
        page = service.search(SearchRequest(text, gair=False, limit=100, offset=offset, facets=False))
        found += [p.product_id for p in page.products]
        offset = page.next_offset
    return found


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


if __name__ == "__main__":
    raise SystemExit(main())
