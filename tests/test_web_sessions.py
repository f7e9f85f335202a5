"""Admin sessions are server-side (web/admin_sessions.py): logout ends every copy of the cookie, a password
change ends every older session, and a session lasts at most AdminSettings.session_max_hours however active."""
import dataclasses

import pytest

from werkzeug.security import generate_password_hash

from web import create_app
from web.settings import AdminSettings
from web.testing import tiny_settings

PASSWORD = "session-pw"

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def csrf(client):
    return client.get("/api/session").json["csrf_token"]


def log_in(client, password=PASSWORD):
    r = client.post("/api/login", json={"user": "admin", "password": password}, headers={"X-CSRF-Token": csrf(client)})
    assert r.status_code == 200, r.get_data(as_text=True)
    return r.json["csrf_token"]


def copy_of(client, app):
    """A second client holding a copy of `client`'s session cookie (what a thief would replay)."""
    other = app.test_client()
    other.set_cookie("session", client.get_cookie("session").value)
    return other


def test_a_cookie_copied_before_logout_stops_working_after_it(app):
    client = app.test_client()
    token = log_in(client)
    thief = copy_of(client, app)
    assert thief.get("/api/concepts").status_code == 200  # the copy works while the session lives
    assert client.post("/api/logout", headers={"X-CSRF-Token": token}).status_code == 200
    assert thief.get("/api/concepts").status_code == 401
    assert thief.get("/admin/concepts").status_code == 302  # to the login page
    r = thief.post("/api/reindex", headers={"X-CSRF-Token": token})  # state-changing, with the old CSRF token
    assert r.status_code in (400, 401) and r.json["error"]["code"] in ("login_required", "csrf_failed")
    assert thief.get("/api/session").json["admin"] is False


def test_logging_in_again_does_not_revive_an_ended_session(app):
    first = app.test_client()
    token = log_in(first)
    copy = copy_of(first, app)
    first.post("/api/logout", headers={"X-CSRF-Token": token})
    second = app.test_client()
    log_in(second)
    assert second.get("/api/concepts").status_code == 200 and copy.get("/api/concepts").status_code == 401


def test_a_session_ends_at_its_absolute_lifetime_however_active(app):
    sessions = app.extensions["coinage.sessions"]
    client = app.test_client()
    log_in(client)
    real_clock = sessions.clock
    start = real_clock()
    try:
        sessions.clock = lambda: start + sessions.max_age_s - 60
        assert client.get("/api/concepts").status_code == 200  # active until the end
        sessions.clock = lambda: start + sessions.max_age_s + 60
        assert client.get("/api/concepts").status_code == 401
    finally:
        sessions.clock = real_clock


def test_a_password_change_ends_older_sessions_and_a_restart_keeps_live_ones(tmp_path):
    hashes = {pw: generate_password_hash(pw, method="pbkdf2:sha256:1000") for pw in ("old-password", "new-password")}

    def app_with(password):  # the same hash across restarts, as COINAGE_ADMIN_PASSWORD_HASH gives
        return create_app(tiny_settings(tmp_path, admin=AdminSettings(password_hash=hashes[password])))

    app = app_with("old-password")
    try:
        client = app.test_client()
        log_in(client, "old-password")
        cookie = client.get_cookie("session").value
    finally:
        app.extensions["coinage"].close()
    for password, admin in (("old-password", True), ("new-password", False)):
        app = app_with(password)  # a restart; then one with COINAGE_ADMIN_PASSWORD_HASH changed
        try:
            client = app.test_client()
            client.set_cookie("session", cookie)
            assert client.get("/api/session").json["admin"] is admin, password
        finally:
            app.extensions["coinage"].close()


def test_session_lifetimes_must_be_positive():
    from web.settings import SettingsError

    with pytest.raises(SettingsError, match="session_max_hours must be > 0"):
        dataclasses.replace(AdminSettings(), session_max_hours=0)


def test_session_records_on_each_database(tmp_path, database_url):
    from web.admin_sessions import AdminSessions, credential_fingerprint
    from web.settings import AppSettings

    settings = AppSettings(data_dir=tmp_path, database_url=database_url)
    old = AdminSessions(settings, credential_fingerprint("admin", "hash-1"))
    sid = old.start("admin")
    assert old.user(sid) == "admin" and old.count() == 1
    new = AdminSessions(settings, credential_fingerprint("admin", "hash-2"))  # the password changed
    assert new.user(sid) is None
    other = new.start("admin")  # drops the superseded record
    assert new.count() == 1 and old.user(sid) is None
    new.end(other)
    assert new.user(other) is None and new.count() == 0
