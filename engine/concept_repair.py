"""What a process killed during a concept registration leaves behind, found and cleaned at the next start.

`ConceptRegistry.register` inserts the concept's row and writes its images inside one transaction: killed
before the commit, the images stay on disk with no row (an orphan folder under <root>/concepts/); killed after
it, the concept exists but whoever registered it never queued its training (web/concepts_admin.py
reconciles that part, since the job store is the web app's).

Both are looked for only among entries older than a grace period, so a registration in flight in another
process (files written, row not yet committed) is never taken for debris.
"""
from __future__ import annotations

import logging
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path

from .concepts import Concept, ConceptRegistry

log = logging.getLogger(__name__)

# Seconds a registration may take between its first file and its commit (or its training request)
REGISTRATION_GRACE_S = 600.0


def orphan_folders(registry: ConceptRegistry, grace_s: float = REGISTRATION_GRACE_S) -> list[Path]:
    """Concept folders with no concept row, untouched for `grace_s` seconds."""
    known = {c.name for c in registry.list()}
    cutoff = time.time() - grace_s
    return sorted(p for p in registry.concepts_dir.iterdir()
                  if p.is_dir() and not p.is_symlink() and p.name not in known and p.stat().st_mtime < cutoff)


def remove_orphan_folders(registry: ConceptRegistry, grace_s: float = REGISTRATION_GRACE_S) -> list[str]:
    """Delete the orphan folders (see orphan_folders); returns their names."""
    removed = []
    for folder in orphan_folders(registry, grace_s):
        shutil.rmtree(folder, ignore_errors=True)
        log.warning("removed %s: images of a registration that never committed (a process killed mid-way)", folder)
        removed.append(folder.name)
    return removed


def untrained(registry: ConceptRegistry, grace_s: float = REGISTRATION_GRACE_S) -> list[Concept]:
    """Concepts still 'registered' (no training run ever started, no version) for more than `grace_s` seconds."""
    cutoff = datetime.now(timezone.utc).timestamp() - grace_s
    return [c for c in registry.list() if c.status == "registered" and c.active_version is None
            and datetime.fromisoformat(c.created).timestamp() < cutoff and not registry.versions(c.placeholder)]
