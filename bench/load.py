"""Load: concurrent plain searches over loopback against the app under gunicorn, idle and while a reindex and
a training job run in the same deployment; throughput, p50/p95/p99 latency and errors.

    coinage bench load [--products 400] [--photos 6] [--concurrency 4] [--idle-requests 1000]
                       [--busy-requests 20000] [--max-seconds 300] [--threads 8] [--train-steps 150]
                       [--note TEXT] [--out bench/results/load.json]

The deployment is the one the docs prescribe for the embedded store (docs/web.md): ONE gunicorn worker
process with threads, and the job worker as a thread inside it (COINAGE_WORKER=thread), because the
embedded store opens in one process only (several gunicorn workers, or a separate `coinage worker`,
need a Qdrant server, which this machine does not have; `--workers 2` shows what happens then). The
catalog is the demo world's at 32 px on the `tiny-random` backbone, built and indexed into a temporary
directory first; gunicorn listens on 127.0.0.1 only.

Phases (every request is `GET /api/search?q=...&preview=0`: ranked results, no image generation; the
queries are colour x category x place phrases made distinct by a number, so the text cache never hits):
1. idle: `--idle-requests` searches from `--concurrency` client threads (keep-alive connections);
2. busy: an admin logs in, starts a reindex (POST /api/reindex) and a training run (POST
   /api/concepts/<name>/retrain); searches continue until both jobs have finished (or
   `--busy-requests` / `--max-seconds` run out). Both jobs share the worker's train+reindex lane, so
   they run one after the other; latencies are also split by which job was running.
Target (the issue): zero errors, and p99 while busy under 4x the idle p99.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

ROOT = Path(__file__).resolve().parents[1]

COLOURS = ["red", "blue", "green", "black", "white", "pink", "gold", "grey", "striped", "floral", "yellow", "brown"]
PLACES = ["", "on a beach", "in a city", "at night", "on a brick wall", "in the snow", "in a garden", "on a table"]
CONCEPT = "<loadtest>"


def log(msg: str) -> None:
    print(f"[bench/load {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------- HTTP client


class Client:
    """One keep-alive HTTP/1.1 connection to 127.0.0.1:port (one per client thread); JSON in and out."""

    def __init__(self, port: int, timeout: float = 60.0):
        self.port, self.timeout = port, timeout
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        self.cookies: dict[str, str] = {}

    def request(self, method: str, path: str, body: Any = None, headers: dict | None = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        hdrs = {"Content-Type": "application/json"} if data is not None else {}
        if self.cookies:
            hdrs["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        hdrs.update(headers or {})
        for attempt in (0, 1):  # a keep-alive connection the server closed is reopened once
            try:
                self.conn.request(method, path, body=data, headers=hdrs)
                response = self.conn.getresponse()
                raw = response.read()
                break
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self.conn.close()
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
                if attempt:
                    raise
        for header, value in response.getheaders():
            if header.lower() == "set-cookie":
                name, _, rest = value.partition("=")
                self.cookies[name] = rest.split(";", 1)[0]
        ctype = response.getheader("Content-Type", "")
        return response.status, (json.loads(raw) if ctype.startswith("application/json") and raw else raw)

    def get(self, path: str) -> tuple[int, Any]:
        return self.request("GET", path)

    def close(self) -> None:
        self.conn.close()


def wait_ready(port: int, server: subprocess.Popen, timeout: float, log_file: Path) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if server.poll() is not None:
            log_text = log_file.read_text(errors="replace")
            raise RuntimeError(f"gunicorn exited with {server.returncode} before it was ready:\n{log_text[-3000:]}")
        c = Client(port, timeout=5)
        try:
            if c.get("/readyz")[0] == 200:
                return
        except OSError:
            pass
        finally:
            c.close()
        time.sleep(0.5)
    raise RuntimeError(f"gunicorn on port {port} was not ready after {timeout:.0f}s")


def login(port: int, password: str) -> tuple[Client, str]:
    c = Client(port)
    _, session = c.get("/api/session")
    status, body = c.request("POST", "/api/login", {"user": "admin", "password": password},
                             {"X-CSRF-Token": session["csrf_token"]})
    if status != 200:
        raise RuntimeError(f"admin login failed: {status} {body}")
    return c, body["csrf_token"]


# --------------------------------------------------------------------------- the deployment


def prepare(root: Path, products: int, photos: int) -> Path:
    """The demo catalog at 32 px, indexed with tiny-random into root/store, and one registered concept."""
    from engine.concepts import ConceptRegistry
    from web.testing import build_catalog, png_bytes

    t0 = time.perf_counter()
    catalog = build_catalog(root, products=products, photos=photos, heldout=4)
    ConceptRegistry(root).register(CONCEPT, "dress", [png_bytes(i) for i in range(4)],
                                                attributes=["red", "striped", "old", "bright"], num_vectors=2)
    log(f"catalog of {products * photos} photos built and indexed in {time.perf_counter() - t0:.1f}s")
    return catalog


def start_gunicorn(root: Path, catalog: Path, port: int, workers: int, threads: int, password: str,
                   log_file: Path, env_extra: dict[str, str] | None = None) -> tuple[subprocess.Popen, list[str]]:
    from werkzeug.security import generate_password_hash

    env = {**os.environ, "PYTHONPATH": str(ROOT), "COINAGE_DATA_DIR": str(root), "COINAGE_BACKBONE": "tiny-random",
           "COINAGE_DEVICE": "cpu", "COINAGE_CATALOG": str(catalog), "COINAGE_WORKER": "thread",
           "COINAGE_THREADS": "1", "OMP_NUM_THREADS": "1", "COINAGE_SECRET_KEY": os.urandom(16).hex(),
           "COINAGE_ADMIN_PASSWORD_HASH": generate_password_hash(password),
           # every request comes from 127.0.0.1: a search limit this load never reaches (web/ratelimit.py)
           "COINAGE_RATELIMIT_SEARCH": "1000000 per minute",
           **(env_extra or {})}
    cmd = [sys.executable, "-m", "gunicorn", "--workers", str(workers), "--threads", str(threads),
           "--bind", f"127.0.0.1:{port}", "--timeout", "120", "--graceful-timeout", "20",
           "--control-socket", str(root / "gunicorn.ctl"), "web.wsgi:app"]  # not the shared ~/.gunicorn/gunicorn.ctl
    with open(log_file, "w") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT), cmd


def stop(server: subprocess.Popen) -> None:
    if server.poll() is None:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


# --------------------------------------------------------------------------- load


def queries(seed: int, categories: list[str]) -> list[str]:
    rng = random.Random(seed)
    out = [" ".join(x for x in (c, cat, p) if x) for c in COLOURS for cat in categories for p in PLACES]
    rng.shuffle(out)
    return out


class Recorder:
    """Latencies (seconds) and errors of the search requests, with the time each one finished."""

    def __init__(self):
        self.lock = threading.Lock()
        self.samples: list[tuple[float, float]] = []  # (finished at, seconds)
        self.errors: list[str] = []

    def add(self, finished: float, seconds: float, error: str | None) -> None:
        with self.lock:
            if error is None:
                self.samples.append((finished, seconds))
            else:
                self.errors.append(error)


def run_searches(port: int, texts: list[str], concurrency: int, max_requests: int, deadline: float,
                 stop_event: threading.Event | None = None, first: int = 0) -> tuple[Recorder, float]:
    """Up to max_requests searches; request i asks `texts[i % len] i` (first <= i): every query is distinct."""
    rec = Recorder()
    counter = iter(range(first, first + max_requests))
    lock = threading.Lock()

    def worker() -> None:
        c = Client(port)
        try:
            while time.monotonic() < deadline and not (stop_event is not None and stop_event.is_set()):
                with lock:
                    i = next(counter, None)
                if i is None:
                    return
                path = f"/api/search?q={quote(f'{texts[i % len(texts)]} {i}')}&preview=0&limit=12"
                t0 = time.perf_counter()
                try:
                    status, body = c.get(path)
                    error = None if status == 200 and isinstance(body, dict) and body.get("results") else \
                        f"HTTP {status}: {str(body)[:200]}"
                except OSError as e:
                    error = f"{type(e).__name__}: {e}"
                rec.add(time.monotonic(), time.perf_counter() - t0, error)
        finally:
            c.close()

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return rec, time.perf_counter() - t0


def figures(latencies: list[float], seconds: float, errors: int) -> dict[str, Any]:
    if not latencies:
        return {"requests": 0, "errors": errors}
    qs = statistics.quantiles(latencies, n=100, method="inclusive")
    return {"requests": len(latencies) + errors, "errors": errors,
            "throughput_rps": round(len(latencies) / seconds, 2) if seconds else None,
            "p50_ms": round(1000 * statistics.median(latencies), 1), "p95_ms": round(1000 * qs[94], 1),
            "p99_ms": round(1000 * qs[98], 1), "max_ms": round(1000 * max(latencies), 1)}


class JobWatcher(threading.Thread):
    """Polls the jobs (as the admin) once a second; records when each was first and last seen running."""

    def __init__(self, port: int, client: Client, job_ids: dict[str, str]):
        super().__init__(daemon=True)
        self.port, self.client, self.job_ids = port, client, job_ids
        self.windows: dict[str, list[float | None]] = {k: [None, None] for k in job_ids}
        self.final: dict[str, dict] = {}
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            active = False
            for kind, job_id in self.job_ids.items():
                status, job = self.client.get(f"/api/jobs/{job_id}")
                if status != 200:
                    continue
                now = time.monotonic()
                if job["status"] == "running":
                    window = self.windows[kind]
                    window[0] = window[0] or now
                    window[1] = now
                if job["status"] in ("queued", "running"):
                    active = True
                else:
                    self.final[kind] = {"status": job["status"], "seconds": job.get("seconds"),
                                        "error": job.get("error"), "attempts": job.get("attempts")}
            if not active:
                self.done.set()
                return
            time.sleep(1.0)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Prepare, serve, measure; everything is written under a temporary directory removed at the end."""
    root = Path(tempfile.mkdtemp(prefix="coinage-load-"))
    try:
        if args.analytics_ab:
            from bench.load_analytics import run_ab

            return run_ab(args, root)
        return _run(args, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _run(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    password = os.urandom(8).hex()
    catalog = prepare(root, args.products, args.photos)
    categories = sorted({json.loads(line)["category"] for line in catalog.read_text().splitlines()})
    texts = queries(0, categories)
    port = free_port()
    server, cmd = start_gunicorn(root, catalog, port, args.workers, args.threads, password, root / "gunicorn.log")
    started = time.monotonic()
    try:
        wait_ready(port, server, args.max_seconds, root / "gunicorn.log")
        log(f"gunicorn ready on 127.0.0.1:{port} after {time.monotonic() - started:.1f}s")
        run_searches(port, texts, args.concurrency, 100, time.monotonic() + 120, first=10**7)  # warm-up (ONNX session)
        deadline = time.monotonic() + args.max_seconds  # the measurement's bound (start-up not counted)
        idle, idle_s = run_searches(port, texts, args.concurrency, args.idle_requests, deadline)
        log(f"idle: {len(idle.samples)} ok, {len(idle.errors)} errors in {idle_s:.1f}s")

        admin, token = login(port, password)
        status, body = admin.request("POST", "/api/reindex", None, {"X-CSRF-Token": token})
        assert status in (200, 202), (status, body)
        reindex_id = body["job"]["id"]
        status, body = admin.request("POST", f"/api/concepts/{CONCEPT[1:-1]}/retrain", {"steps": args.train_steps},
                                     {"X-CSRF-Token": token})
        assert status == 202, (status, body)
        watcher = JobWatcher(port, admin, {"reindex": reindex_id, "train": body["job"]["id"]})
        watcher.start()
        busy, busy_s = run_searches(port, texts, args.concurrency, args.busy_requests, deadline,
                                    stop_event=watcher.done, first=10**6)
        watcher.done.set()
        watcher.join(timeout=5)
        admin.close()
        log(f"busy: {len(busy.samples)} ok, {len(busy.errors)} errors in {busy_s:.1f}s; jobs {watcher.final}")
    finally:
        stop(server)
    gunicorn_log = (root / "gunicorn.log").read_text(errors="replace")

    idle_fig = figures([s for _, s in idle.samples], idle_s, len(idle.errors))
    busy_fig = figures([s for _, s in busy.samples], busy_s, len(busy.errors))
    by_job = {}
    for kind, (first, last) in watcher.windows.items():
        if first is not None:
            lat = [s for t, s in busy.samples if first <= t <= last + 1.0]
            by_job[kind] = {"window_s": round(last - first, 1), **figures(lat, max(last - first, 1e-9), 0)}
    ratio = round(busy_fig["p99_ms"] / idle_fig["p99_ms"], 2) if idle_fig.get("p99_ms") and busy_fig.get("p99_ms") else None
    return {
        "note": args.note,
        "deployment": {"server": " ".join(shlex.quote(c) for c in cmd[1:]), "workers": args.workers,
                       "threads": args.threads, "job_worker": "thread in the gunicorn worker (COINAGE_WORKER=thread)",
                       "store": "embedded (one process; a Qdrant server is not available on this machine)",
                       "backbone": "tiny-random", "catalog_photos": args.products * args.photos,
                       "client_concurrency": args.concurrency, "request": "GET /api/search?q=...&preview=0&limit=12",
                       "train_steps": args.train_steps},
        "idle": idle_fig, "busy": busy_fig, "busy_by_job": by_job, "jobs": watcher.final,
        "p99_busy_over_idle": ratio,
        "target": {"errors": 0, "p99_busy_over_idle_max": 4.0,
                   "met": bool(ratio is not None and ratio < 4.0 and not idle.errors and not busy.errors
                               and all(j.get("status") == "done" for j in watcher.final.values())
                               and set(watcher.final) == {"reindex", "train"})},
        "error_samples": (idle.errors + busy.errors)[:5],
        "gunicorn_log_tail": gunicorn_log.splitlines()[-8:],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="coinage bench load", description=__doc__.split("\n\n")[0])
    p.add_argument("--products", type=int, default=400)
    p.add_argument("--photos", type=int, default=6)
    p.add_argument("--concurrency", type=int, default=4, help="client threads sending searches")
    p.add_argument("--idle-requests", type=int, default=1000)
    p.add_argument("--busy-requests", type=int, default=20_000, help="upper bound on searches while the jobs run")
    p.add_argument("--max-seconds", type=float, default=300.0,
                   help="upper bound on the start-up wait, and separately on the measurement (seconds)")
    p.add_argument("--workers", type=int, default=1, help="gunicorn worker processes (embedded store: 1)")
    p.add_argument("--threads", type=int, default=8, help="gunicorn threads per worker")
    p.add_argument("--train-steps", type=int, default=150)
    p.add_argument("--note", default="")
    p.add_argument("--out", type=Path, default=None, help="result file (default bench/results/load.json)")
    p.add_argument("--analytics-ab", action="store_true", help="instead: idle searches with search analytics off "
                   "and on, alternating (bench/load_analytics.py; result bench/results/load-analytics.json)")
    p.add_argument("--ab-rounds", type=int, default=2, help="with --analytics-ab: off/on rounds")
    args = p.parse_args(argv)
    result = run(args)
    from bench import common

    if args.analytics_ab:
        path = common.write_result("load", result, sys.argv[1:] if argv is None else argv,
                                   args.out or common.RESULTS / "load-analytics.json")
        print(json.dumps({k: result[k] for k in ("analytics_off", "analytics_on", "p95_on_over_off",
                                                 "searches_recorded", "target")}, indent=2))
        log(f"wrote {path}")
        return 0 if result["target"]["met"] else 1

    # --out elsewhere (tests): the committed bench/results/load.json is left alone
    path = common.write_result("load", result, sys.argv[1:] if argv is None else argv, args.out)
    print(json.dumps({k: result[k] for k in ("idle", "busy", "busy_by_job", "jobs", "p99_busy_over_idle", "target")},
                     indent=2))
    log(f"wrote {path}")
    return 0 if result["target"]["met"] else 1


if __name__ == "__main__":
    sys.exit(main())
