"""Synonyms and rules in the registry database (engine/database.py: SQLite by default, PostgreSQL with a URL),
versioned and audited.

    store = MerchStore(registry.db_path, database_url)       # the concept registry's database
    store.add_synonym(Synonym.parse("cup => mug"), actor="admin")
    store.version()                                           # one cheap read: bumped by every change

Every change, in one transaction: the row, an audit row (who, what, when, the item as JSON) and
`merch_version.version + 1`, so each process re-reads the synonyms and rules exactly when they changed
(engine/merch/live.py checks the version at most once a second).
"""
from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable

from engine.database import Connection, open_database

from .errors import MerchNotFound
from .rules import Rule
from .synonyms import Synonym

SCOPE = "merch"  # its PostgreSQL writers share one advisory lock (engine/database.py)
SCHEMA = """
CREATE TABLE IF NOT EXISTS merch_version (
    id INTEGER PRIMARY KEY,
    version INTEGER NOT NULL
);
INSERT INTO merch_version (id, version) VALUES (1, 0) ON CONFLICT (id) DO NOTHING;
CREATE TABLE IF NOT EXISTS merch_synonyms (
    {rowid}
    terms TEXT NOT NULL,
    targets TEXT NOT NULL,
    updated TEXT NOT NULL,
    updated_by TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS merch_rules (
    {rowid}
    data TEXT NOT NULL,
    updated TEXT NOT NULL,
    updated_by TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS merch_audit (
    {rowid}
    at TEXT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    kind TEXT NOT NULL,
    item_id INTEGER,
    detail TEXT NOT NULL
);
"""


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class MerchStore:
    def __init__(self, path: str | Path, database_url: str | None = None):
        self.db = open_database(path, database_url, scope=SCOPE)
        self.db.create_schema(SCHEMA)

    # ------------------------------------------------------------------ reads

    def version(self) -> int:
        with self.db.connect() as conn:
            return int(conn.execute("SELECT version FROM merch_version WHERE id=1").fetchone()["version"])

    def synonyms(self) -> list[Synonym]:
        with self.db.connect() as conn:
            rows = conn.execute("SELECT rowid AS id, terms, targets, updated, updated_by FROM merch_synonyms "
                                "ORDER BY rowid").fetchall()
        return [_synonym(r) for r in rows]

    def rules(self) -> list[Rule]:
        with self.db.connect() as conn:
            rows = conn.execute("SELECT rowid AS id, data, updated, updated_by FROM merch_rules ORDER BY rowid"
                                ).fetchall()
        return [_rule(r) for r in rows]

    def rule(self, rule_id: int) -> Rule:
        with self.db.connect() as conn:
            row = conn.execute("SELECT rowid AS id, data, updated, updated_by FROM merch_rules WHERE rowid=?",
                               (rule_id,)).fetchone()
        if row is None:
            raise MerchNotFound(f"no rule {rule_id}; list them with `coinage rules list` or GET /api/rules")
        return _rule(row)

    def audit(self, limit: int = 100, kind: str | None = None) -> list[dict[str, Any]]:
        """The last changes, newest first (of one kind, "synonym" or "rule", when given)."""
        where, params = ("WHERE kind=? ", (kind, limit)) if kind else ("", (limit,))
        with self.db.connect() as conn:
            rows = conn.execute("SELECT at, actor, action, kind, item_id, detail FROM merch_audit "
                                f"{where}ORDER BY rowid DESC LIMIT ?", params).fetchall()
        return [{**dict(r), "detail": json.loads(r["detail"])} for r in rows]

    # ------------------------------------------------------------------ writes

    def add_synonym(self, synonym: Synonym, actor: str) -> Synonym:
        return self.add_synonyms([synonym], actor)[0]

    def add_synonyms(self, synonyms: Iterable[Synonym], actor: str, replace: bool = False) -> list[Synonym]:
        """Store synonyms in one transaction (an import); `replace` first removes every synonym."""
        return self._add("merch_synonyms (terms, targets, updated, updated_by) VALUES (?, ?, ?, ?)", "synonym",
                         [((json.dumps(s.terms), json.dumps(s.targets)), s) for s in synonyms], actor, replace,
                         lambda s, item_id, now: Synonym(s.terms, s.targets, item_id, now, actor))

    def remove_synonym(self, synonym_id: int, actor: str) -> None:
        self._remove("merch_synonyms", "synonym", synonym_id, actor)

    def add_rule(self, rule: Rule, actor: str) -> Rule:
        return self.add_rules([rule], actor)[0]

    def add_rules(self, rules: Iterable[Rule], actor: str, replace: bool = False) -> list[Rule]:
        """Store rules in one transaction (an import); `replace` first removes every rule."""
        return self._add("merch_rules (data, updated, updated_by) VALUES (?, ?, ?)", "rule",
                         [((_rule_data(r),), r) for r in rules], actor, replace,
                         lambda r, item_id, now: _with_meta(r, item_id, now, actor))

    def update_rule(self, rule_id: int, rule: Rule, actor: str) -> Rule:
        now = _now()
        with self.db.write() as conn:
            changed = conn.execute("UPDATE merch_rules SET data=?, updated=?, updated_by=? WHERE rowid=?",
                                   (_rule_data(rule), now, actor, rule_id)).rowcount
            if not changed:
                raise MerchNotFound(f"no rule {rule_id} to update; list them with GET /api/rules")
            stored = _with_meta(rule, rule_id, now, actor)
            _audit(conn, actor, "update", "rule", rule_id, stored.to_json())
            _bump(conn)
        return stored

    def remove_rule(self, rule_id: int, actor: str) -> None:
        self._remove("merch_rules", "rule", rule_id, actor)

    def _add(self, into: str, kind: str, items: list[tuple[tuple, Any]], actor: str, replace: bool,
             stored: Callable[[Any, int, str], Any]) -> list[Any]:
        """INSERT INTO `into` each item's values (then `updated`, `updated_by`), audited, in one transaction;
        `stored(item, id, now)` is the item as stored."""
        table = into.split()[0]
        now, out = _now(), []
        with self.db.write() as conn:
            if replace:
                conn.execute(f"DELETE FROM {table}")
                _audit(conn, actor, "clear", kind, None, {})
            for values, item in items:
                row = conn.execute(f"INSERT INTO {into} RETURNING rowid AS id", (*values, now, actor)).fetchone()
                out.append(stored(item, int(row["id"]), now))
                _audit(conn, actor, "add", kind, out[-1].id, out[-1].to_json())
            _bump(conn)
        return out

    def _remove(self, table: str, kind: str, item_id: int, actor: str) -> None:
        with self.db.write() as conn:
            if not conn.execute(f"DELETE FROM {table} WHERE rowid=?", (item_id,)).rowcount:
                raise MerchNotFound(f"no {kind} {item_id} to remove; list them with `coinage {kind}s list`")
            _audit(conn, actor, "remove", kind, item_id, {})
            _bump(conn)


def _bump(conn: Connection) -> None:
    conn.execute("UPDATE merch_version SET version=version+1 WHERE id=1")


def _audit(conn: Connection, actor: str, action: str, kind: str, item_id: int | None, detail: dict) -> None:
    conn.execute("INSERT INTO merch_audit (at, actor, action, kind, item_id, detail) VALUES (?, ?, ?, ?, ?, ?)",
                 (_now(), actor, action, kind, item_id, json.dumps(detail)))


def _rule_data(rule: Rule) -> str:
    data = rule.to_json()
    for meta in ("id", "updated", "updated_by"):
        data.pop(meta)
    return json.dumps(data)


def _with_meta(rule: Rule, rule_id: int, updated: str, actor: str) -> Rule:
    return Rule.from_json(json.loads(_rule_data(rule)), id=rule_id, updated=updated, updated_by=actor)


def _synonym(row: Any) -> Synonym:
    return Synonym(tuple(json.loads(row["terms"])), tuple(json.loads(row["targets"])), int(row["id"]),
                   row["updated"], row["updated_by"])


def _rule(row: Any) -> Rule:
    return Rule.from_json(json.loads(row["data"]), id=int(row["id"]), updated=row["updated"],
                          updated_by=row["updated_by"])
