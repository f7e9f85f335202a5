"""Settings of synonyms, rules and search analytics (AppSettings.merch)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MerchSettings:
    # Seconds between checks of the synonyms' and rules' version: how soon a change reaches every web process.
    refresh_s: float = 1.0
    # Record searches and clicks (COINAGE_ANALYTICS=0 turns it off; the click beacon still answers).
    analytics: bool = True
    # Days searches and clicks are kept (COINAGE_ANALYTICS_RETENTION_DAYS); older rows are pruned.
    retention_days: float = 90.0
    # Seconds between the background writer's batches.
    flush_s: float = 1.0
    # Rows waiting for the writer at most; beyond it new rows are dropped (counted), never a search slowed.
    analytics_queue: int = 10_000
    # Click beacons per client address per minute (counted in COINAGE_RATELIMIT_STORAGE: web/ratelimit.py); beyond: 429.
    clicks_per_minute: int = 120
