"""SQLite plumbing shared by the concept registry (engine/concepts.py) and the job store (engine/jobs.py).

One short connection per call, so processes and threads share a database file safely; rows as sqlite3.Row;
a 30 s busy timeout; write transactions taken up front (BEGIN IMMEDIATE), so read-then-write sequences are atomic.
"""
from __future__ import annotations

import sqlite3
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


@contextmanager
def connect(path: str | Path, foreign_keys: bool = False) -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(path, timeout=30.0, isolation_level=None)
    try:
        conn.row_factory = sqlite3.Row
        if foreign_keys:
            conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA busy_timeout=30000")
        yield conn
    finally:
        conn.close()


@contextmanager
def write(path: str | Path, foreign_keys: bool = False) -> Iterator[sqlite3.Connection]:
    """A write transaction: committed when the block ends, rolled back if it raises."""
    with connect(path, foreign_keys) as conn:
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
