"""The job store: jobs in a SQLite file or PostgreSQL tables, shared by every web and worker process.

Every write about a running job names the claim it holds (`attempt`, the job's `attempts` when it was
claimed): a write from a lost claim (its job was re-queued, claimed again or ended) changes nothing and
says so, so a zombie worker's heartbeat, progress or result never wins over the new owner's.
"""
from __future__ import annotations

import json
import logging
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from engine.database import Connection, DatabaseError, database_errors, open_database

from .model import DURATION_BUCKETS, Job, JobError, QueueFull, _job, _jsonable

log = logging.getLogger(__name__)
MAX_WAITERS = 64  # waiter rows kept per job

# {rowid}: insertion order, the tie-break of equal `created` times (engine/database.py)
_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    {rowid}id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    params TEXT NOT NULL,
    status TEXT NOT NULL,
    progress TEXT NOT NULL DEFAULT '{}',
    result TEXT,
    error TEXT,
    dedupe_key TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    interruptions INTEGER NOT NULL DEFAULT 0,
    worker TEXT,
    created DOUBLE PRECISION NOT NULL,
    started DOUBLE PRECISION,
    heartbeat DOUBLE PRECISION,
    finished DOUBLE PRECISION,
    client TEXT
);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs (status, kind, created);
CREATE INDEX IF NOT EXISTS jobs_dedupe ON jobs (dedupe_key, status);
CREATE TABLE IF NOT EXISTS durations (
    kind TEXT NOT NULL,
    le DOUBLE PRECISION NOT NULL,
    count INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (kind, le)
);
CREATE TABLE IF NOT EXISTS job_waiters (
    job_id TEXT NOT NULL,
    waiter TEXT NOT NULL,
    PRIMARY KEY (job_id, waiter)
);
CREATE TABLE IF NOT EXISTS duration_sums (
    kind TEXT PRIMARY KEY,
    count INTEGER NOT NULL DEFAULT 0,
    total DOUBLE PRECISION NOT NULL DEFAULT 0
);
"""


class JobStore:
    """Jobs in one SQLite file, or in PostgreSQL tables with `database_url`; safe to share between threads,
    processes and (PostgreSQL) hosts (see the module docstring)."""

    def __init__(self, path: str | Path, clock: Callable[[], float] = time.time, database_url: str | None = None):
        self.path = Path(path)  # the SQLite file; unused with database_url
        self.clock = clock
        self.db = open_database(self.path, database_url, scope="jobs")
        try:
            self.db.create_schema(_SCHEMA)
            self.db.add_column("jobs", "client TEXT")  # job stores made before per-client queue bounds
        except (OSError, *database_errors()) as e:
            detail = str(e) if isinstance(e, DatabaseError) else f"{self.location}: {e}; {self.db.hint}"
            raise JobError(f"cannot open the job store: {detail}") from e

    @property
    def location(self) -> str:
        """Where the jobs are: the SQLite file, or the PostgreSQL URL without its password."""
        return self.db.location

    # ------------------------------------------------------------------ plumbing

    def _connect(self):
        return self.db.connect()

    def _write(self, exclusive: bool = True):
        """A write transaction, serialised with the store's other writers: read-then-write sequences are atomic."""
        return self.db.write(exclusive)

    # ------------------------------------------------------------------ submitting and reading

    def submit(self, kind: str, params: Mapping[str, Any] | None = None, dedupe_key: str | None = None,
               reuse_done: bool = False, waiter: str | None = None, client: str | None = None,
               max_queued: int | None = None, max_queued_per_client: int | None = None) -> str:
        """Queue a job; returns its id.

        With `dedupe_key`, a queued or running job with the same key is returned instead of a new
        one (and, with `reuse_done`, a finished successful one too), so identical requests share a run.
        With `waiter`, that client is recorded as waiting on the job (see `release`; at most MAX_WAITERS a job).
        A new job is refused with QueueFull when `max_queued` jobs of its kind wait already, or
        `max_queued_per_client` of `client`'s (checked in the same transaction as the insert).
        """
        if not kind or not isinstance(kind, str):
            raise JobError(f"job kind must be a non-empty string, got {kind!r}")
        try:
            blob = json.dumps(dict(params or {}), sort_keys=True)
        except (TypeError, ValueError) as e:
            raise JobError(f"parameters of a {kind!r} job must be JSON-serialisable: {e}") from e
        with self._write() as conn:
            if dedupe_key is not None:
                wanted = ("queued", "running", "done") if reuse_done else ("queued", "running")
                row = conn.execute(
                    f"SELECT id FROM jobs WHERE dedupe_key=? AND kind=? AND status IN ({','.join('?' * len(wanted))}) "
                    "AND cancel_requested=0 ORDER BY created DESC LIMIT 1", (dedupe_key, kind, *wanted)).fetchone()
                if row is not None:
                    _add_waiter(conn, row["id"], waiter)
                    return row["id"]
            self._check_queue(conn, kind, client, max_queued, max_queued_per_client)
            job_id = uuid.uuid4().hex[:16]
            conn.execute("INSERT INTO jobs (id, kind, params, status, dedupe_key, created, client) "
                         "VALUES (?,?,?,?,?,?,?)", (job_id, kind, blob, "queued", dedupe_key, self.clock(), client))
            _add_waiter(conn, job_id, waiter)
        return job_id

    @staticmethod
    def _check_queue(conn: Connection, kind: str, client: str | None, max_queued: int | None,
                     max_queued_per_client: int | None) -> None:
        if max_queued is not None:
            queued = int(conn.execute("SELECT COUNT(*) AS n FROM jobs WHERE kind=? AND status='queued'",
                                      (kind,)).fetchone()["n"])
            if queued >= max_queued:
                raise QueueFull(f"{queued} {kind} jobs are queued already (the limit is {max_queued}); try again "
                                "in a moment")
        if max_queued_per_client is not None and client is not None:
            mine = int(conn.execute("SELECT COUNT(*) AS n FROM jobs WHERE kind=? AND status='queued' AND client=?",
                                    (kind, client)).fetchone()["n"])
            if mine >= max_queued_per_client:
                raise QueueFull(f"you have {mine} {kind} jobs queued already (the limit per client is "
                                f"{max_queued_per_client}); wait for them to finish")

    def wait(self, job_id: str, waiter: str) -> None:
        """Record that `waiter` (a client id) waits on the job: a shared job outlives one waiter's cancel."""
        with self._write() as conn:
            _add_waiter(conn, job_id, waiter)

    def release(self, job_id: str, waiter: str) -> tuple[Job, int]:
        """`waiter` stops waiting on the job; the job is cancelled (as by request_cancel) only when no other
        waiter is left. Returns (the job, how many others still wait); a job nobody was recorded waiting on is
        cancelled."""
        with self._write() as conn:
            conn.execute("DELETE FROM job_waiters WHERE job_id=? AND waiter=?", (job_id, waiter))
            others = int(conn.execute("SELECT COUNT(*) AS n FROM job_waiters WHERE job_id=?",
                                      (job_id,)).fetchone()["n"])
            if others == 0:
                self._cancel(conn, job_id)
            elif conn.execute("SELECT 1 FROM jobs WHERE id=?", (job_id,)).fetchone() is None:
                raise JobError(f"no job {job_id!r} to cancel")
        return self.get(job_id), others

    def get(self, job_id: str) -> Job:
        with self._connect() as conn:
            row = conn.execute("SELECT * FROM jobs WHERE id=?", (str(job_id),)).fetchone()
        if row is None:
            raise JobError(f"no job {job_id!r}; it may have been pruned. List jobs on the admin jobs page "
                           "or GET /api/jobs")
        return _job(row)

    def latest(self, kind: str, dedupe_key: str) -> Job | None:
        """The newest job of `kind` submitted with `dedupe_key`, whatever its status; None if there is none."""
        with self._connect() as conn:
            row = conn.execute("SELECT * FROM jobs WHERE kind=? AND dedupe_key=? ORDER BY created DESC, rowid DESC "
                               "LIMIT 1", (kind, dedupe_key)).fetchone()
        return _job(row) if row is not None else None

    def find(self, job_id: str) -> Job | None:
        try:
            return self.get(job_id)
        except JobError:
            return None

    def list(self, kind: str | Sequence[str] | None = None, status: str | Sequence[str] | None = None,
             limit: int = 50, params_like: str | None = None) -> list[Job]:
        """Jobs, newest first, optionally of some kinds / statuses (and whose params JSON contains a string)."""
        where, args = [], []
        for column, value in (("kind", kind), ("status", status)):
            if value is None:
                continue
            values = [value] if isinstance(value, str) else list(value)
            where.append(f"{column} IN ({','.join('?' * len(values))})")
            args.extend(values)
        if params_like is not None:
            where.append(f"{self.db.dialect.strpos}(params, ?) > 0")
            args.append(params_like)
        sql = "SELECT * FROM jobs" + (f" WHERE {' AND '.join(where)}" if where else "")
        with self._connect() as conn:
            rows = conn.execute(sql + " ORDER BY created DESC, rowid DESC LIMIT ?", (*args, int(limit))).fetchall()
        return [_job(r) for r in rows]

    def count(self, kind: str | None = None, status: str | None = None) -> int:
        where, args = [], []
        if kind is not None:
            where.append("kind=?")
            args.append(kind)
        if status is not None:
            where.append("status=?")
            args.append(status)
        sql = "SELECT COUNT(*) AS n FROM jobs" + (f" WHERE {' AND '.join(where)}" if where else "")
        with self._connect() as conn:
            return int(conn.execute(sql, args).fetchone()["n"])

    def counts(self) -> dict[tuple[str, str], int]:
        """(kind, status) -> number of jobs (for /metrics)."""
        with self._connect() as conn:
            rows = conn.execute("SELECT kind, status, COUNT(*) AS n FROM jobs GROUP BY kind, status").fetchall()
        return {(r["kind"], r["status"]): int(r["n"]) for r in rows}

    # ------------------------------------------------------------------ the worker side

    def claim(self, worker: str, kinds: Sequence[str] | None = None) -> Job | None:
        """Take the oldest queued job (of `kinds`) for `worker`; None when there is none. The job's `attempts`
        names this claim: pass it as `attempt` to every write about the run (heartbeat, progress, finish, ...).

        An idle poll only reads (no write transaction, no lock): the claim itself runs only when a queued row
        exists. Atomic across processes: SQLite takes the write lock first; PostgreSQL locks the row it reads
        and skips rows other claims hold (FOR UPDATE SKIP LOCKED), so claims run side by side.
        """
        kind_sql, args = "", []
        if kinds:
            kind_sql = f" AND kind IN ({','.join('?' * len(kinds))})"
            args = list(kinds)
        oldest = f"SELECT id FROM jobs WHERE status='queued'{kind_sql} ORDER BY created, rowid LIMIT 1"
        with self._connect() as conn:
            if conn.execute(oldest, args).fetchone() is None:
                return None
        now = self.clock()
        with self._write(exclusive=False) as conn:
            row = conn.execute(oldest + self.db.dialect.skip_locked, args).fetchone()
            if row is None:
                return None
            cur = conn.execute("UPDATE jobs SET status='running', worker=?, started=?, heartbeat=?, "
                               "attempts=attempts+1, error=NULL WHERE id=? AND status='queued'",
                               (worker, now, now, row["id"]))
            if cur.rowcount != 1:  # cannot happen: the row is locked; kept as the contract
                return None
        return self.get(row["id"])

    def heartbeat(self, job_id: str, *, attempt: int) -> bool:
        """Record that claim `attempt` of the job is alive; returns whether its runner should stop: cancellation
        was requested, or the claim is lost (the job was re-queued, claimed again or ended without it)."""
        with self._connect() as conn:
            cur = conn.execute("UPDATE jobs SET heartbeat=? WHERE id=? AND status='running' AND attempts=?",
                               (self.clock(), job_id, attempt))
            if cur.rowcount != 1:
                self._lost(job_id, attempt, "heartbeat")
                return True
            row = conn.execute("SELECT cancel_requested FROM jobs WHERE id=?", (job_id,)).fetchone()
        return bool(row and row["cancel_requested"])

    def progress(self, job_id: str, progress: Mapping[str, Any], *, attempt: int) -> bool:
        """Replace the job's progress report (JSON) and heartbeat; False (nothing written) when claim `attempt`
        is lost."""
        blob = json.dumps(dict(progress), default=_jsonable)
        with self._connect() as conn:
            cur = conn.execute("UPDATE jobs SET progress=?, heartbeat=? WHERE id=? AND status='running' AND attempts=?",
                               (blob, self.clock(), job_id, attempt))
        if cur.rowcount != 1:
            self._lost(job_id, attempt, "progress")
            return False
        return True

    def cancel_requested(self, job_id: str) -> bool:
        with self._connect() as conn:
            row = conn.execute("SELECT cancel_requested FROM jobs WHERE id=?", (job_id,)).fetchone()
        return bool(row and row["cancel_requested"])

    def request_cancel(self, job_id: str) -> Job:
        """Ask a job to stop, whoever waits on it (the admin's cancel). A queued job is cancelled at once; a
        running one when its worker sees the flag."""
        with self._write() as conn:
            self._cancel(conn, job_id)
        return self.get(job_id)

    def _cancel(self, conn: Connection, job_id: str) -> None:
        row = conn.execute(f"SELECT status FROM jobs WHERE id=?{self.db.dialect.for_update}", (job_id,)).fetchone()
        if row is None:
            raise JobError(f"no job {job_id!r} to cancel")
        if row["status"] == "queued":
            conn.execute("UPDATE jobs SET status='cancelled', cancel_requested=1, finished=?, "
                         "error='cancelled before it started' WHERE id=?", (self.clock(), job_id))
        elif row["status"] == "running":
            conn.execute("UPDATE jobs SET cancel_requested=1 WHERE id=?", (job_id,))

    def finish(self, job_id: str, result: Any = None, *, attempt: int) -> bool:
        """Mark the run of claim `attempt` done with `result`; False (nothing written) when that claim is lost."""
        return self._end(job_id, "done", attempt, result=result)

    def fail(self, job_id: str, error: str, *, attempt: int) -> bool:
        return self._end(job_id, "failed", attempt, error=error)

    def cancelled(self, job_id: str, message: str = "cancelled", *, attempt: int) -> bool:
        return self._end(job_id, "cancelled", attempt, error=message)

    def _end(self, job_id: str, status: str, attempt: int, result: Any = None, error: str | None = None) -> bool:
        now = self.clock()
        blob = None if result is None else json.dumps(result, default=_jsonable)
        with self._write() as conn:
            row = conn.execute(f"SELECT kind, started, status, attempts FROM jobs WHERE id=?"
                               f"{self.db.dialect.for_update}", (job_id,)).fetchone()
            if row is None:
                raise JobError(f"no job {job_id!r} to mark {status}")
            if row["status"] != "running" or int(row["attempts"]) != attempt:
                self._lost(job_id, attempt, f"marking it {status}")
                return False
            conn.execute("UPDATE jobs SET status=?, result=?, error=?, finished=?, heartbeat=? WHERE id=?",
                         (status, blob, error, now, now, job_id))
            if status == "done" and row["started"] is not None:
                _observe(conn, row["kind"], now - row["started"])
        return True

    def requeue(self, job_id: str, reason: str, *, attempt: int) -> bool:
        """Put the running job of claim `attempt` back in the queue (its worker is shutting down); it runs again
        later. False when that claim is lost."""
        with self._write() as conn:
            cur = conn.execute("UPDATE jobs SET status='queued', worker=NULL, interruptions=interruptions+1, error=? "
                               "WHERE id=? AND status='running' AND attempts=?", (reason, job_id, attempt))
        if cur.rowcount != 1:
            self._lost(job_id, attempt, "re-queueing it")
            return False
        return True

    def _lost(self, job_id: str, attempt: int, what: str) -> None:
        log.warning("job %s: claim %d is lost (the job was re-queued, claimed again or ended); not %s", job_id,
                    attempt, what)

    def recover_stale(self, stale_after_s: float, max_attempts: int = 3) -> list[str]:
        """Re-queue running jobs whose heartbeat is older than `stale_after_s` (their worker died).

        A job already started `max_attempts` times is marked failed instead, so a job that kills
        its worker cannot loop forever. Returns the ids that were re-queued.
        """
        cutoff = self.clock() - stale_after_s
        requeued = []
        with self._write() as conn:
            rows = conn.execute("SELECT id, attempts, cancel_requested FROM jobs WHERE status='running' "
                                f"AND (heartbeat IS NULL OR heartbeat < ?){self.db.dialect.for_update}",
                                (cutoff,)).fetchall()
            for row in rows:
                if row["cancel_requested"]:
                    conn.execute("UPDATE jobs SET status='cancelled', finished=?, interruptions=interruptions+1, "
                                 "error='cancelled; its worker stopped before confirming' WHERE id=?",
                                 (self.clock(), row["id"]))
                elif row["attempts"] >= max_attempts:
                    conn.execute("UPDATE jobs SET status='failed', finished=?, interruptions=interruptions+1, "
                                 "error=? WHERE id=?",
                                 (self.clock(), f"interrupted {row['attempts']} times (its worker stopped without "
                                  "finishing it); check the worker log, then submit it again", row["id"]))
                else:
                    conn.execute("UPDATE jobs SET status='queued', worker=NULL, interruptions=interruptions+1, "
                                 "error='interrupted: its worker stopped; queued again' WHERE id=?", (row["id"],))
                    requeued.append(row["id"])
        if requeued:
            log.warning("re-queued %d interrupted job(s): %s", len(requeued), ", ".join(requeued))
        return requeued

    def prune(self, older_than_s: float, kinds: Sequence[str] | None = None) -> int:
        """Delete finished jobs older than `older_than_s` (of `kinds`); returns how many."""
        cutoff = self.clock() - older_than_s
        kind_sql, args = "", []
        if kinds:
            kind_sql = f" AND kind IN ({','.join('?' * len(kinds))})"
            args = list(kinds)
        with self._write() as conn:
            cur = conn.execute(f"DELETE FROM jobs WHERE status IN ('done','failed','cancelled') AND finished < ?"
                               f"{kind_sql}", (cutoff, *args))
            pruned = cur.rowcount
        self.prune_waiters()
        return pruned

    def prune_waiters(self) -> int:
        """Delete waiter rows of jobs that are no longer queued or running (or gone); returns how many."""
        with self._write() as conn:
            return conn.execute("DELETE FROM job_waiters WHERE job_id NOT IN "
                                "(SELECT id FROM jobs WHERE status IN ('queued','running'))").rowcount

    def durations(self) -> dict[str, dict[str, Any]]:
        """kind -> {"buckets": [(le, cumulative count)], "count": n, "sum": seconds} of successful runs."""
        with self._connect() as conn:
            sums = conn.execute("SELECT kind, count, total FROM duration_sums").fetchall()
            buckets = conn.execute("SELECT kind, le, count FROM durations ORDER BY kind, le").fetchall()
        out = {r["kind"]: {"buckets": [], "count": int(r["count"]), "sum": float(r["total"])} for r in sums}
        for r in buckets:
            out.setdefault(r["kind"], {"buckets": [], "count": 0, "sum": 0.0})["buckets"].append(
                (float(r["le"]), int(r["count"])))
        return out


def _add_waiter(conn: Connection, job_id: str, waiter: str | None) -> None:
    """Record `waiter` on the job, up to MAX_WAITERS rows a job (past it, the job is simply not cancelled by any
    one waiter's release: it has many others)."""
    if waiter is None:
        return
    count = int(conn.execute("SELECT COUNT(*) AS n FROM job_waiters WHERE job_id=?", (job_id,)).fetchone()["n"])
    if count < MAX_WAITERS:
        conn.execute("INSERT INTO job_waiters (job_id, waiter) VALUES (?, ?) ON CONFLICT (job_id, waiter) DO NOTHING",
                     (job_id, waiter))


def _observe(conn: Connection, kind: str, seconds: float) -> None:
    """Add one run time to the kind's histogram (cumulative buckets, as Prometheus exposes them)."""
    for le in DURATION_BUCKETS:
        conn.execute("INSERT INTO durations (kind, le, count) VALUES (?, ?, 0) ON CONFLICT (kind, le) DO NOTHING",
                     (kind, le))
        if seconds <= le:
            conn.execute("UPDATE durations SET count=count+1 WHERE kind=? AND le=?", (kind, le))
    conn.execute("INSERT INTO duration_sums (kind, count, total) VALUES (?, 1, ?) "
                 "ON CONFLICT (kind) DO UPDATE SET count=duration_sums.count+1, "
                 "total=duration_sums.total+excluded.total", (kind, seconds))
