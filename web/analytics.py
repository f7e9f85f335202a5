"""Search analytics off the request path: searches and clicks are queued in memory and written in batches by one
background thread (every `flush_s`), so a search never waits on the database and a database outage loses
analytics only (logged), never a search.

    recorder = Recorder(AnalyticsLog(...), secret=app_secret, settings=MerchSettings())
    search_id = recorder.search(request, response)       # a signed id for the page (its click beacons send it back)
    recorder.click(search_id, product_id, position)      # ValueError: not a search id this app signed
    recorder.close()                                     # flush what is queued (the app's Resources.close)

Search ids are signed (HMAC with the app's secret key), so a click is checked without a database read, on any web
process, also before the search's own batch reached the database; a forged or mistyped id is refused.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import queue
import secrets
import threading
import time
from typing import Any, Callable

from engine.database import database_errors
from engine.merch.analytics import AnalyticsLog, ClickRow, SearchRow
from engine.merch.config import MerchSettings

log = logging.getLogger(__name__)
PRUNE_EVERY_S = 3600.0
ID_BYTES = 8  # random part of a search id; the id is its hex, a dot and 16 hex characters of signature


class Recorder:
    def __init__(self, log_store: AnalyticsLog, secret: str, settings: MerchSettings,
                 clock: Callable[[], float] = time.time):
        self.store = log_store
        self.settings = settings
        self._key = hashlib.sha256(b"coinage-search-id:" + secret.encode()).digest()
        self._clock = clock
        self._queue: queue.Queue = queue.Queue(maxsize=settings.analytics_queue)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._flush_lock = threading.Lock()  # one batch at a time: a flush returns once what was queued is written
        self.dropped = 0  # rows lost: queue full or a failed write

    # ------------------------------------------------------------------ request path (no database)

    def search(self, request: Any, response: Any) -> str:
        """Queue the search (engine.query SearchRequest, SearchResponse); its signed id."""
        search_id = self._sign(secrets.token_hex(ID_BYTES))
        if self.settings.analytics:
            self._put(_search_row(search_id, self._clock(), request, response))
        return search_id

    def click(self, search_id: str, product_id: str, position: int) -> None:
        if not self.valid(search_id):
            raise ValueError(f"{search_id!r} is not a search id this site issued")
        if self.settings.analytics:
            self._put(ClickRow(search_id, self._clock(), product_id, position))

    def valid(self, search_id: Any) -> bool:
        if not isinstance(search_id, str) or search_id.count(".") != 1:
            return False
        random_part, _, _ = search_id.partition(".")
        return hmac.compare_digest(self._sign(random_part).encode(), search_id.encode())

    # ------------------------------------------------------------------ writer thread

    def flush(self) -> int:
        """Write what is queued now (one transaction); the rows written. A failed write is logged and dropped."""
        with self._flush_lock:
            return self._flush()

    def _flush(self) -> int:
        rows = []
        while True:
            try:
                rows.append(self._queue.get_nowait())
            except queue.Empty:
                break
        if not rows:
            return 0
        searches = [r for r in rows if isinstance(r, SearchRow)]
        clicks = [r for r in rows if isinstance(r, ClickRow)]
        try:
            self.store.write(searches, clicks)
        except database_errors() as e:
            self.dropped += len(rows)
            log.warning("search analytics lost: %d rows not written (%s); searches are unaffected", len(rows), e)
            return 0
        return len(rows)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.flush()

    def _put(self, row: Any) -> None:
        self._ensure_thread()
        try:
            self._queue.put_nowait(row)
        except queue.Full:
            self.dropped += 1

    def _ensure_thread(self) -> None:
        if self._thread is not None or self._stop.is_set():
            return
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="analytics-writer", daemon=True)
                self._thread.start()

    def prune(self) -> int:
        """Delete the rows older than the retention (MerchSettings.retention_days); the rows deleted."""
        return self.store.prune(self._clock() - self.settings.retention_days * 86400)

    def _run(self) -> None:
        pruned = -float("inf")
        while not self._stop.wait(self.settings.flush_s):
            self.flush()
            if self._clock() - pruned >= PRUNE_EVERY_S:  # the pruning job: at start, then hourly
                pruned = self._clock()
                try:
                    self.prune()
                except database_errors() as e:
                    log.warning("cannot prune old search analytics (%s); will retry in an hour", e)

    def _sign(self, random_part: str) -> str:
        mac = hmac.new(self._key, random_part.encode(), hashlib.sha256).hexdigest()[:16]
        return f"{random_part}.{mac}"


def _search_row(search_id: str, ts: float, request: Any, response: Any) -> SearchRow:
    filters = {k: v for k, v in (("category", request.category), ("colour", request.colour),
                                 ("min_price", request.min_price), ("max_price", request.max_price)) if v is not None}
    filters.update(request.filters)
    interpretation = {"prompt": response.prompt, "tokens": response.tokens, "retrieval": response.retrieval,
                      "weight": response.weight, "mode": response.mode, "sort": response.sort,
                      "offset": response.offset, "image": request.image is not None}
    shown = response.products or response.results
    return SearchRow(search_id, ts, request.query, interpretation, filters, len(shown),
                     float(response.timings_ms.get("total", 0.0)),
                     response.correction.corrected if response.correction else None,
                     response.tokens[0] if response.tokens else None, list(response.merch))
