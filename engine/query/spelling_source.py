"""The speller of the searched collection, rebuilt only when its vocabulary changes.

    source = SpellingSource(store, config, extra_words=lambda: ["newcomer"])  # e.g. registered concept names
    speller = source.get()   # never waits for a rebuild; the first build at most config.spelling_first_wait_s

`coinage index` rewrites the live collection's vocabulary artifact in place and `reindex` moves the alias; both
must reach the speller without a restart (else a new product's name would be "corrected" into another word). Every
`config.spelling_refresh_s` seconds `get` resolves the alias and reads the artifact's version (one `stat`, or one
small point on the server backend) and the extra words; only when one of them changed is a new speller built, in a
background thread, outside the lock: searches keep the old speller meanwhile and get the new one once it is swapped
in. The first build runs in the background as well: `get` waits for it at most `config.spelling_first_wait_s`, then
returns None (searches run uncorrected; `warming` is true and a log line says so) until it is ready. An old
collection whose vocabulary is still in its metadata is read once per alias target.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable

from engine.spelling import Speller, english_words
from engine.store import CollectionNotFound, StoreError, StoreUnavailable, VectorStore
from engine.vocabulary import read_vocabulary, vocabulary_version

from .config import QueryConfig

log = logging.getLogger(__name__)

Key = tuple[str, "str | None", frozenset]  # (collection, vocabulary version, extra words)


class SpellingSource:
    def __init__(self, store: VectorStore | None, config: QueryConfig, clock: Callable[[], float] = time.monotonic,
                 *, extra_words: Callable[[], Iterable[str]] | None = None):
        """`extra_words`: returns words to know although no catalog row holds them (registered concept names);
        called at each refresh, and a change rebuilds the speller."""
        self.store = store
        self.config = config
        self._clock = clock
        self._extra_words = extra_words
        self._lock = threading.Lock()  # guards the fields below; never held while reading the store or building
        self._checked = -float("inf")
        self._speller: Speller | None = None
        self._key: Key | None = None  # what _speller was built from
        self._building: tuple[Key, threading.Thread] | None = None  # the newest build started, while it runs
        self.builds = 0  # spellers built so far (tests, metrics)
        if store is not None:
            english_words()  # read once per process (0.2 s), here: the first build's wait is for the catalog's words

    def get(self, collection: str | None = None) -> Speller | None:
        """None when the collection has no vocabulary (built before it had one) or does not exist. `collection`:
        the collection a request pinned (its alias resolved once per request); None resolves the alias here."""
        if self.store is None:  # a service used for query vectors only (benchmarks, exports)
            return None
        with self._lock:
            now = self._clock()
            moved = collection is not None and self._key is not None and self._key[0] != collection
            if now - self._checked < self.config.spelling_refresh_s and not moved:
                return self._speller
            self._checked = now
        try:
            key = self._current_key(collection)
        except CollectionNotFound:
            with self._lock:
                self._speller, self._key = None, None
            return None
        except StoreUnavailable:
            raise  # the search cannot be served either: say so now, not after one more timeout per source
        except StoreError as e:
            log.warning("cannot check the spelling vocabulary (%s); keeping the current speller", e)
            return self._speller
        with self._lock:
            if key == self._key or (self._building is not None and self._building[0] == key):
                return self._speller
            first = self._speller is None
            thread = threading.Thread(target=self._build, args=(key,), name="speller-build", daemon=True)
            self._building = (key, thread)
            thread.start()
        if first:  # nothing to serve meanwhile: a small vocabulary is ready within the wait, a large one is not
            thread.join(self.config.spelling_first_wait_s)
            if thread.is_alive():
                log.info("building the speller of collection %r in the background; searches run without typo "
                         "correction until it is ready", key[0])
        return self._speller

    @property
    def warming(self) -> bool:
        """True while there is no speller yet and one is being built (searches run uncorrected meanwhile)."""
        with self._lock:
            return self._speller is None and self._building is not None

    def wait(self, timeout: float | None = None) -> None:
        """Wait for a rebuild in progress (tests, warm-up)."""
        building = self._building
        if building is not None:
            building[1].join(timeout)

    def _current_key(self, collection: str | None = None) -> Key:
        name = self.config.collection
        target = collection or self.store.get_alias(name) or name
        if not self.store.collection_exists(target):
            raise CollectionNotFound(name)
        extra = frozenset(self._extra_words()) if self._extra_words is not None else frozenset()
        return target, vocabulary_version(self.store, target), extra

    def _build(self, key: Key) -> None:
        target, _, extra = key
        try:
            version, vocabulary = read_vocabulary(self.store, target)
            with self._lock:
                previous = self._speller  # its index is updated, not built again
            speller = None if vocabulary is None else Speller(vocabulary, extra_words=extra, previous=previous)
        except (StoreError, ValueError) as e:
            log.warning("cannot build the speller of collection %r (%s); keeping the current one", target, e)
            with self._lock:
                if self._building is not None and self._building[0] == key:
                    self._building = None
            return
        with self._lock:
            if self._building is None or self._building[0] != key:
                return  # a newer build was started meanwhile (its vocabulary is newer): this one is stale
            # the version read with the words: a write between the check and the read is picked up next time
            self._speller, self._key = speller, (target, version, extra)
            self._building = None
            self.builds += 1
