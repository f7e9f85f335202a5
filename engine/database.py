"""Database plumbing shared by the job store (web/jobs/) and the concept registry (engine/concepts.py).

Two backends behind one small interface, so each store writes its SQL once:

    db = open_database("var/jobs.sqlite3", None, scope="jobs")                  # a SQLite file (the default)
    db = open_database(path, "postgresql://coinage:pw@db:5432/coinage", scope="jobs")   # COINAGE_DATABASE_URL
    db.create_schema(SCHEMA)        # idempotent, and safe when several processes start at once
    with db.connect() as conn:      # a short connection per call (PostgreSQL: from a per-process pool)
        row = conn.execute("SELECT kind FROM jobs WHERE id=?", (job_id,)).fetchone()   # row["kind"]
    with db.write() as conn:        # a write transaction, committed at the end, rolled back if the block raises
        ...

SQLite: rows as sqlite3.Row, a 30 s busy timeout, WAL journal, write transactions taken up front
(BEGIN IMMEDIATE), so read-then-write sequences are atomic. PostgreSQL (psycopg 3, imported only
when a URL is given): autocommit connections with rows as dicts, from a psycopg_pool pool per
process (made at first use and again after a fork; each connection checked before use); `write()`
is a transaction that first takes the scope's advisory lock (`pg_advisory_xact_lock`), so the writers of one store are
serialised exactly as SQLite serialises them; `write(exclusive=False)` skips that lock for a
statement that locks its own rows (`SELECT ... FOR UPDATE SKIP LOCKED`: JobStore.claim).

The SQL is written once, with `?` placeholders (psycopg gets `%s` and a literal `%` is escaped, so
only `?` must not appear in literals) and rows read by column name (alias aggregates: `SELECT COUNT(*) AS n`). What
genuinely differs is named by `db.dialect`: row-lock clauses, the substring-position function, and
the `{rowid}` token of a schema, which becomes an identity column on PostgreSQL (SQLite's rowid is
implicit). Types are the ones both read alike: TEXT, INTEGER, DOUBLE PRECISION.

`database_errors()` is what a call can raise when the database is busy or unreachable: catch it where
a failure must not stop a loop (the job worker). Failing to reach PostgreSQL raises `DatabaseError`,
whose message names COINAGE_DATABASE_URL.
"""
from __future__ import annotations

import functools
import hashlib
import os
import sqlite3
import sys
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Protocol, Sequence
from urllib.parse import urlsplit, urlunsplit

from engine.errors import CoinageError

URL_VAR = "COINAGE_DATABASE_URL"
URL_SCHEMES = ("postgresql", "postgres")
INSTALL_HINT = "pip install 'coinage[postgres]'"
CONNECT_TIMEOUT_S = 10
POOL_MAX_SIZE = 10  # pooled connections per process and store (PostgreSQL)


class DatabaseError(CoinageError):
    """The database cannot be used: a malformed URL, an unreachable server, a missing driver."""


class Cursor(Protocol):
    rowcount: int

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


class Connection(Protocol):
    def execute(self, sql: str, params: Sequence[Any] = ...) -> Cursor: ...


@dataclass(frozen=True)
class Dialect:
    name: str  # 'sqlite' or 'postgresql'
    # schema text replacing `{rowid}`: an insertion-order column named rowid (implicit in SQLite)
    rowid: str
    # appended to a SELECT inside write(): lock the rows read until the transaction ends
    for_update: str
    # appended to a SELECT inside write(exclusive=False): lock the rows read, skipping rows others hold
    skip_locked: str
    # SQL function (haystack, needle) -> 1-based position of needle, 0 when absent
    strpos: str


SQLITE = Dialect("sqlite", rowid="", for_update="", skip_locked="", strpos="instr")
POSTGRESQL = Dialect("postgresql", rowid="rowid BIGINT GENERATED ALWAYS AS IDENTITY,", for_update=" FOR UPDATE",
                     skip_locked=" FOR UPDATE SKIP LOCKED", strpos="strpos")


def database_errors() -> tuple[type[BaseException], ...]:
    """Exceptions of a failed database call: sqlite3.Error, DatabaseError and, once the driver is loaded,
    psycopg.Error. A function, so that psycopg is imported only by deployments that use it."""
    psycopg = sys.modules.get("psycopg")
    return (sqlite3.Error, DatabaseError) + ((psycopg.Error,) if psycopg is not None else ())


def is_unique_violation(error: BaseException) -> bool:
    """Whether `error` is an INSERT that broke a UNIQUE or PRIMARY KEY constraint (the loser of a race to create
    the same row): sqlite3.IntegrityError 'UNIQUE constraint failed', or psycopg's UniqueViolation."""
    if isinstance(error, sqlite3.IntegrityError):
        return "UNIQUE constraint failed" in str(error)
    psycopg = sys.modules.get("psycopg")
    return psycopg is not None and isinstance(error, psycopg.errors.UniqueViolation)


def check_url(url: str) -> str:
    """`url` if it is a PostgreSQL URL; else a DatabaseError naming the variable and the fix."""
    try:
        parts = urlsplit(url)
        valid = parts.scheme in URL_SCHEMES and bool(parts.hostname or parts.path.strip("/"))
    except ValueError:
        valid = False
    if not valid:
        raise DatabaseError(f"{URL_VAR}={redact(url)!r} is not a PostgreSQL URL; use postgresql://USER:PASSWORD@"
                            "HOST:5432/DATABASE, or leave it unset for the SQLite files under COINAGE_DATA_DIR")
    return url


def redact(url: str) -> str:
    """The URL without its password, for messages and logs."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        host = parts.netloc.rpartition("@")[2]
        return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))
    except ValueError:
        return "<unparsable URL>"


def database_url_from_env(env: Mapping[str, str] | None = None) -> str | None:
    """COINAGE_DATABASE_URL, or None (unset or empty): the SQLite files. Checked where it is used (check_url)."""
    env = os.environ if env is None else env
    return (env.get(URL_VAR) or "").strip() or None


def open_database(path: str | Path, database_url: str | None, scope: str,
                  foreign_keys: bool = False) -> "SqliteDatabase | PostgresDatabase":
    """PostgreSQL at `database_url` when one is given, else the SQLite file `path`.

    `scope` names the store ('jobs', 'registry'): its PostgreSQL writers share one advisory lock.
    `foreign_keys` turns on SQLite's foreign-key enforcement (PostgreSQL always enforces them).
    """
    if database_url:
        return PostgresDatabase(database_url, scope)
    return SqliteDatabase(path, foreign_keys)


class SqliteDatabase:
    dialect = SQLITE
    # the fix when the schema cannot be created
    hint = "set COINAGE_DATA_DIR to a writable directory"

    def __init__(self, path: str | Path, foreign_keys: bool = False):
        self.path = Path(path)
        self.foreign_keys = foreign_keys
        self._anchor: sqlite3.Connection | None = None  # see create_schema

    @property
    def location(self) -> str:
        return str(self.path)

    @contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        try:
            conn.row_factory = sqlite3.Row
            if self.foreign_keys:
                conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA busy_timeout=30000")
            yield conn
        finally:
            conn.close()

    @contextmanager
    def write(self, exclusive: bool = True) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE: SQLite has one writer at a time, so `exclusive` changes nothing here."""
        with self.connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def close(self) -> None:
        """Each call opens and closes its own connection (SQLite opens in microseconds); only the anchor stays."""
        if self._anchor is not None:
            self._anchor.close()
            self._anchor = None

    def create_schema(self, sql: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.connect() as conn:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(sql.replace("{rowid}", self.dialect.rowid))
        # One idle connection held for the object's life: when the last connection to a WAL database closes,
        # SQLite deletes its -wal and -shm files and the next connection must create them again, which fails on a
        # full disk ("disk I/O error") and turned every search into a 500 (issue 27 #8). While one stays open,
        # the files stay and reads keep working on a full disk (tests/reliability/test_full_disk.py).
        if self._anchor is None:
            self._anchor = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
            self._anchor.execute("SELECT count(*) FROM sqlite_master").fetchone()  # opens the -wal and -shm files

    def add_column(self, table: str, column: str) -> None:
        """Add `column` ("name TYPE") to `table` of an older schema unless it is there (idempotent)."""
        with self.write() as conn:
            names = {row["name"] for row in conn.execute(f"PRAGMA table_info({table})").fetchall()}
            if column.split()[0] not in names:
                conn.execute(f"ALTER TABLE {table} ADD COLUMN {column}")


class PostgresDatabase:
    dialect = POSTGRESQL
    hint = f"check {URL_VAR}: its user must be allowed to create tables in that database"

    def __init__(self, url: str, scope: str):
        self.url = check_url(url)
        self.scope = scope
        self._lock = _lock_key(f"coinage:{scope}")
        self._pool: Any = None  # psycopg_pool.ConnectionPool of this process (made at first use, again after a fork)
        self._pool_pid = 0
        self._pool_guard = threading.Lock()

    @property
    def location(self) -> str:
        return redact(self.url)

    @contextmanager
    def connect(self) -> Iterator["_PgConnection"]:
        """A connection from this process's pool (psycopg_pool: checked before use, returned afterwards)."""
        pool = self._connection_pool()
        try:
            conn = pool.getconn(timeout=CONNECT_TIMEOUT_S)
        except _pool_module().PoolTimeout as e:
            raise DatabaseError(f"no connection to the PostgreSQL database {self.location} within "
                                f"{CONNECT_TIMEOUT_S} s ({e}); check {URL_VAR} (postgresql://USER:PASSWORD@HOST:5432/"
                                "DATABASE) and that the server is up and reachable from this host") from e
        try:
            yield _PgConnection(conn)
        finally:
            pool.putconn(conn)

    def close(self) -> None:
        """Close this process's pooled connections (a later call opens a new pool)."""
        with self._pool_guard:
            pool, self._pool = self._pool, None
        if pool is not None and self._pool_pid == os.getpid():
            pool.close()

    def _connection_pool(self):
        with self._pool_guard:
            if self._pool is None or self._pool_pid != os.getpid():  # a forked child never uses its parent's sockets
                psycopg, pools = _driver(), _pool_module()
                # min_size 0: no connection is kept open (or re-opened in the background) for a store at rest
                self._pool = pools.ConnectionPool(
                    self.url, min_size=0, max_size=POOL_MAX_SIZE, open=True, name=f"coinage-{self.scope}",
                    check=pools.ConnectionPool.check_connection, timeout=CONNECT_TIMEOUT_S,
                    kwargs={"autocommit": True, "row_factory": psycopg.rows.dict_row,
                            "connect_timeout": CONNECT_TIMEOUT_S})
                self._pool_pid = os.getpid()
            return self._pool

    @contextmanager
    def write(self, exclusive: bool = True) -> Iterator["_PgConnection"]:
        """A transaction; `exclusive` first takes the scope's advisory lock (writers one at a time, as in SQLite)."""
        with self.connect() as conn, conn.raw.transaction():
            if exclusive:
                conn.execute("SELECT pg_advisory_xact_lock(?)", (self._lock,))
            yield conn

    def create_schema(self, sql: str) -> None:
        """CREATE ... IF NOT EXISTS races between processes on PostgreSQL: one process at a time, under a lock.
        A direct connection (not the pool): an unreachable server's error names its reason at start."""
        raw = self._open()
        try:
            with raw.transaction():
                _PgConnection(raw).execute("SELECT pg_advisory_xact_lock(?)", (_lock_key("coinage:schema"),))
                raw.execute(sql.replace("{rowid}", self.dialect.rowid))
        finally:
            raw.close()

    def add_column(self, table: str, column: str) -> None:
        """Add `column` ("name TYPE") to `table` of an older schema unless it is there (idempotent)."""
        with self.connect() as conn, conn.raw.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(?)", (_lock_key("coinage:schema"),))
            conn.execute(f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {column}")

    def _open(self):
        psycopg = _driver()
        try:
            return psycopg.connect(self.url, autocommit=True, row_factory=psycopg.rows.dict_row,
                                   connect_timeout=CONNECT_TIMEOUT_S)
        except psycopg.Error as e:
            reason = " ".join(str(e).split())  # libpq's message spans lines
            raise DatabaseError(f"cannot connect to the PostgreSQL database {self.location} ({reason}); check "
                                f"{URL_VAR} (postgresql://USER:PASSWORD@HOST:5432/DATABASE) and that the server is "
                                "up and reachable from this host") from e


class _PgConnection:
    """A psycopg connection that takes the stores' `?` placeholders."""

    def __init__(self, raw):
        self.raw = raw

    def execute(self, sql: str, params: Sequence[Any] = ()):
        return self.raw.execute(_pyformat(sql), params)


@functools.lru_cache(maxsize=512)
def _pyformat(sql: str) -> str:
    return sql.replace("%", "%%").replace("?", "%s")


def _lock_key(name: str) -> int:
    """A stable signed 64-bit advisory-lock key for `name`."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


def _pool_module():
    try:
        import psycopg_pool
    except ImportError as e:
        raise DatabaseError(f"{URL_VAR} names a PostgreSQL database, but its connection pool (psycopg-pool) is not "
                            f"installed: {INSTALL_HINT}") from e
    return psycopg_pool


def _driver():
    try:
        import psycopg
        import psycopg.rows  # noqa: F401 - dict_row
    except ImportError as e:
        raise DatabaseError(f"{URL_VAR} names a PostgreSQL database, but its driver (psycopg) is not installed: "
                            f"{INSTALL_HINT}") from e
    return psycopg
