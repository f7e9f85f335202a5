"""The catalog words of the searched collection (facet values, identifiers, product names), read from the store
once per collection version and shared by query understanding and suggestions.

    source = CatalogSource(store, config)
    words = source.get()            # CatalogWords, or None without a collection; never waits for a re-read
    words = source.get("shop-v2")   # of the collection a request pinned (its alias resolved once per request)
    source.version                  # changes when the words were read again (suggestion indexes rebuild on it)

The collection is checked every QueryConfig.catalog_refresh_s seconds: the alias target and the point count
(an index run adds products in place, a reindex moves the alias); only a change re-reads the payloads. The
re-read scrolls every payload (seconds at 100k products), so it runs in a background thread outside the lock,
as engine/query/spelling_source.py builds its speller: searches keep the words read last meanwhile and get the
new ones once they are swapped in. Only the very first read (nothing to serve yet) is waited for.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from engine.store import CollectionNotFound, StoreError, StoreUnavailable, VectorStore

from .config import QueryConfig
from .understand import CatalogWords

log = logging.getLogger(__name__)

_BATCH = 1024  # points per retrieve call
Key = tuple[str, int]  # (collection, point count) the words were read from


class CatalogSource:
    def __init__(self, store: VectorStore | None, config: QueryConfig, clock: Callable[[], float] = time.monotonic):
        self.store = store
        self.config = config
        self._clock = clock
        self._lock = threading.Lock()  # guards the fields below; never held while reading the store
        self._checked = -float("inf")
        self._key: Key | None = None
        self._words: CatalogWords | None = None
        self._building: tuple[Key, threading.Thread] | None = None
        self.version = 0  # bumped on every (re)read

    def get(self, collection: str | None = None) -> CatalogWords | None:
        """The words of `collection` (a request's pinned collection; None: resolve the configured alias now).
        None when there is no store or no collection; a store that cannot be read keeps the words it had."""
        if self.store is None:
            return None
        with self._lock:
            now = self._clock()
            moved = collection is not None and self._key is not None and self._key[0] != collection
            if now - self._checked < self.config.catalog_refresh_s and not moved:
                return self._words
            self._checked = now
        try:
            target = collection or self.store.get_alias(self.config.collection) or self.config.collection
            key = (target, self.store.count(target))
        except CollectionNotFound:
            with self._lock:
                self._words, self._key = None, None
            return None
        except StoreUnavailable:
            raise  # the search cannot be served either: say so now, not after one more timeout
        except StoreError as e:
            log.warning("cannot check the catalog words (%s); serving the words read last", e)
            return self._words
        with self._lock:
            if key == self._key or (self._building is not None and self._building[0] == key):
                return self._words
            if self._key is not None:  # words to serve meanwhile: re-read in the background
                thread = threading.Thread(target=self._read, args=(key,), name="catalog-words", daemon=True)
                self._building = (key, thread)
                thread.start()
                return self._words
        self._read(key)  # the first read: nothing to serve meanwhile
        return self._words

    def wait(self, timeout: float | None = None) -> None:
        """Wait for a re-read in progress (tests, warm-up)."""
        building = self._building
        if building is not None:
            building[1].join(timeout)

    def _read(self, key: Key) -> None:
        try:
            words = CatalogWords.from_payloads(self._payloads(key[0]), self.config)
        except CollectionNotFound:
            words = None
        except StoreError as e:  # StoreUnavailable too: the next check reads again
            log.warning("cannot read the catalog words of collection %r (%s); keeping the words read last",
                        key[0], e)
            with self._lock:
                self._building = None
            return
        with self._lock:
            self._words, self._key = words, (key if words is not None else None)
            self._building = None
            self.version += 1

    def _payloads(self, collection: str) -> Iterator[dict[str, Any]]:
        ids = self.store.scroll_ids(collection)
        for i in range(0, len(ids), _BATCH):
            for point in self.store.retrieve(collection, ids[i:i + _BATCH]):
                yield point.payload
