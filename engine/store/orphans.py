"""Collections no alias points at: left by a killed reindex or restore, kept by `--keep-old`, or made by hand.

Searches never reach them, but they hold disk space (a full disk stops the store). `orphan_collections` lists
them; `drop_orphans` drops the ones named, and refuses a collection an alias points at or one that is itself
the live name (a collection made by hand and searched under its own name, e.g. "products"). A complete orphan
left by a killed reindex is adopted by the next reindex (indexer/reindex.py), so none is dropped automatically.

Half-created ones are another matter: a process killed while the embedded store created a collection leaves a
directory without its meta.json (written last), with the engine's preallocated WAL in it (32 MiB), and one
killed while dropping or restoring leaves a `.trash-*` or `.adopt-*` directory. The store cannot open or list
them, so nothing could ever adopt them: `remove_unfinished` deletes them when the store opens, under its
exclusive lock (no other process can be creating one then), never a directory an alias names.
"""
from __future__ import annotations

import logging
import shutil
from collections.abc import Iterable
from pathlib import Path

from engine.diskspace import tree_bytes

from .artifacts import ARTIFACTS
from .base import StoreError, VectorStore

log = logging.getLogger(__name__)
LEFTOVER_PREFIXES = (".trash-", ".adopt-")  # a drop's and a restore's working directories (engine/store/embedded.py)


def orphan_collections(store: VectorStore, live_names: Iterable[str] = ()) -> list[str]:
    """Collections that no alias points at and that are not named in `live_names` (searched directly)."""
    aliased = set(store.list_aliases().values())
    keep = set(live_names) | {ARTIFACTS}  # the server's artifacts (every collection's vocabulary): never an orphan
    return [c for c in store.list_collections() if c not in aliased and c not in keep]


def drop_orphans(store: VectorStore, names: Iterable[str], live_names: Iterable[str] = ()) -> list[str]:
    """Drop the named orphan collections; StoreError (nothing dropped) if any of them is not an orphan."""
    names, live_names = list(names), list(live_names)
    orphans = set(orphan_collections(store, live_names))
    refused = [n for n in names if n not in orphans]
    if refused:
        raise StoreError(f"not dropped: {', '.join(map(repr, refused))} "
                         f"{'is' if len(refused) == 1 else 'are'} not an orphan collection (an alias points at it, "
                         f"it is searched by its own name, or it does not exist); `coinage snapshot orphans` lists "
                         "the ones that may be dropped")
    return [n for n in names if store.drop_collection(n)]


def remove_unfinished(collections_dir: Path, aliased: Iterable[str]) -> list[str]:
    """Delete the embedded store's half-created collection directories (no meta.json) and the leftovers of killed
    drops and restores; returns their names. Call only while holding the store's exclusive lock."""
    keep = set(aliased)
    removed = []
    for path in sorted(collections_dir.iterdir()):
        leftover = path.name.startswith(LEFTOVER_PREFIXES)
        unfinished = not path.name.startswith(".") and not (path / "meta.json").is_file()
        if not path.is_dir() or path.name in keep or not (leftover or unfinished):
            continue
        size = tree_bytes(path)
        shutil.rmtree(path, ignore_errors=True)
        if not path.exists():
            removed.append(path.name)
            log.warning("removed %s (%.1f MiB): %s", path, size / 2**20, "left by a drop or restore that was killed"
                        if leftover else "a collection whose creation was killed before it finished")
        else:
            log.warning("cannot remove the unfinished collection directory %s; delete it by hand", path)
    return removed
