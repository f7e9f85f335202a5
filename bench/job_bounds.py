"""What anonymous traffic costs the job store, and what a stalled job store costs a search (issue 27 #3, #4).

    python -m bench.job_bounds [--requests 1000] [--stalled 5] [--out bench/results/job_bounds.json]

In-process (Flask's test client) on the tiny demo catalog (tiny-random backbone, 24 products at 32 px),
built into a temporary directory; no worker runs but the one this script drives. Two measurements:

1. rows: `--requests` cookie-less GET /search?q=<one query> (each a new client, as a script without a
   cookie jar), whose preview job fails at once (the worker here runs a preview function that raises, as a
   seed beyond its range did); after each request the worker runs what is queued. Reported: rows added to
   `jobs` and `job_waiters`.
2. stalled: `--stalled` searches for distinct text queries (each needs a new preview job) while another
   connection holds the SQLite job store's write lock (BEGIN EXCLUSIVE: a long write, a stuck transaction,
   another process's crash mid-write); then the same number with the lock free. Reported: p50/p95/max
   seconds per search and the status codes.

Runs on any commit that has web.testing (so the same script measures before and after a change).
"""
from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench.common import header


def _count(db: Path, table: str) -> int:
    with sqlite3.connect(db) as conn:
        return conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]


def _quantiles(seconds: list[float]) -> dict[str, float]:
    ordered = sorted(seconds)
    p95 = ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]
    return {"n": len(ordered), "p50_s": round(statistics.median(ordered), 3), "p95_s": round(p95, 3),
            "max_s": round(ordered[-1], 3)}


def rows_added(app, requests: int) -> dict[str, int]:
    from web.jobs import Worker

    res = app.extensions["coinage"]

    def boom(params, progress, cancel):
        raise ValueError("seed out of range")

    worker = Worker(res.jobs, {"preview": boom})
    jobs0, waiters0 = _count(res.settings.jobs_db, "jobs"), _count(res.settings.jobs_db, "job_waiters")
    codes: dict[int, int] = {}
    t0 = time.perf_counter()
    for _ in range(requests):
        code = app.test_client().get("/search?q=red+dress+broken", headers={"HX-Request": "true"}).status_code
        codes[code] = codes.get(code, 0) + 1
        while worker.run_once(["preview"]) is not None:
            pass
    return {"requests": requests, "seconds": round(time.perf_counter() - t0, 1), "status_codes": codes,
            "jobs_rows_added": _count(res.settings.jobs_db, "jobs") - jobs0,
            "waiter_rows_added": _count(res.settings.jobs_db, "job_waiters") - waiters0}


def stalled_searches(app, n: int, lock: bool) -> dict:
    res = app.extensions["coinage"]
    holder = sqlite3.connect(res.settings.jobs_db, isolation_level=None)
    if lock:
        holder.execute("BEGIN EXCLUSIVE")
    seconds, codes = [], {}
    try:
        client = app.test_client()
        for i in range(n):
            t0 = time.perf_counter()
            code = client.get(f"/search?q=blue+lamp+{i}+{'stalled' if lock else 'free'}",
                              headers={"HX-Request": "true"}).status_code
            seconds.append(time.perf_counter() - t0)
            codes[code] = codes.get(code, 0) + 1
            print(f"  search {i + 1}/{n} ({'store locked' if lock else 'store free'}): {seconds[-1]:.2f} s, {code}",
                  file=sys.stderr, flush=True)
    finally:
        if lock:
            holder.execute("ROLLBACK")
        holder.close()
    return {**_quantiles(seconds), "status_codes": codes}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.job_bounds", description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1000, help="cookie-less requests for the rows count")
    parser.add_argument("--stalled", type=int, default=5, help="searches with the job store locked (and free)")
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    args = parser.parse_args(argv)

    import torch

    from web import create_app
    from web.testing import build_catalog, tiny_settings

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="coinage-job-bounds-", ignore_cleanup_errors=True) as tmp:
        root = Path(tmp)
        build_catalog(root)
        app = create_app(tiny_settings(root))
        try:
            out = {"rows": rows_added(app, args.requests),
                   "search_store_free": stalled_searches(app, args.stalled, lock=False),
                   "search_store_locked": stalled_searches(app, args.stalled, lock=True)}
        finally:
            app.extensions["coinage"].close()
    out = {**header("job_bounds", sys.argv[1:] if argv is None else argv), **out}
    text = json.dumps(out, indent=1)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
