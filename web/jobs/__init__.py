"""Long jobs (training, reindex, previews) in a job store, and the worker that runs them.

The store is a SQLite file (WAL mode), or PostgreSQL tables when given a URL (COINAGE_DATABASE_URL;
engine/database.py), so any number of web processes (gunicorn workers) and worker processes share it,
on one host (SQLite) or several (PostgreSQL):

    jobs = JobStore("var/jobs.sqlite3")                 # or JobStore(path, database_url="postgresql://...")
    job_id = jobs.submit("train", {"placeholder": "<aurora>"})
    job = jobs.claim("worker-1", kinds=("train",))     # atomic: each queued job goes to one worker
    jobs.progress(job.id, {"step": 3, "total": 100}, attempt=job.attempts)   # also a heartbeat
    jobs.request_cancel(job_id)                          # the worker sees the flag and sets its Event
    jobs.finish(job.id, {"version": "v0001"}, attempt=job.attempts)   # or fail(...) / cancelled(...)

Statuses: queued -> running -> done | failed | cancelled. A running job whose heartbeat went
stale (its worker was killed, the host restarted, the database was unreachable) is re-queued by
`recover_stale` (counted in `interruptions`); jobs must therefore be safe to run again: training
resumes from its checkpoints, a reindex adopts the collection it was building, a preview is
recomputed. Every write about a running job names its claim (`attempt`), so the old worker of a
re-queued job (a zombie) can no longer heartbeat, report or finish it: its writes are refused and
its runner is told to stop.

Modules: model.py (the Job record, statuses, errors), store.py (JobStore), worker.py (Worker, one
thread per lane), retention.py (the pruning pass the worker runs on a schedule).
"""
from .model import DURATION_BUCKETS, FINISHED, STATUSES, Job, JobCancelled, JobError, QueueFull
from .store import JobStore
from .worker import JobFunction, LaneHealth, Worker

__all__ = ["DURATION_BUCKETS", "FINISHED", "STATUSES", "Job", "JobCancelled", "JobError", "JobFunction", "JobStore",
           "LaneHealth", "QueueFull", "Worker"]
