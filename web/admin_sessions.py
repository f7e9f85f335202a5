"""Server-side records of admin sessions, so that logging out and changing the password end them.

The session cookie (Flask's, signed) carries only a random session id; the record of that id lives in the
job store's database (the `admin_sessions` table: <data_dir>/jobs.sqlite3, or PostgreSQL with
COINAGE_DATABASE_URL), so every web process of a deployment sees the same sessions:

- logout deletes the record: a copy of the cookie taken before it no longer logs anyone in;
- each record holds a fingerprint of the admin credential (user and password hash) it was opened with: once
  the password (COINAGE_ADMIN_PASSWORD_HASH or <data_dir>/admin.json) changes, every older session is refused;
- a record older than AdminSettings.session_max_hours is refused however active the session was (the
  cookie's own lifetime, session_hours, only bounds the time between requests).
"""
from __future__ import annotations

import hashlib
import secrets
import time
from typing import Callable

from engine.database import open_database

from .settings import AppSettings

SCHEMA = """
CREATE TABLE IF NOT EXISTS admin_sessions (
    id TEXT PRIMARY KEY,
    user_name TEXT NOT NULL,
    credential TEXT NOT NULL,
    created DOUBLE PRECISION NOT NULL
);
"""


def credential_fingerprint(user: str, password_hash: str) -> str:
    """A digest naming the admin credential a session was opened with (the hash itself is not copied)."""
    return hashlib.sha256(f"{user}\0{password_hash}".encode()).hexdigest()


class AdminSessions:
    """Open, check and end admin sessions (one row per login)."""

    def __init__(self, settings: AppSettings, credential: str, clock: Callable[[], float] = time.time):
        self.db = open_database(settings.jobs_db, settings.database_url, scope="sessions")
        self.db.create_schema(SCHEMA)
        self.credential = credential  # credential_fingerprint of the current admin credential
        self.max_age_s = settings.admin.session_max_hours * 3600.0
        self.clock = clock

    def start(self, user: str) -> str:
        """Record a new session of `user` and return its id (expired and superseded records are dropped here)."""
        session_id = secrets.token_urlsafe(32)
        now = self.clock()
        with self.db.write() as conn:
            conn.execute("DELETE FROM admin_sessions WHERE created < ? OR credential <> ?",
                         (now - self.max_age_s, self.credential))
            conn.execute("INSERT INTO admin_sessions (id, user_name, credential, created) VALUES (?, ?, ?, ?)",
                         (session_id, user, self.credential, now))
        return session_id

    def user(self, session_id: str) -> str | None:
        """The user of a live session `session_id`; None when it was ended, has expired or predates the
        current password."""
        with self.db.connect() as conn:
            row = conn.execute("SELECT user_name, credential, created FROM admin_sessions WHERE id=?",
                               (session_id,)).fetchone()
        if row is None or row["credential"] != self.credential or self.clock() - row["created"] > self.max_age_s:
            return None
        return row["user_name"]

    def end(self, session_id: str) -> None:
        with self.db.write() as conn:
            conn.execute("DELETE FROM admin_sessions WHERE id=?", (session_id,))

    def count(self) -> int:
        """Live sessions of the current credential (for tests and operators)."""
        with self.db.connect() as conn:
            row = conn.execute("SELECT COUNT(*) AS n FROM admin_sessions WHERE credential=? AND created >= ?",
                               (self.credential, self.clock() - self.max_age_s)).fetchone()
        return int(row["n"])
