"""Bounded growth: the pruning pass the job worker runs on a schedule (RetentionSettings.every_s).

It deletes finished jobs (preview jobs sooner than the others), the waiter rows of jobs that are
no longer waiting, and preview files nobody wrote for a while; a search whose preview files are gone
queues its preview again (web/search_state.py). Wired in web/resources.py: Resources.make_worker.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from .store import JobStore

if TYPE_CHECKING:
    from engine.query.previews import PreviewCache
    from web.settings import RetentionSettings

log = logging.getLogger(__name__)


def prune(store: JobStore, previews: "PreviewCache | None", config: "RetentionSettings") -> dict[str, int]:
    """One pruning pass; returns what it deleted: {"preview_jobs", "jobs", "waiters", "preview_files"}."""
    out = {"preview_jobs": store.prune(config.finished_previews_s, kinds=("preview",)),
           "jobs": store.prune(config.finished_jobs_s),
           "waiters": store.prune_waiters(),
           "preview_files": previews.prune(config.preview_files_s) if previews is not None else 0}
    if any(out.values()):
        log.info("retention: deleted %s", ", ".join(f"{n} {what.replace('_', ' ')}" for what, n in out.items() if n))
    return out
