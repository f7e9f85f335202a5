"""What the query service reads: the current synonyms and rules, re-read when the store's version changed.

    merch = MerchSource(store, refresh_s=1.0)
    service.merch = merch                     # engine/query/service.py consults it when set
    merch.expand("blue cup")                  # Expansion("blue cup mug", [the synonym])
    merch.rules_for("cup", ["<aurora>"])      # the rules live now for that query
    merch.stage(service, request, placeholders, vector, lexical)   # the rules stage of one search (or None)

One `SELECT version` at most every `refresh_s` seconds per process; the rows themselves only when another process
(or this one) changed them, so a change made on any web process reaches every other within `refresh_s`, with no
restart and no reindex. A database that cannot be read keeps the last rules and synonyms served (logged).
"""
from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timezone
from typing import Any, Callable, Sequence

from engine.database import database_errors

from .concept_products import ConceptProducts
from .rules import Rule
from .stage import RulesStage, stage_for
from .store import MerchStore
from .synonyms import Expansion, Synonym, expand

log = logging.getLogger(__name__)


class MerchSource:
    def __init__(self, store: MerchStore, refresh_s: float = 1.0, clock: Callable[[], float] = time.monotonic,
                 now: Callable[[], datetime] = lambda: datetime.now(timezone.utc)):
        self.store = store
        self.refresh_s = refresh_s
        self._clock = clock
        self._now = now
        self._lock = threading.Lock()
        self._checked = -float("inf")
        self._version: int | None = None
        self._synonyms: list[Synonym] = []
        self._rules: list[Rule] = []
        self.concepts = ConceptProducts()  # the products of the concepts rules filter by, cached per version

    def current(self) -> tuple[list[Synonym], list[Rule]]:
        with self._lock:
            now = self._clock()
            if now - self._checked >= self.refresh_s:
                self._checked = now
                try:
                    version = self.store.version()
                    if version != self._version:
                        self._synonyms, self._rules = self.store.synonyms(), self.store.rules()
                        self._version = version
                except database_errors() as e:
                    log.warning("cannot re-read the synonyms and rules (%s); serving the last ones read", e)
            return self._synonyms, self._rules

    def invalidate(self) -> None:
        """Check the version on the next call, not after refresh_s (tests; a process that just wrote)."""
        with self._lock:
            self._checked = -float("inf")

    def expand(self, text: str) -> Expansion:
        synonyms, _ = self.current()
        return expand(text, synonyms) if synonyms and text else Expansion(text)

    def rules_for(self, query: str, placeholders: Sequence[str]) -> list[Rule]:
        _, rules = self.current()
        now = self._now()
        return [r for r in rules if r.applies(query, placeholders, now)]

    def stage(self, service: Any, request: Any, placeholders: Sequence[str], vector: Any, lexical: str,
              extra: Sequence[Rule] = (), collection: str | None = None) -> RulesStage | None:
        """The rules stage of one search (engine/merch/stage.py, `stage_for`): the shop's rules for this query
        plus `extra` (what query understanding asks of the ranking)."""
        return stage_for(service, request, self.rules_for(request.query, placeholders), vector, lexical, collection,
                         members=lambda placeholder: self.concepts.get(service, placeholder), asked=extra)
