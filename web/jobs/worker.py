"""The worker: one thread per lane (a tuple of job kinds) claims jobs from the store and runs them.

Each running job gets a monitor thread that heartbeats under the job's claim and turns the cancel flag,
or the loss of the claim, into the `threading.Event` the job function receives. A lane survives
database errors (it logs them with their text, backs off and continues) and records when it last looped,
so /readyz reports a lane that died or is stuck (`Worker.health`).
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from engine.database import database_errors

from .health_file import remove_health, write_health
from .model import Job, JobCancelled, JobError
from .store import JobStore

log = logging.getLogger(__name__)

#: A job function: (params, progress callback, cancel event) -> JSON-ready result.
#: Return normally when done; raise JobCancelled (or return after noticing `cancel`) when cancelled.
JobFunction = Callable[[dict, Callable[[dict], None], threading.Event], Any]
MAX_BACKOFF_S = 30.0  # longest pause of a lane after consecutive errors


@dataclass
class LaneHealth:
    lane: tuple[str, ...]  # the job kinds the lane serves
    alive: bool  # its thread runs
    seconds_since_beat: float  # since it last looped or heartbeat its running job
    job: str | None  # the id of the job it runs, None when idle
    errors: int  # consecutive failed loops (0 when the last one worked)
    ok: bool  # alive and beating within the stale limit

    def to_json(self) -> dict[str, Any]:
        return {"lane": list(self.lane), "alive": self.alive, "seconds_since_beat": round(self.seconds_since_beat, 1),
                "job": self.job, "errors": self.errors, "ok": self.ok}


class _Lane:
    """What a lane's thread reports about itself (read by health())."""

    def __init__(self, kinds: tuple[str, ...]):
        self.kinds = kinds
        self.thread: threading.Thread | None = None
        self.beat = time.monotonic()
        self.job: str | None = None
        self.errors = 0


class Worker:
    """Runs queued jobs with the functions in `runners` (kind -> JobFunction), one thread per lane.

    The first lane also re-queues jobs of dead workers every stale_after_s / 2 and, with `housekeeping`
    (e.g. web/jobs/retention.py), runs it every `housekeeping_every_s`."""

    def __init__(self, store: JobStore, runners: Mapping[str, JobFunction],
                 lanes: Sequence[Sequence[str]] | None = None, poll_s: float = 0.5, heartbeat_s: float = 1.0,
                 stale_after_s: float = 30.0, max_attempts: int = 3,
                 cancelled_types: tuple[type[BaseException], ...] = (),
                 housekeeping: Callable[[], Any] | None = None, housekeeping_every_s: float = 600.0):
        self.store = store
        self.runners = dict(runners)
        self.lanes = [tuple(lane) for lane in (lanes or [tuple(self.runners)])]
        unknown = sorted({k for lane in self.lanes for k in lane} - set(self.runners))
        if unknown:
            raise JobError(f"worker lanes name job kinds without a runner: {unknown}; runners: {sorted(self.runners)}")
        self.poll_s, self.heartbeat_s = poll_s, heartbeat_s
        self.stale_after_s, self.max_attempts = stale_after_s, max_attempts
        self.cancelled_types = (JobCancelled, *cancelled_types)
        self.housekeeping, self.housekeeping_every_s = housekeeping, housekeeping_every_s
        self.id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self._stop = threading.Event()
        self._lanes = [_Lane(lane) for lane in self.lanes]

    # -- lifecycle

    def start(self) -> "Worker":
        """Recover interrupted jobs (if the database answers), then start one daemon thread per lane."""
        try:
            self.store.recover_stale(self.stale_after_s, self.max_attempts)
        except database_errors() as e:
            log.warning("cannot recover interrupted jobs at start (%s); the first lane retries", e)
        for lane in self._lanes:
            lane.beat = time.monotonic()
            lane.thread = threading.Thread(target=self._loop, args=(lane,), daemon=True,
                                           name=f"coinage-worker-{'+'.join(lane.kinds)}")
            lane.thread.start()
        log.info("job worker %s started: lanes %s", self.id, [list(lane) for lane in self.lanes])
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop taking jobs; running jobs are asked to cancel and given `timeout` seconds to return."""
        self._stop.set()
        for lane in self._lanes:
            if lane.thread is not None:
                lane.thread.join(timeout)
            lane.thread = None

    def request_stop(self) -> None:
        """Ask the lanes to stop (safe from a signal handler); serve_forever() then stops them."""
        self._stop.set()

    @property
    def running(self) -> bool:
        return any(lane.thread is not None and lane.thread.is_alive() for lane in self._lanes)

    def health(self) -> list[LaneHealth]:
        """Each lane: alive, and beating (looped, or heartbeat its job) within stale_after_s."""
        now = time.monotonic()
        out = []
        for lane in self._lanes:
            alive = lane.thread is not None and lane.thread.is_alive()
            age = now - lane.beat
            out.append(LaneHealth(lane.kinds, alive, age, lane.job, lane.errors,
                                  ok=alive and age <= self.stale_after_s))
        return out

    def serve_forever(self, check_every_s: float = 1.0, health_file: Path | None = None) -> bool:
        """Run the lanes until stop() (e.g. from a signal handler) — the `coinage worker` process, which has no
        /readyz: a lane that turns stuck (and one that recovers) is logged here, and with `health_file` every
        lane's health is written there each check for deploy/healthcheck.py (web/jobs/health_file.py).

        A lane whose thread died cannot come back in this process: the others are stopped, the file is left
        saying so, and False is returned (`coinage worker` then exits 1, so its supervisor restarts it).
        True after a requested stop, which removes the file."""
        self.start()
        unhealthy: set[tuple[str, ...]] = set()
        dead: list[LaneHealth] = []
        while not self._stop.is_set():
            health = self.health()
            if health_file is not None:
                write_health(health_file, self.id, health, self.stale_after_s)
            dead = [h for h in health if not h.alive]
            if dead:
                if self._stop.is_set():
                    dead = []  # lanes that ended because a stop was asked meanwhile (a signal) are not dead
                break
            for h in health:
                if not h.ok and h.lane not in unhealthy:
                    unhealthy.add(h.lane)
                    log.error("worker lane %s is stuck: %.0f s since it looped or heartbeat its job (%s), %d errors "
                              "in a row", "+".join(h.lane), h.seconds_since_beat, h.job or "idle", h.errors)
                elif h.ok and h.lane in unhealthy:
                    unhealthy.discard(h.lane)
                    log.warning("worker lane %s is healthy again", "+".join(h.lane))
            self._stop.wait(check_every_s)
        for h in dead:
            log.critical("worker lane %s is dead (its thread ended, job %s); stopping this worker so that its "
                         "supervisor restarts it", "+".join(h.lane), h.job or "none")
        self.stop()
        if health_file is not None and not dead:
            remove_health(health_file)
        return not dead

    # -- running jobs

    def run_once(self, kinds: Sequence[str] | None = None) -> Job | None:
        """Claim and run one job in this thread (tests and scripts); returns it afterwards, or None."""
        job = self.store.claim(self.id, kinds or tuple(self.runners))
        if job is None:
            return None
        self._run(job)
        return self.store.get(job.id)

    def _loop(self, lane: _Lane) -> None:
        last_recovery = last_housekeeping = time.monotonic()
        first = lane is self._lanes[0]
        while not self._stop.is_set():
            lane.beat = time.monotonic()
            try:
                if first and time.monotonic() - last_recovery > self.stale_after_s / 2:
                    last_recovery = time.monotonic()  # jobs of workers that died while this one runs
                    self.store.recover_stale(self.stale_after_s, self.max_attempts)
                if first and self.housekeeping is not None and \
                        time.monotonic() - last_housekeeping > self.housekeeping_every_s:
                    last_housekeeping = time.monotonic()
                    self.housekeeping()
                try:
                    job = self.store.claim(self.id, lane.kinds)
                except database_errors() as e:
                    raise _ClaimFailed(e) from e
                if job is not None:
                    lane.job = job.id
                    try:
                        self._run(job, lane)
                    finally:
                        lane.job = None
                lane.errors = 0
                if job is None:
                    self._stop.wait(self.poll_s)
            except Exception as e:  # noqa: BLE001 - a lane must outlive any error; logged with its text, retried
                lane.errors += 1
                pause = min(MAX_BACKOFF_S, max(self.poll_s, 1.0) * 2 ** (lane.errors - 1))
                what = "cannot claim a job" if isinstance(e, _ClaimFailed) else "error"
                cause = e.__cause__ if isinstance(e, _ClaimFailed) else e
                log.error("worker lane %s: %s (%s: %s); retrying in %.1f s", "+".join(lane.kinds), what,
                          type(cause).__name__, cause, pause)
                self._stop.wait(pause)

    def _run(self, job: Job, lane: _Lane | None = None) -> None:
        """Run a claimed job; every write about it names its claim (job.attempts). A failure to record the end
        (the database is down) leaves the job running: recover_stale queues it again once its heartbeat is stale."""
        cancel = threading.Event()
        done = threading.Event()
        monitor = threading.Thread(target=self._monitor, args=(job, cancel, done, lane), daemon=True,
                                   name=f"coinage-job-{job.id}")
        monitor.start()
        log.info("job %s (%s) started (attempt %d)", job.id, job.kind, job.attempts)
        try:
            try:
                result = self.runners[job.kind](job.params, lambda p: self._progress(job, p, cancel), cancel)
            except self.cancelled_types as e:
                self._stopped(job, str(e) or "cancelled")
            except Exception as e:  # noqa: BLE001 - any failure of a job is recorded on the job, with its text
                log.exception("job %s (%s) failed", job.id, job.kind)
                self._record(job, self.store.fail(job.id, f"{type(e).__name__}: {e}", attempt=job.attempts), "failed")
            else:
                if isinstance(result, dict) and result.get("status") == "cancelled":
                    self._stopped(job, result.get("message") or "cancelled")
                else:
                    self._record(job, self.store.finish(job.id, result, attempt=job.attempts), "done")
        except database_errors() as e:
            log.error("job %s (%s): cannot record its end (%s: %s); it is queued again once its heartbeat is stale",
                      job.id, job.kind, type(e).__name__, e)
        finally:
            done.set()
            monitor.join(self.heartbeat_s + 1)

    @staticmethod
    def _record(job: Job, written: bool, status: str) -> None:
        if written:
            log.info("job %s (%s) %s", job.id, job.kind, status)
        else:
            log.warning("job %s (%s): its claim %d was lost, so this run's outcome (%s) is discarded; the job's "
                        "current owner records its own", job.id, job.kind, job.attempts, status)

    def _stopped(self, job: Job, message: str) -> None:
        """A job that returned early: cancelled by request, or interrupted because this worker is stopping."""
        if self._stop.is_set() and not self.store.cancel_requested(job.id):
            written = self.store.requeue(job.id, "interrupted: its worker was stopped; queued again",
                                         attempt=job.attempts)
            self._record(job, written, "interrupted by shutdown; queued again")
        else:
            self._record(job, self.store.cancelled(job.id, message, attempt=job.attempts), "cancelled")

    def _progress(self, job: Job, progress: dict, cancel: threading.Event) -> None:
        try:
            if not self.store.progress(job.id, progress, attempt=job.attempts):
                cancel.set()  # the claim is lost: another worker owns the job now; stop this run
        except database_errors() as e:  # a busy or unreachable database must not kill the job; the next report lands
            log.warning("job %s: progress not recorded (%s)", job.id, e)

    def _monitor(self, job: Job, cancel: threading.Event, done: threading.Event, lane: _Lane | None) -> None:
        """Heartbeat while the job runs; set `cancel` when the flag is set, the claim is lost or the worker stops."""
        while not done.wait(self.heartbeat_s):
            try:
                if self.store.heartbeat(job.id, attempt=job.attempts):
                    cancel.set()
                if lane is not None:
                    lane.beat = time.monotonic()
            except database_errors() as e:
                log.warning("job %s: heartbeat failed (%s)", job.id, e)
            if self._stop.is_set():
                cancel.set()


class _ClaimFailed(Exception):
    """A claim's database error, told apart in the lane's log line."""
