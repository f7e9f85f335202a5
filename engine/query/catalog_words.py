"""The catalog words of the searched collection (facet values, identifiers, product names), read from the store
once per collection version and shared by query understanding and suggestions.

    source = CatalogSource(store, config)
    words = source.get()          # CatalogWords, or None without a collection
    source.version                # changes when the words were read again (suggestion indexes rebuild on it)

The collection is checked every QueryConfig.catalog_refresh_s seconds: the alias target and the point count
(an index run adds products in place, a reindex moves the alias); only a change re-reads the payloads.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from engine.store import CollectionNotFound, StoreError, StoreUnavailable, VectorStore

from .config import QueryConfig
from .understand import CatalogWords

_BATCH = 1024  # points per retrieve call


class CatalogSource:
    def __init__(self, store: VectorStore | None, config: QueryConfig, clock: Callable[[], float] = time.monotonic):
        self.store = store
        self.config = config
        self._clock = clock
        self._lock = threading.Lock()
        self._checked = -float("inf")
        self._key: tuple[str, int] | None = None
        self._words: CatalogWords | None = None
        self.version = 0  # bumped on every (re)read

    def get(self) -> CatalogWords | None:
        """None when there is no store or no collection; a store that cannot be read keeps the words it had."""
        if self.store is None:
            return None
        with self._lock:
            now = self._clock()
            if now - self._checked < self.config.catalog_refresh_s:
                return self._words
            self._checked = now
            name = self.config.collection
            try:
                target = self.store.get_alias(name) or name
                key = (target, self.store.count(target))
                if key != self._key:
                    self._words = CatalogWords.from_payloads(self._payloads(target), self.config)
                    self._key = key
                    self.version += 1
            except CollectionNotFound:
                self._words, self._key = None, None
            except StoreUnavailable:
                raise  # the search cannot be served either: say so now, not after one more timeout
            except StoreError:
                pass  # a store hiccup: keep serving the words read last (the next check reads again)
            return self._words

    def _payloads(self, collection: str) -> Iterator[dict[str, Any]]:
        ids = self.store.scroll_ids(collection)
        for i in range(0, len(ids), _BATCH):
            for point in self.store.retrieve(collection, ids[i:i + _BATCH]):
                yield point.payload
