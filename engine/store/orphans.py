"""Collections no alias points at: left by a killed reindex or restore, kept by `--keep-old`, or made by hand.

Searches never reach them, but they hold disk space (a full disk stops the store). `orphan_collections` lists
them; `drop_orphans` drops the ones named, and refuses a collection an alias points at or one that is itself
the live name (a collection made by hand and searched under its own name, e.g. "products").
"""
from __future__ import annotations

from collections.abc import Iterable

from .artifacts import ARTIFACTS
from .base import StoreError, VectorStore


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
