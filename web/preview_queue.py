"""Finding or queueing a search's preview job without keeping the shopper waiting on the job store.

    ticket = res.previews.ensure(identity, waiter, client, allow_new)   # at most preview_submit_timeout_s
    ticket.job          # the preview job to show (queued, running, done, or failed a moment ago), or None
    ticket.reason       # why there is none: the queue is full, this client's share or rate is spent, the store is slow

The job-store calls run on a small pool of submitter threads with a bounded backlog; the search waits
for them at most LimitSettings.preview_submit_timeout_s, then renders its results without a preview
(a stalled database, a held SQLite write lock). A submit that outlives its wait still finishes in the
background, so the next search finds the job. Past the backlog, searches do not even queue a submit.

Bounds on what a client can make the workers do (issue 27 #3): a failed preview is shown as failed for
LimitSettings.failed_preview_reuse_s before a new job may try again (a query that fails at once no longer
adds a row per request); a new job counts against the client's rate (RateLimitSettings.previews), the
queue's size (max_queued_previews) and the client's share of it (max_queued_previews_per_client).
"""
from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any, Callable

from engine.database import database_errors
from web.jobs import Job, JobStore, QueueFull
from web.settings import LimitSettings

log = logging.getLogger(__name__)

KIND = "preview"
SUBMITTERS = 2  # submitter threads per process
BACKLOG = 16  # submits in flight or waiting per process; past it a search skips its preview at once
SLOW = "the preview queue is slow to answer; the results are ready, search again in a moment for a preview"
RATE = "you asked for many new previews in a short time; the results are ready, search again in a minute"


@dataclass
class PreviewTicket:
    job: Job | None  # the preview job to show; None: no preview this time (see reason)
    reason: str = ""


class PreviewQueue:
    def __init__(self, jobs: JobStore, limits: LimitSettings, preview_png: Callable[[str], bytes | None],
                 clock: Callable[[], float] = time.time):
        """`preview_png(key)`: a preview file by key, or None (the query service's); a done job whose files are
        gone (pruned) is run again."""
        self.jobs, self.limits, self.preview_png, self.clock = jobs, limits, preview_png, clock
        self._pool = ThreadPoolExecutor(max_workers=SUBMITTERS, thread_name_prefix="coinage-preview-submit")
        self._slots = threading.BoundedSemaphore(BACKLOG)

    def ensure(self, identity: Any, waiter: str | None, client: str | None,
               allow_new: Callable[[str | None], bool] = lambda client: True) -> PreviewTicket:
        """The preview job of `identity` (engine.query PreviewJob: key and params), found or queued, within
        preview_submit_timeout_s. `waiter` is recorded as waiting on it; `allow_new(client)` counts a new job
        against the client's rate and says whether it may have one."""
        if not self._slots.acquire(blocking=False):
            return PreviewTicket(None, SLOW)
        try:
            future = self._pool.submit(self._released, identity, waiter, client, allow_new)
        except RuntimeError:  # shut down (the app is closing)
            self._slots.release()
            return PreviewTicket(None, SLOW)
        try:
            return future.result(timeout=self.limits.preview_submit_timeout_s)
        except FutureTimeout:
            log.warning("preview submit for %s took over %.1f s (job store slow); the page rendered without it",
                        identity.key[:12], self.limits.preview_submit_timeout_s)
            return PreviewTicket(None, SLOW)
        except database_errors() as e:
            log.error("cannot find or queue a preview (%s: %s); the page rendered without it", type(e).__name__, e)
            return PreviewTicket(None, "the preview queue is unavailable; the results are ready")

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _released(self, *args) -> PreviewTicket:
        try:
            return self._ensure(*args)
        finally:
            self._slots.release()

    def _ensure(self, identity: Any, waiter: str | None, client: str | None,
                allow_new: Callable[[str | None], bool]) -> PreviewTicket:
        job = self.jobs.latest(KIND, identity.key)
        if job is not None and self._reusable(job):
            if job.active and waiter is not None:
                self.jobs.wait(job.id, waiter)  # this shopper shares the job: another's cancel does not stop it
            return PreviewTicket(job)
        if not allow_new(client):
            return PreviewTicket(None, RATE)
        try:
            job_id = self.jobs.submit(KIND, identity.params, dedupe_key=identity.key, waiter=waiter, client=client,
                                      max_queued=self.limits.max_queued_previews,
                                      max_queued_per_client=self.limits.max_queued_previews_per_client)
        except QueueFull as e:
            return PreviewTicket(None, f"the preview generator is busy ({e}); the results are ready")
        return PreviewTicket(self.jobs.get(job_id))

    def _reusable(self, job: Job) -> bool:
        if job.active:
            return not job.cancel_requested
        if job.status == "done":
            result = job.result or {}
            keys = [(result.get("preview") or {}).get("key")]
            keys += [score.get("preview_key") for score in result.get("scores") or []]
            return all(self.preview_png(k) is not None for k in keys if k)
        if job.status == "failed":  # shown as failed for a while, not run again for every request
            return job.finished is not None and self.clock() - job.finished < self.limits.failed_preview_reuse_s
        return False
