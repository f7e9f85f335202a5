"""What a job is: its record, its statuses and the errors of the job system (web/jobs/__init__.py has the overview)."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.errors import CoinageError

STATUSES = ("queued", "running", "done", "failed", "cancelled")
FINISHED = ("done", "failed", "cancelled")
#: Buckets (seconds) of the duration histograms the store keeps per job kind (shared by all processes).
DURATION_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0, 7200.0)


class JobError(CoinageError):
    """A job-store problem: unknown job id, bad parameters, a transition that is not allowed."""


class QueueFull(JobError):
    """A new job would pass a queue bound (all clients', or one client's, queued jobs of its kind)."""


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
    client: str | None = None  # who asked for it (a client address), for per-client queue bounds

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
               created=row["created"], started=row["started"], heartbeat=row["heartbeat"], finished=row["finished"],
               client=row["client"])
