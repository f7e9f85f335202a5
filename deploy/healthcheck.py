"""Container health checks (Docker HEALTHCHECK): exit 0 when healthy, 1 with the reason otherwise.

    python /app/deploy/healthcheck.py web      GET http://127.0.0.1:8000/healthz answers 200
    python /app/deploy/healthcheck.py worker   every lane of this host's `coinage worker` is alive and beating:
                                               its health file (COINAGE_WORKER_HEALTH_FILE, else
                                               <COINAGE_DATA_DIR>/worker-health/<host name>.json, written each
                                               second by the worker: web/jobs/health_file.py) is fresh and says
                                               so; and the job store answers a read: the PostgreSQL database of
                                               COINAGE_DATABASE_URL, else <COINAGE_DATA_DIR>/jobs.sqlite3

Standard library only (plus the PostgreSQL driver when COINAGE_DATABASE_URL is set), and no import
of the app: a check must be cheap (it runs every 30 s) and must not load models. A worker that dies
makes its container exit (and restart), and so does one whose lane thread died (`coinage worker` exits 1);
a stuck lane or a hung process keeps running, and only this check sees it. Jobs it was running are
queued again by the next worker once their heartbeat is stale (web/jobs/).
"""
from __future__ import annotations

import json
import os
import socket
import sqlite3
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path


def check_web(url: str = "http://127.0.0.1:8000/healthz", timeout: float = 4.0) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            if response.status != 200:
                return f"{url} answered {response.status}"
    except (urllib.error.URLError, OSError) as e:
        return f"{url} did not answer: {e}"
    return None


def check_worker(data_dir: str | None = None, database_url: str | None = None,
                 health_file: str | None = None) -> str | None:
    data = Path(data_dir or os.environ.get("COINAGE_DATA_DIR") or "var")
    problem = check_lanes(Path(health_file or os.environ.get("COINAGE_WORKER_HEALTH_FILE")
                               or data / "worker-health" / f"{socket.gethostname()}.json"))
    if problem:
        return problem
    url = database_url or os.environ.get("COINAGE_DATABASE_URL")
    if url:
        return _check_postgres(url)
    path = data / "jobs.sqlite3"
    if not path.is_file():
        return f"no job store at {path}: is the data volume mounted and COINAGE_DATA_DIR set?"
    try:
        conn = sqlite3.connect(path, timeout=5.0)  # the file exists: nothing is created
        try:
            conn.execute("SELECT count(*) FROM jobs").fetchone()
        finally:
            conn.close()
    except sqlite3.Error as e:
        return f"the job store {path} cannot be read: {e}"
    return None


def check_lanes(path: Path, now: float | None = None) -> str | None:
    """The worker's health file (web/jobs/health_file.py): present, fresh, and every lane ok."""
    try:
        health = json.loads(path.read_text())
        age = (time.time() if now is None else now) - float(health["time"])
        stale_after_s, lanes = float(health["stale_after_s"]), list(health["lanes"])
    except FileNotFoundError:
        return (f"no worker health file at {path}: is `coinage worker` running on this host (it writes the file "
                "every second), and do it and this check see the same COINAGE_DATA_DIR or COINAGE_WORKER_HEALTH_FILE?")
    except (OSError, ValueError, KeyError, TypeError) as e:
        return f"the worker health file {path} cannot be read ({type(e).__name__}: {e})"
    if age > stale_after_s:
        return (f"the worker health file {path} was last written {age:.0f} s ago (limit {stale_after_s:.0f} s): "
                "the worker process is hung or gone")
    bad = [lane for lane in lanes if not lane.get("ok")]
    if bad:
        return "; ".join(f"worker lane {'+'.join(lane['lane'])} is {'stuck' if lane.get('alive') else 'dead'} "
                         f"({lane.get('seconds_since_beat')} s since it last beat, job {lane.get('job') or 'none'})"
                         for lane in bad)
    return None


def _check_postgres(url: str) -> str | None:
    """The URL is never printed: it holds the database password."""
    try:
        import psycopg
    except ImportError:
        return "COINAGE_DATABASE_URL is set but the PostgreSQL driver is missing: pip install 'coinage[postgres]'"
    try:
        with psycopg.connect(url, connect_timeout=5) as conn:
            conn.execute("SELECT count(*) FROM jobs").fetchone()
    except psycopg.Error as e:
        return f"the job store database (COINAGE_DATABASE_URL) cannot be read: {e}"
    return None


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args not in (["web"], ["worker"]):
        print("usage: healthcheck.py web|worker", file=sys.stderr)
        return 2
    problem = check_web() if args == ["web"] else check_worker()
    if problem:
        print(f"unhealthy: {problem}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
