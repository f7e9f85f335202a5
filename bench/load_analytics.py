"""Search latency with search analytics on and off, in one run (`coinage bench load --analytics-ab`).

The same deployment as bench/load.py (one gunicorn worker with threads, tiny-random, the demo catalog), started
alternately with COINAGE_ANALYTICS=0 and =1 for `--ab-rounds` rounds (off, on, off, on, ...), each measuring
`--idle-requests` distinct searches from `--concurrency` client threads after a warm-up. Alternating spreads the
machine's drift over both sides. The rows written with analytics on are counted from the database afterwards (the
writer thread batches them off the request path). Target (issue #28): p95 with analytics within 5% of without.
"""
from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

from bench.load import figures, free_port, log, prepare, queries, run_searches, start_gunicorn, stop, wait_ready

TARGET = 1.05  # p95 on / p95 off at most


def run_ab(args, root: Path) -> dict[str, Any]:
    catalog = prepare(root, args.products, args.photos)
    categories = sorted({json.loads(line)["category"] for line in catalog.read_text().splitlines()})
    texts = queries(0, categories)
    samples: dict[str, list[float]] = {"off": [], "on": []}
    seconds = {"off": 0.0, "on": 0.0}
    errors: dict[str, list[str]] = {"off": [], "on": []}
    first = 0
    for round_ in range(args.ab_rounds):
        for mode in ("off", "on"):
            port = free_port()
            server, _cmd = start_gunicorn(root, catalog, port, args.workers, args.threads, os.urandom(8).hex(),
                                          root / f"gunicorn-{mode}.log",
                                          {"COINAGE_ANALYTICS": "1" if mode == "on" else "0"})
            try:
                wait_ready(port, server, args.max_seconds, root / f"gunicorn-{mode}.log")
                run_searches(port, texts, args.concurrency, 100, time.monotonic() + 120, first=10**7)  # warm-up
                rec, took = run_searches(port, texts, args.concurrency, args.idle_requests,
                                         time.monotonic() + args.max_seconds, first=first)
            finally:
                stop(server)  # flushes the analytics queue on exit
            first += args.idle_requests
            samples[mode] += [s for _, s in rec.samples]
            seconds[mode] += took
            errors[mode] += rec.errors
            log(f"round {round_ + 1} analytics {mode}: {len(rec.samples)} ok, {len(rec.errors)} errors in {took:.1f}s")
    off, on = (figures(samples[m], seconds[m], len(errors[m])) for m in ("off", "on"))
    ratio = round(on["p95_ms"] / off["p95_ms"], 3) if off.get("p95_ms") and on.get("p95_ms") else None
    with sqlite3.connect(root / "concepts" / "registry.sqlite3") as conn:
        written = conn.execute("SELECT COUNT(*) FROM search_log").fetchone()[0]
    return {"note": args.note, "rounds": args.ab_rounds, "analytics_off": off, "analytics_on": on,
            "p95_on_over_off": ratio, "searches_recorded": written,
            "target": {"p95_on_over_off_max": TARGET, "met": bool(ratio is not None and ratio <= TARGET
                                                                  and not errors["off"] and not errors["on"])},
            "deployment": {"workers": args.workers, "threads": args.threads, "client_concurrency": args.concurrency,
                           "catalog_photos": args.products * args.photos, "backbone": "tiny-random",
                           "request": "GET /api/search?q=...&preview=0&limit=12 (every query distinct)"},
            "error_samples": (errors["off"] + errors["on"])[:5]}
