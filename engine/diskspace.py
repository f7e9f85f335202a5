"""Free disk space, checked before the writes that need it, so a full disk is a message and not a crash.

The embedded store's engine preallocates its write-ahead log in 32 MiB segments and maps files into memory; on a
full disk it dies with SIGBUS (exit 135), no message, while creating a collection or mid-ingest, and a web
server running a reindex dies with it. So the indexer asks first (`check_free`): before it creates a
collection, before a reindex builds one as large as the live one, and before each batch it writes. A refusal is
a DiskSpaceError naming the directory, the free and the needed bytes, and the fix.

Writes that cannot be checked first (a row in a SQLite or PostgreSQL table) fail when the disk fills up;
`is_disk_full` tells those errors apart, so the web app answers 507 `disk_full` with the fix instead of a 500.
"""
from __future__ import annotations

import errno
import os
import shutil
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from engine.errors import CoinageError


class DiskSpaceError(CoinageError):
    """Not enough free space for a write; nothing was written."""


@dataclass(frozen=True)
class DiskNeeds:
    """Free space the embedded store needs, generously estimated."""

    wal_segment_bytes: int = 32 << 20  # the engine preallocates its WAL in segments of this size
    per_point_bytes: int = 16 << 10  # one point on disk: vector, int8 copy, payload, sparse vector, graph links

    def new_collection(self) -> int:
        return 2 * self.wal_segment_bytes  # a WAL segment plus room for the first segments and indexes

    def batch(self, points: int) -> int:
        return self.wal_segment_bytes + points * self.per_point_bytes


NEEDS = DiskNeeds()


def check_free(directory: str | Path, needed: int, what: str) -> None:
    """DiskSpaceError unless the file system holding `directory` (or its nearest existing parent) has `needed`
    bytes free."""
    where = Path(directory).absolute()
    while not where.exists() and where != where.parent:
        where = where.parent
    free = shutil.disk_usage(where).free
    if free < needed:
        raise DiskSpaceError(
            f"{what} needs about {_mib(needed)} free in {where}, which has {_mib(free)} free; nothing was written. "
            "Free some space there (drop old collections: `coinage snapshot orphans --drop`; old rejects files "
            "under var/indexer) or move the store to a larger disk (COINAGE_STORE_PATH), then run again")


def tree_bytes(path: str | Path) -> int:
    """Bytes of the files under `path` (0 if it does not exist); links are not followed."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:  # removed meanwhile
                continue
    return total


def _mib(n: int) -> str:
    return f"{n / 2**20:,.1f} MiB"


#: errno values of a full disk (no space; over a quota)
_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}
_SQLITE_FULL = 13  # SQLITE_FULL: "database or disk is full"
_PG_DISK_FULL = "53100"  # PostgreSQL's disk_full SQLSTATE


def is_disk_full(error: BaseException) -> bool:
    """Whether `error`, or one it was raised from, says a disk is full: a DiskSpaceError, an OSError with ENOSPC or
    EDQUOT, SQLite's SQLITE_FULL, PostgreSQL's disk_full (53100)."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, DiskSpaceError):
            return True
        if isinstance(current, OSError) and current.errno in _FULL_ERRNOS:
            return True
        if isinstance(current, sqlite3.OperationalError) and (getattr(current, "sqlite_errorcode", None) == _SQLITE_FULL
                                                              or "database or disk is full" in str(current)):
            return True
        if getattr(current, "sqlstate", None) == _PG_DISK_FULL:
            return True
        current = current.__cause__ or current.__context__
    return False
