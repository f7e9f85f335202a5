"""Container health checks (Docker HEALTHCHECK): exit 0 when healthy, 1 with the reason otherwise.

    python /app/deploy/healthcheck.py web      GET http://127.0.0.1:8000/healthz answers 200
    python /app/deploy/healthcheck.py worker   the job store answers a read: the PostgreSQL database of
                                               COINAGE_DATABASE_URL, else <COINAGE_DATA_DIR>/jobs.sqlite3
                                               on the shared volume

Standard library only (plus the PostgreSQL driver when COINAGE_DATABASE_URL is set), and no import
of the app: a check must be cheap (it runs every 30 s) and must not load models. A worker that dies
makes its container exit (and restart); jobs it was running are queued again by the next worker once
their heartbeat is stale (web/jobs/).
"""
from __future__ import annotations

import os
import sqlite3
import sys
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


def check_worker(data_dir: str | None = None, database_url: str | None = None) -> str | None:
    url = database_url or os.environ.get("COINAGE_DATABASE_URL")
    if url:
        return _check_postgres(url)
    path = Path(data_dir or os.environ.get("COINAGE_DATA_DIR") or "var") / "jobs.sqlite3"
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
