"""The `coinage worker` process's health file: a separate worker has no /readyz, so it writes its lanes' health
here and deploy/healthcheck.py (the container's HEALTHCHECK) reads it.

    path = health_path(data_dir)              # COINAGE_WORKER_HEALTH_FILE, else <data dir>/worker-health/<host>.json
    write_health(path, worker.id, worker.health(), worker.stale_after_s)    # serve_forever, every second
    remove_health(path)                       # on a clean stop: a stopped worker is not healthy

The file is JSON, replaced atomically: {"worker", "pid", "time" (Unix seconds), "stale_after_s", "ok",
"lanes": [LaneHealth.to_json(), ...]}. The check is unhealthy when the file is missing, older than its own
`stale_after_s` (the process is hung or gone), or when a lane is not ok (dead or stuck). The default path is the
same rule in deploy/healthcheck.py, which imports nothing of the app; tests/test_deploy_health.py runs a worker
and the check against each other so the two cannot drift apart.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Sequence

if TYPE_CHECKING:
    from .worker import LaneHealth

log = logging.getLogger(__name__)
ENV = "COINAGE_WORKER_HEALTH_FILE"


def health_path(data_dir: Path, env: Mapping[str, str] | None = None) -> Path:
    """Where this host's worker writes its health: COINAGE_WORKER_HEALTH_FILE, else one file per host name under the
    data folder (a container's host name is its own, so workers sharing the data volume do not collide)."""
    env = os.environ if env is None else env
    return Path(env.get(ENV) or Path(data_dir) / "worker-health" / f"{socket.gethostname()}.json")


def write_health(path: Path, worker_id: str, lanes: Sequence["LaneHealth"], stale_after_s: float) -> None:
    """Replace the file atomically; a failed write (full disk, read-only folder) is logged, never raised: the check
    then sees an old file and reports the worker unhealthy, which is the truth."""
    body = {"worker": worker_id, "pid": os.getpid(), "time": time.time(), "stale_after_s": stale_after_s,
            "ok": all(h.ok for h in lanes), "lanes": [h.to_json() for h in lanes]}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(body))
        os.replace(tmp, path)
    except OSError as e:
        log.warning("cannot write the worker health file %s (%s); the health check will report it stale", path, e)


def remove_health(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError as e:
        log.warning("cannot remove the worker health file %s (%s)", path, e)
