"""Long jobs (training, reindex, previews) in a job store, and the worker that runs them.

The store is a SQLite file (WAL mode), or PostgreSQL tables when given a URL (COINAGE_DATABASE_URL),
with one short connection per call (engine/database.py), so any number of web processes (gunicorn
workers) and worker processes share it, on one host (SQLite) or several (PostgreSQL):

    jobs = JobStore("var/jobs.sqlite3")                 # or JobStore(path, database_url="postgresql://...")
    job_id = jobs.submit("train", {"placeholder": "<aurora>"})
    job = jobs.claim("worker-1", kinds=("train",))     # atomic: each queued job goes to one worker
    jobs.progress(job.id, {"step": 3, "total": 100})    # also a heartbeat
    jobs.request_cancel(job_id)                          # the worker sees the flag and sets its Event
    jobs.finish(job.id, {"version": "v0001"})            # or fail(job.id, "error text") / cancelled(job.id)

Statuses: queued -> running -> done | failed | cancelled. A running job whose heartbeat went
stale (its worker was killed or the host restarted) is re-queued by `recover_stale` (counted in
`interruptions`); jobs must therefore be safe to run again: training resumes from its
checkpoints, a reindex adopts the collection it was building, a preview is recomputed.

`Worker` polls the store in one thread per lane (a tuple of job kinds), so a short preview never
waits behind an hour of training. Each running job gets a monitor thread that heartbeats and
turns the cancel flag into the `threading.Event` the job function receives. The same class runs
inside the web process (dev, demo) and as `coinage worker` (production).
"""
from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from engine.database import Connection, DatabaseError, database_errors, open_database
from engine.errors import CoinageError

log = logging.getLogger(__name__)

STATUSES = ("queued", "running", "done", "failed", "cancelled")
FINISHED = ("done", "failed", "cancelled")
#: Buckets (seconds) of the duration histograms the store keeps per job kind (shared by all processes).
DURATION_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0, 7200.0)

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
    finished DOUBLE PRECISION
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


class JobError(CoinageError):
    """A job-store problem: unknown job id, bad parameters, a transition that is not allowed."""


class JobCancelled(Exception):
    """A job function may raise this when it stops because its cancel event was set."""


@dataclass
class Job:
    id: str
    kind: str  # 'train', 'reindex', 'preview', ...
    params: dict[str, Any]  # what the job function receives (JSON)
    status: str  # one of STATUSES
    progress: dict[str, Any] = field(default_factory=dict)  # latest progress report (JSON)
    result: Any = None  # what the job function returned (JSON), when done
    error: str | None = None  # why it failed (or was cancelled / interrupted)
    dedupe_key: str | None = None  # jobs with the same key share one run (see submit)
    cancel_requested: bool = False
    attempts: int = 0  # runs started (claims)
    interruptions: int = 0  # runs lost to a dead worker and re-queued
    worker: str | None = None  # id of the worker running it
    created: float = 0.0  # unix times
    started: float | None = None
    heartbeat: float | None = None
    finished: float | None = None

    @property
    def finished_ok(self) -> bool:
        return self.status == "done"

    @property
    def active(self) -> bool:
        return self.status in ("queued", "running")

    @property
    def seconds(self) -> float | None:
        """Run time so far (running) or in total (finished); None while queued."""
        if self.started is None:
            return None
        return (self.finished or time.time()) - self.started

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "params": self.params, "status": self.status,
                "progress": self.progress, "result": self.result, "error": self.error,
                "cancel_requested": self.cancel_requested, "attempts": self.attempts,
                "interruptions": self.interruptions, "created": self.created, "started": self.started,
                "heartbeat": self.heartbeat, "finished": self.finished,
                "seconds": None if self.seconds is None else round(self.seconds, 3)}


class JobStore:
    """Jobs in one SQLite file, or in PostgreSQL tables with `database_url`; safe to share between threads,
    processes and (PostgreSQL) hosts (see the module docstring)."""

    def __init__(self, path: str | Path, clock: Callable[[], float] = time.time, database_url: str | None = None):
        self.path = Path(path)  # the SQLite file; unused with database_url
        self.clock = clock
        self.db = open_database(self.path, database_url, scope="jobs")
        try:
            self.db.create_schema(_SCHEMA)
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
               reuse_done: bool = False, waiter: str | None = None) -> str:
        """Queue a job; returns its id.

        With `dedupe_key`, a queued or running job with the same key is returned instead of a new
        one (and, with `reuse_done`, a finished successful one too), so identical requests share a run.
        With `waiter`, that client is recorded as waiting on the job (see `release`).
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
            job_id = uuid.uuid4().hex[:16]
            conn.execute("INSERT INTO jobs (id, kind, params, status, dedupe_key, created) VALUES (?,?,?,?,?,?)",
                         (job_id, kind, blob, "queued", dedupe_key, self.clock()))
            _add_waiter(conn, job_id, waiter)
        return job_id

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
        """Take the oldest queued job (of `kinds`) for `worker`; None when there is none.

        Atomic across processes: SQLite takes the write lock first; PostgreSQL locks the row it reads and
        skips rows other claims hold (FOR UPDATE SKIP LOCKED), so claims run side by side.
        """
        now = self.clock()
        kind_sql, args = "", []
        if kinds:
            kind_sql = f" AND kind IN ({','.join('?' * len(kinds))})"
            args = list(kinds)
        with self._write(exclusive=False) as conn:
            row = conn.execute(f"SELECT id FROM jobs WHERE status='queued'{kind_sql} ORDER BY created, rowid LIMIT 1"
                               f"{self.db.dialect.skip_locked}", args).fetchone()
            if row is None:
                return None
            cur = conn.execute("UPDATE jobs SET status='running', worker=?, started=?, heartbeat=?, "
                               "attempts=attempts+1, error=NULL WHERE id=? AND status='queued'",
                               (worker, now, now, row["id"]))
            if cur.rowcount != 1:  # cannot happen: the row is locked; kept as the contract
                return None
        return self.get(row["id"])

    def heartbeat(self, job_id: str) -> bool:
        """Record that the job's worker is alive; returns whether cancellation was requested."""
        with self._connect() as conn:
            conn.execute("UPDATE jobs SET heartbeat=? WHERE id=? AND status='running'", (self.clock(), job_id))
            row = conn.execute("SELECT cancel_requested FROM jobs WHERE id=?", (job_id,)).fetchone()
        return bool(row and row["cancel_requested"])

    def progress(self, job_id: str, progress: Mapping[str, Any]) -> None:
        """Replace the job's progress report (JSON) and heartbeat."""
        blob = json.dumps(dict(progress), default=_jsonable)
        with self._connect() as conn:
            conn.execute("UPDATE jobs SET progress=?, heartbeat=? WHERE id=? AND status='running'",
                         (blob, self.clock(), job_id))

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

    def finish(self, job_id: str, result: Any = None) -> None:
        self._end(job_id, "done", result=result)

    def fail(self, job_id: str, error: str) -> None:
        self._end(job_id, "failed", error=error)

    def cancelled(self, job_id: str, message: str = "cancelled") -> None:
        self._end(job_id, "cancelled", error=message)

    def _end(self, job_id: str, status: str, result: Any = None, error: str | None = None) -> None:
        now = self.clock()
        blob = None if result is None else json.dumps(result, default=_jsonable)
        with self._write() as conn:
            row = conn.execute(f"SELECT kind, started, status FROM jobs WHERE id=?{self.db.dialect.for_update}",
                               (job_id,)).fetchone()
            if row is None:
                raise JobError(f"no job {job_id!r} to mark {status}")
            if row["status"] != "running":
                log.warning("job %s is %s, not running; not marking it %s", job_id, row["status"], status)
                return
            conn.execute("UPDATE jobs SET status=?, result=?, error=?, finished=?, heartbeat=? WHERE id=?",
                         (status, blob, error, now, now, job_id))
            if status == "done" and row["started"] is not None:
                _observe(conn, row["kind"], now - row["started"])

    def requeue(self, job_id: str, reason: str) -> None:
        """Put a running job back in the queue (its worker is shutting down); it runs again later."""
        with self._write() as conn:
            conn.execute("UPDATE jobs SET status='queued', worker=NULL, interruptions=interruptions+1, error=? "
                         "WHERE id=? AND status='running'", (reason, job_id))

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
            conn.execute("DELETE FROM job_waiters WHERE job_id NOT IN (SELECT id FROM jobs)")
        return pruned

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
    if waiter is not None:
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


def _jsonable(value: Any) -> Any:
    if hasattr(value, "to_json"):
        return value.to_json()
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item"):  # numpy / torch scalars
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def _job(row: Any) -> Job:
    return Job(id=row["id"], kind=row["kind"], params=json.loads(row["params"]), status=row["status"],
               progress=json.loads(row["progress"] or "{}"),
               result=json.loads(row["result"]) if row["result"] is not None else None, error=row["error"],
               dedupe_key=row["dedupe_key"], cancel_requested=bool(row["cancel_requested"]),
               attempts=int(row["attempts"]), interruptions=int(row["interruptions"]), worker=row["worker"],
               created=row["created"], started=row["started"], heartbeat=row["heartbeat"], finished=row["finished"])


# ---------------------------------------------------------------------------- the worker

#: A job function: (params, progress callback, cancel event) -> JSON-ready result.
#: Return normally when done; raise JobCancelled (or return after noticing `cancel`) when cancelled.
JobFunction = Callable[[dict, Callable[[dict], None], threading.Event], Any]


class Worker:
    """Runs queued jobs with the functions in `runners` (kind -> JobFunction), one thread per lane."""

    def __init__(self, store: JobStore, runners: Mapping[str, JobFunction],
                 lanes: Sequence[Sequence[str]] | None = None, poll_s: float = 0.5, heartbeat_s: float = 1.0,
                 stale_after_s: float = 30.0, max_attempts: int = 3,
                 cancelled_types: tuple[type[BaseException], ...] = ()):
        self.store = store
        self.runners = dict(runners)
        self.lanes = [tuple(lane) for lane in (lanes or [tuple(self.runners)])]
        unknown = sorted({k for lane in self.lanes for k in lane} - set(self.runners))
        if unknown:
            raise JobError(f"worker lanes name job kinds without a runner: {unknown}; runners: {sorted(self.runners)}")
        self.poll_s, self.heartbeat_s = poll_s, heartbeat_s
        self.stale_after_s, self.max_attempts = stale_after_s, max_attempts
        self.cancelled_types = (JobCancelled, *cancelled_types)
        self.id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    # -- lifecycle

    def start(self) -> "Worker":
        """Recover interrupted jobs, then start one daemon thread per lane (the first also re-checks for
        interrupted jobs every stale_after_s / 2, for workers that die while this one runs)."""
        self.store.recover_stale(self.stale_after_s, self.max_attempts)
        for i, lane in enumerate(self.lanes):
            t = threading.Thread(target=self._loop, args=(lane,), name=f"coinage-worker-{'+'.join(lane)}", daemon=True)
            t.start()
            self._threads.append(t)
        log.info("job worker %s started: lanes %s", self.id, [list(lane) for lane in self.lanes])
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop taking jobs; running jobs are asked to cancel and given `timeout` seconds to return."""
        self._stop.set()
        for t in self._threads:
            t.join(timeout)
        self._threads = []

    def request_stop(self) -> None:
        """Ask the lanes to stop (safe from a signal handler); serve_forever() then stops them."""
        self._stop.set()

    @property
    def running(self) -> bool:
        return any(t.is_alive() for t in self._threads)

    def serve_forever(self) -> None:
        """Run the lanes until stop() (e.g. from a signal handler) — the `coinage worker` process."""
        self.start()
        while not self._stop.wait(1.0):
            pass
        self.stop()

    # -- running jobs

    def run_once(self, kinds: Sequence[str] | None = None) -> Job | None:
        """Claim and run one job in this thread (tests and scripts); returns it afterwards, or None."""
        job = self.store.claim(self.id, kinds or tuple(self.runners))
        if job is None:
            return None
        self._run(job)
        return self.store.get(job.id)

    def _loop(self, lane: tuple[str, ...]) -> None:
        last_recovery = time.monotonic()
        while not self._stop.is_set():
            if lane == self.lanes[0] and time.monotonic() - last_recovery > self.stale_after_s / 2:
                last_recovery = time.monotonic()  # jobs of workers that died while this one runs
                try:
                    self.store.recover_stale(self.stale_after_s, self.max_attempts)
                except database_errors() as e:
                    log.warning("cannot recover interrupted jobs (%s); retrying later", e)
            try:
                job = self.store.claim(self.id, lane)
            except database_errors() as e:
                log.error("worker lane %s: cannot claim a job (%s); retrying", lane, e)
                self._stop.wait(max(self.poll_s, 1.0))
                continue
            if job is None:
                self._stop.wait(self.poll_s)
                continue
            self._run(job)

    def _run(self, job: Job) -> None:
        cancel = threading.Event()
        done = threading.Event()
        monitor = threading.Thread(target=self._monitor, args=(job.id, cancel, done), daemon=True,
                                   name=f"coinage-job-{job.id}")
        monitor.start()
        log.info("job %s (%s) started", job.id, job.kind)
        try:
            result = self.runners[job.kind](job.params, lambda p: self._progress(job.id, p), cancel)
        except self.cancelled_types as e:
            self._stopped(job, str(e) or "cancelled")
        except Exception as e:  # noqa: BLE001 - any failure of a job is recorded on the job, with its text
            log.exception("job %s (%s) failed", job.id, job.kind)
            self.store.fail(job.id, f"{type(e).__name__}: {e}")
        else:
            if isinstance(result, dict) and result.get("status") == "cancelled":
                self._stopped(job, result.get("message") or "cancelled")
            else:
                self.store.finish(job.id, result)
                log.info("job %s (%s) done", job.id, job.kind)
        finally:
            done.set()
            monitor.join(self.heartbeat_s + 1)

    def _stopped(self, job: Job, message: str) -> None:
        """A job that returned early: cancelled by request, or interrupted because this worker is stopping."""
        if self._stop.is_set() and not self.store.cancel_requested(job.id):
            self.store.requeue(job.id, "interrupted: its worker was stopped; queued again")
            log.info("job %s (%s) interrupted by shutdown; queued again", job.id, job.kind)
        else:
            self.store.cancelled(job.id, message)
            log.info("job %s (%s) cancelled", job.id, job.kind)

    def _progress(self, job_id: str, progress: dict) -> None:
        try:
            self.store.progress(job_id, progress)
        except database_errors() as e:  # a busy or unreachable database must not kill the job; the next report lands
            log.warning("job %s: progress not recorded (%s)", job_id, e)

    def _monitor(self, job_id: str, cancel: threading.Event, done: threading.Event) -> None:
        """Heartbeat while the job runs; set `cancel` when the flag is set or the worker stops."""
        while not done.wait(self.heartbeat_s):
            try:
                if self.store.heartbeat(job_id):
                    cancel.set()
            except database_errors() as e:
                log.warning("job %s: heartbeat failed (%s)", job_id, e)
            if self._stop.is_set():
                cancel.set()
