"""Search analytics in the registry database: one row per search (a page served) and one per click on a result.
No personal data: the query as typed, what the service made of it, counts and times; no address, no session.

    log = AnalyticsLog(registry.db_path, database_url)
    log.write(searches=[SearchRow(...)], clicks=[ClickRow(...)])    # a batch, one transaction (web/analytics.py)
    log.report(since, until)                                         # top / zero-result / no-click queries, CTR, ...
    log.prune(older_than)                                            # retention

Times are epoch seconds (`ts`) and a UTC day ('2026-12-07') for the per-day chart, so every report is one
GROUP BY on SQLite and PostgreSQL alike.
"""
from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

from engine.database import open_database

SCOPE = "analytics"  # its own PostgreSQL advisory lock: a batch never waits on a rule change
SCHEMA = """
CREATE TABLE IF NOT EXISTS search_log (
    id TEXT PRIMARY KEY,
    ts DOUBLE PRECISION NOT NULL,
    day TEXT NOT NULL,
    query TEXT NOT NULL,
    norm TEXT NOT NULL,
    interpretation TEXT NOT NULL,
    filters TEXT NOT NULL,
    results INTEGER NOT NULL,
    latency_ms DOUBLE PRECISION NOT NULL,
    corrected TEXT,
    concept TEXT,
    merch TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS search_log_ts ON search_log (ts);
CREATE TABLE IF NOT EXISTS click_log (
    search_id TEXT NOT NULL,
    ts DOUBLE PRECISION NOT NULL,
    product_id TEXT NOT NULL,
    position INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS click_log_search ON click_log (search_id);
CREATE INDEX IF NOT EXISTS click_log_ts ON click_log (ts);
"""


@dataclass
class SearchRow:
    id: str  # the search id the page carries (clicks name it)
    ts: float  # epoch seconds
    query: str  # as typed
    interpretation: dict[str, Any]  # prompt, tokens, retrieval, weight, mode, sort
    filters: dict[str, Any]  # category, colour, price bounds, other filters
    results: int  # results on the page (0: a zero-result search)
    latency_ms: float  # the service's total
    corrected: str | None = None  # the speller's rewrite, when it rewrote the query
    concept: str | None = None  # the first custom token the query used
    merch: list[dict[str, Any]] = field(default_factory=list)  # synonyms and rules applied

    @property
    def norm(self) -> str:
        return " ".join(self.query.lower().split())


@dataclass
class ClickRow:
    search_id: str
    ts: float
    product_id: str
    position: int  # 1-based rank of the clicked result


@dataclass
class Report:
    since: float
    until: float
    searches: int
    clicked_searches: int  # searches with at least one click
    clicks: int
    mean_position: float | None  # of the clicks
    zero_results: int
    top: list[dict[str, Any]]  # [{"query", "searches", "clicks", "zero"}]
    zero: list[dict[str, Any]]  # queries with no results: [{"query", "searches"}]
    no_clicks: list[dict[str, Any]]  # queries with results that nobody clicked
    concepts: list[dict[str, Any]]  # [{"concept", "searches", "clicks"}]
    days: list[dict[str, Any]]  # [{"day", "searches", "clicks"}] for the chart

    @property
    def ctr(self) -> float | None:
        return self.clicked_searches / self.searches if self.searches else None

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "ctr": self.ctr}


class AnalyticsLog:
    def __init__(self, path: str | Path, database_url: str | None = None):
        self.db = open_database(path, database_url, scope=SCOPE)
        self.db.create_schema(SCHEMA)

    def write(self, searches: Sequence[SearchRow] = (), clicks: Sequence[ClickRow] = ()) -> None:
        """A batch in one transaction (a click whose search row was lost is kept: it still counts as a click)."""
        if not searches and not clicks:
            return
        with self.db.write() as conn:
            for s in searches:
                conn.execute("INSERT INTO search_log (id, ts, day, query, norm, interpretation, filters, results, "
                             "latency_ms, corrected, concept, merch) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                             "ON CONFLICT (id) DO NOTHING",
                             (s.id, s.ts, _day(s.ts), s.query, s.norm, json.dumps(s.interpretation),
                              json.dumps(s.filters), s.results, s.latency_ms, s.corrected, s.concept,
                              json.dumps(s.merch)))
            for c in clicks:
                conn.execute("INSERT INTO click_log (search_id, ts, product_id, position) VALUES (?, ?, ?, ?)",
                             (c.search_id, c.ts, c.product_id, c.position))

    def prune(self, older_than: float) -> int:
        """Delete searches and clicks before epoch `older_than`; the number of rows deleted."""
        with self.db.write() as conn:
            n = conn.execute("DELETE FROM search_log WHERE ts < ?", (older_than,)).rowcount
            return n + conn.execute("DELETE FROM click_log WHERE ts < ?", (older_than,)).rowcount

    def report(self, since: float, until: float, top: int = 20) -> Report:
        span = (since, until)
        clicked = ("LEFT JOIN (SELECT search_id, COUNT(*) AS clicks FROM click_log GROUP BY search_id) c "
                   "ON c.search_id = s.id WHERE s.ts >= ? AND s.ts < ?")
        with self.db.connect() as conn:
            totals = conn.execute(
                "SELECT COUNT(*) AS searches, SUM(CASE WHEN c.clicks > 0 THEN 1 ELSE 0 END) AS clicked, "
                f"SUM(CASE WHEN s.results = 0 THEN 1 ELSE 0 END) AS zero FROM search_log s {clicked}", span).fetchone()
            clicks = conn.execute("SELECT COUNT(*) AS n, AVG(position) AS mean FROM click_log WHERE ts >= ? AND ts < ?",
                                  span).fetchone()
            per_query = conn.execute(
                "SELECT s.norm AS query, COUNT(*) AS searches, SUM(COALESCE(c.clicks, 0)) AS clicks, "
                f"SUM(CASE WHEN s.results = 0 THEN 1 ELSE 0 END) AS zero FROM search_log s {clicked} "
                "GROUP BY s.norm ORDER BY searches DESC, s.norm", span).fetchall()
            concepts = conn.execute(
                "SELECT s.concept AS concept, COUNT(*) AS searches, SUM(COALESCE(c.clicks, 0)) AS clicks "
                f"FROM search_log s {clicked} AND s.concept IS NOT NULL GROUP BY s.concept "
                "ORDER BY searches DESC, s.concept", span).fetchall()
            days = conn.execute(
                "SELECT s.day AS day, COUNT(*) AS searches, SUM(COALESCE(c.clicks, 0)) AS clicks "
                f"FROM search_log s {clicked} GROUP BY s.day ORDER BY s.day", span).fetchall()
        rows = [_ints(r) for r in per_query]
        return Report(since, until, int(totals["searches"] or 0), int(totals["clicked"] or 0), int(clicks["n"] or 0),
                      float(clicks["mean"]) if clicks["mean"] is not None else None, int(totals["zero"] or 0),
                      rows[:top], [{"query": r["query"], "searches": r["searches"]} for r in rows if r["zero"]][:top],
                      [{"query": r["query"], "searches": r["searches"]} for r in rows
                       if not r["clicks"] and r["zero"] < r["searches"]][:top],
                      [_ints(r) for r in concepts], [_ints(r) for r in days])

    def export_csv(self, since: float, until: float) -> str:
        """Every search of the period with its clicks, one line per search, as CSV text."""
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["search_id", "time", "query", "results", "latency_ms", "corrected", "concept", "filters",
                         "clicks", "clicked_positions"])
        with self.db.connect() as conn:
            rows = conn.execute("SELECT id, ts, query, results, latency_ms, corrected, concept, filters FROM "
                                "search_log WHERE ts >= ? AND ts < ? ORDER BY ts", (since, until)).fetchall()
            clicks: dict[str, list[int]] = {}
            for c in conn.execute("SELECT c.search_id AS search_id, c.position AS position FROM click_log c JOIN "
                                  "search_log s ON s.id = c.search_id WHERE s.ts >= ? AND s.ts < ? ORDER BY c.ts",
                                  (since, until)).fetchall():
                clicks.setdefault(c["search_id"], []).append(int(c["position"]))
        for r in rows:
            positions = clicks.get(r["id"], [])
            writer.writerow([r["id"], datetime.fromtimestamp(r["ts"], timezone.utc).isoformat(timespec="seconds"),
                             r["query"], r["results"], round(float(r["latency_ms"]), 3), r["corrected"] or "",
                             r["concept"] or "", r["filters"], len(positions), " ".join(map(str, positions))])
        return out.getvalue()


def _day(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d")


def _ints(row: Any) -> dict[str, Any]:
    return {k: int(v) if isinstance(v, (int, float)) or (v is not None and type(v).__name__ == "Decimal") else v
            for k, v in dict(row).items()}
