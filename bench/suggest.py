"""Suggestions as you type at scale: build the in-memory index of a synthetic catalog (the world's products
repeated under new names and ids, as `coinage bench relevance --latency-products` does), then time every
keystroke of typed queries (product names, categories, colours, concept names, with and without a typo), and
the query-understanding stage over the same catalog words.

    coinage bench suggest [--products 100000] [--world-seed 0] [--keystrokes 2000]

Also every keystroke again with 200 shop synonym groups (suggestions offer what they map to): its p95 and the
ratio to the keystrokes without them, in the same run.

Writes bench/results/suggest.json (command, date, machine, figures).
"""
from __future__ import annotations

import argparse
import random
import sys
import time
from typing import Any

from bench.common import RESULTS, write_result


def synthetic_payloads(world_seed: int, products: int) -> list[dict[str, Any]]:
    """One payload per product: the world's products repeated under new product ids and product lines."""
    from world.build import make_world
    from world.catalog import PRODUCT_LINES, catalog_rows

    seen, base = set(), []
    for row in catalog_rows(make_world(world_seed)):
        if row["product_id"] not in seen:
            seen.add(row["product_id"])
            base.append(row)
    out = []
    for n in range(products):
        r = base[n % len(base)]
        line = f"{PRODUCT_LINES[n % len(PRODUCT_LINES)]}{n // len(PRODUCT_LINES)}"
        out.append({**r, "id": f"s{n}-0", "product_id": f"s{n:06d}", "title": line + r["title"][r["title"].index(" "):]})
    return out


def typed_queries(payloads: list[dict[str, Any]], concepts: list[str], n: int, seed: int) -> list[str]:
    """Every prefix of texts a shopper would type: names, categories, colours, concepts, some with a typo."""
    rng = random.Random(f"coinage-suggest:{seed}")
    texts = []
    for _ in range(n):
        p = rng.choice(payloads)
        kind = rng.random()
        if kind < 0.4:
            texts.append(p["title"].split(" — ")[0].lower())
        elif kind < 0.6:
            texts.append(p["category"])
        elif kind < 0.75:
            texts.append(f"{p['attributes']['colour']} {p['category']}")
        elif kind < 0.85 and concepts:
            texts.append(rng.choice(concepts))
        else:
            word = p["category"]
            i = rng.randrange(1, len(word) - 1)
            texts.append(word[:i] + word[i + 1:])  # a dropped letter
    return [t[:k] for t in texts for k in range(1, len(t) + 1)]


SYNONYM_GROUPS = 200  # a shop's synonym list: two-way groups, each a made-up word and a catalog value


def shop_synonyms(words, n: int) -> list:
    """`n` two-way synonym groups ("synonym7, dress"), each pairing a word no catalog row holds with a facet value,
    so that every keystroke is compared against them all (what a shop with that many synonyms costs)."""
    from engine.merch import Synonym

    values = sorted(v for facet in words.facets.values() for v in facet)
    return [Synonym((f"synonym{i}", values[i % len(values)])) for i in range(n)]


def _percentiles(times: list[float]) -> dict[str, float]:
    times = sorted(times)
    return {"p50_ms": round(times[len(times) // 2], 3), "p95_ms": round(times[int(len(times) * 0.95)], 3),
            "max_ms": round(times[-1], 3), "calls": len(times)}


def main(argv: list[str] | None = None) -> int:
    from engine.query.config import QueryConfig
    from engine.query.suggest import SuggestIndex
    from engine.query.understand import CatalogWords, understand
    from engine.tokens import TokenSet

    p = argparse.ArgumentParser(prog="coinage bench suggest", description=__doc__.splitlines()[0])
    p.add_argument("--products", type=int, default=100_000)
    p.add_argument("--world-seed", type=int, default=0)
    p.add_argument("--keystrokes", type=int, default=300, help="typed texts (every prefix of each is timed)")
    p.add_argument("--out", help="JSON report (default bench/results/suggest.json)")
    args = p.parse_args(argv)
    config = QueryConfig()
    payloads = synthetic_payloads(args.world_seed, args.products)
    concepts = ["newcomer", "aurora", "meadowlark", "p0042"]
    t = time.perf_counter()
    words = CatalogWords.from_payloads(payloads, config)
    words_s = time.perf_counter() - t
    t = time.perf_counter()
    index = SuggestIndex(words, concepts)
    index_s = time.perf_counter() - t
    keystrokes = typed_queries(payloads, concepts, args.keystrokes, args.world_seed)
    synonyms = shop_synonyms(words, SYNONYM_GROUPS)
    index.suggest("warm", 8)
    index.suggest("warm", 8, synonyms)
    times, with_synonyms = [], []  # with the shop's synonyms (read per call): alternated, so load hits both alike
    for q in keystrokes:
        for arm, found in (((), times), (synonyms, with_synonyms)):
            t = time.perf_counter()
            index.suggest(q, 8, arm)
            found.append((time.perf_counter() - t) * 1000)
    shopper = [f"{p['category']} under 60" for p in payloads[:200]] + [p["product_id"] for p in payloads[:200]] + \
              [f"{p['attributes']['colour']} {p['category']} not pink" for p in payloads[:200]]
    u_times = []
    for q in shopper:
        t = time.perf_counter()
        understand(q, words, TokenSet(), config)
        u_times.append((time.perf_counter() - t) * 1000)
    figures = {"products": args.products, "names": len(words.names), "index_entries": len(index.entries),
               "catalog_words_s": round(words_s, 2), "index_build_s": round(index_s, 2),
               "suggest": _percentiles(times), "understand": _percentiles(u_times),
               "suggest_with_synonyms": {**_percentiles(with_synonyms), "groups": len(synonyms),
                                         "p95_ratio": round(_percentiles(with_synonyms)["p95_ms"]
                                                            / max(_percentiles(times)["p95_ms"], 1e-9), 3)},
               "examples": {q: [s.text for s in index.suggest(q, 5)] for q in ("dre", "purple sn", "backpak", "new")}}
    out = write_result("suggest", figures, sys.argv[1:] if argv is None else argv, args.out or RESULTS / "suggest.json")
    print(f"{out}: suggest {figures['suggest']}, understand {figures['understand']}, "
          f"index build {figures['index_build_s']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
