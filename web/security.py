"""Admin authentication, CSRF protection, the session key and security headers.

CSRF: every session gets a random token (`secrets`), rendered in a `<meta name="csrf-token">`
tag, in `hx-headers` on <body> (so every htmx request sends `X-CSRF-Token`) and as a hidden
`csrf_token` field in forms. Every POST/PUT/PATCH/DELETE must carry it (header or field); it is
compared in constant time with the session's. The session cookie is signed by itsdangerous
(Flask's session) with the app's secret key, HttpOnly and SameSite=Lax (Secure in production). An admin
login is also recorded server-side (web/admin_sessions.py): logout, a password change and the absolute
lifetime end it for every copy of the cookie.
Read-only endpoints that take a body (the JSON search API) are exempted explicitly.

Credentials: COINAGE_ADMIN_USER / COINAGE_ADMIN_PASSWORD_HASH (a werkzeug.security hash). In dev
mode without a hash, a random password is generated at first start, its hash stored in
<data_dir>/admin.json and the password printed once; production refuses to start without one.
"""
from __future__ import annotations

import functools
import hmac
import json
import logging
import os
import secrets
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable
from urllib.parse import unquote, urlsplit

from flask import Flask, current_app, g, redirect, request, session, url_for
from werkzeug.security import check_password_hash, generate_password_hash

from web.settings import AppSettings, SettingsError

from .admin_sessions import AdminSessions, credential_fingerprint
from .errors import ApiError, wants_json

if TYPE_CHECKING:
    import limits
    import limits.strategies

log = logging.getLogger(__name__)

UNSAFE_METHODS = ("POST", "PUT", "PATCH", "DELETE")
CSRF_KEY = "csrf"
VISITOR_KEY = "visitor"  # session key of visitor_id()
SESSION_ID_KEY = "sid"  # session key of the server-side admin session's id (web/admin_sessions.py)
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"
ADMIN_FILE = "admin.json"
SECRET_FILE = "secret_key"


# ---------------------------------------------------------------------------- bootstrap (dev mode)

def _write_once(path: Path, text: str) -> bool:
    """Create `path` with `text` (mode 0600) unless it exists; atomic and exclusive across processes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    try:
        os.link(tmp, path)  # fails if another process created it first
        return True
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)


def secret_key(settings: AppSettings) -> str:
    """The session-signing key: COINAGE_SECRET_KEY, else (dev) one generated once into <data_dir>/secret_key."""
    if settings.secret_key:
        return settings.secret_key
    if settings.env == "production":
        raise SettingsError("production mode needs COINAGE_SECRET_KEY (python -c \"import secrets; "
                            "print(secrets.token_hex(32))\")")
    path = settings.data_dir / SECRET_FILE
    if not path.is_file():
        _write_once(path, secrets.token_hex(32))
    return path.read_text().strip()


def admin_password_hash(settings: AppSettings, announce: Callable[[str], None] = print) -> str:
    """The admin password hash: configured, stored in <data_dir>/admin.json, or (dev, first start) generated.

    A generated password is shown once through `announce` and only its hash is stored.
    """
    if settings.admin.password_hash:
        return settings.admin.password_hash
    if settings.env == "production":
        raise SettingsError("production mode needs COINAGE_ADMIN_PASSWORD_HASH; there is no default password")
    path = settings.data_dir / ADMIN_FILE
    if not path.is_file():
        password = secrets.token_urlsafe(12)
        record = {"user": settings.admin.user, "password_hash": generate_password_hash(password),
                  "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        if _write_once(path, json.dumps(record, indent=1) + "\n"):
            bar = "=" * 72
            announce(f"\n{bar}\nCoinage admin login (dev mode; shown only this once):\n"
                     f"    user:     {settings.admin.user}\n    password: {password}\n"
                     f"Only its hash is kept, in {path}. Delete that file and restart for a new password,\n"
                     f"or set COINAGE_ADMIN_PASSWORD_HASH.\n{bar}\n")
    try:
        data = json.loads(path.read_text())
        return str(data["password_hash"])
    except (OSError, ValueError, KeyError) as e:
        raise SettingsError(f"{path} is unreadable ({e}); delete it and restart to generate a new admin "
                            "password") from e


# ---------------------------------------------------------------------------- CSRF

def csrf_token() -> str:
    token = session.get(CSRF_KEY)
    if not token:
        token = secrets.token_urlsafe(32)
        session[CSRF_KEY] = token
    return token


def visitor_id() -> str:
    """A random id of this browser (or API client) session: who waits on a shared preview job (web.jobs
    JobStore.release), so one shopper's cancel does not stop another's preview."""
    visitor = session.get(VISITOR_KEY)
    if not visitor:
        visitor = secrets.token_urlsafe(12)
        session[VISITOR_KEY] = visitor
    return visitor


def csrf_exempt(view: Callable) -> Callable:
    """Mark a read-only view that takes a body (e.g. search by JSON) as not needing a CSRF token."""
    view.csrf_exempt = True  # type: ignore[attr-defined]
    return view


def _check_csrf(app: Flask) -> None:
    if request.method not in UNSAFE_METHODS:
        return
    view = app.view_functions.get(request.endpoint or "")
    if view is None or getattr(view, "csrf_exempt", False):
        return
    sent = request.headers.get(CSRF_HEADER) or request.form.get(CSRF_FIELD) or ""
    expected = session.get(CSRF_KEY) or ""
    if not expected or not hmac.compare_digest(sent.encode(), expected.encode()):
        raise ApiError(400, "csrf_failed",
                       "the form's security (CSRF) token is missing or out of date; reload the page and try "
                       "again. API clients: GET /api/session and send its csrf_token in the X-CSRF-Token header "
                       "with the session cookie")


# ---------------------------------------------------------------------------- admin sessions

def _sessions() -> AdminSessions:
    return current_app.extensions["coinage.sessions"]


def is_admin() -> bool:
    """Whether this request's cookie names a live server-side admin session (web/admin_sessions.py); a cookie
    whose session was ended, expired or predates the password loses its admin keys. Checked once per request."""
    if "admin_user" not in g:
        user = None
        session_id = session.get(SESSION_ID_KEY)
        if session.get("admin") and isinstance(session_id, str):
            user = _sessions().user(session_id)
        if user is None and ("admin" in session or SESSION_ID_KEY in session):
            session.pop("admin", None)
            session.pop(SESSION_ID_KEY, None)
        g.admin_user = user
    return g.admin_user is not None


def login(user: str, password: str, settings: AppSettings, password_hash: str) -> bool:
    ok_user = hmac.compare_digest(user.encode(), settings.admin.user.encode())
    ok_password = check_password_hash(password_hash, password)  # always run: no timing hint about the user
    if not (ok_user and ok_password):
        return False
    logout()  # a fresh session (and CSRF token) on login: no session fixation
    session.permanent = True
    session["admin"] = settings.admin.user
    session[SESSION_ID_KEY] = _sessions().start(settings.admin.user)
    g.admin_user = settings.admin.user
    csrf_token()
    return True


def logout() -> None:
    """End the server-side session (every copy of its cookie) and clear this cookie."""
    session_id = session.get(SESSION_ID_KEY)
    if isinstance(session_id, str):
        _sessions().end(session_id)
    session.clear()
    g.admin_user = None


def admin_required(view: Callable) -> Callable:
    @functools.wraps(view)
    def wrapper(*args, **kwargs):
        if not is_admin():
            if wants_json():
                raise ApiError(401, "login_required", "log in first: POST /api/login with user and password "
                               "(and the X-CSRF-Token from GET /api/session)")
            return redirect(url_for("admin.login", next=request.full_path if request.args else request.path))
        return view(*args, **kwargs)

    return wrapper


class LoginThrottle:
    """Failed logins per client address in a moving window, counted in the rate-limit storage (web/ratelimit.py:
    shared by every process that uses the same COINAGE_RATELIMIT_STORAGE), to slow password guessing."""

    def __init__(self, limiter: "limits.strategies.RateLimiter", limit: "limits.RateLimitItem"):
        self.limiter, self.limit = limiter, limit

    def check(self, key: str) -> None:
        if not self.limiter.test(self.limit, "login", key):
            raise ApiError(429, "too_many_logins", f"too many failed logins from this address; wait "
                           f"{self.limit.get_expiry()} seconds and try again")

    def failed(self, key: str) -> None:
        self.limiter.hit(self.limit, "login", key)


def is_site_path(target: str | None) -> bool:
    r"""Whether `target` is a path on this site and nothing a browser could read as another host: no scheme, no
    host, one leading slash, no whitespace, control character or backslash anywhere, and none of these in the
    path once percent-decoded either (browsers drop tabs and newlines and read a backslash as a slash, so
    `/\t/evil.example`, `/\\evil.example` and `/%2F/evil.example` all lead towards //evil.example)."""
    if not target or any(_unsafe(c) for c in target):
        return False
    path = target
    for _ in range(3):  # double and triple encodings (%252F) are decoded too
        path = path.split("?", 1)[0].split("#", 1)[0]
        parts = urlsplit(path)
        if (parts.scheme or parts.netloc or not path.startswith("/") or path.startswith("//")
                or any(_unsafe(c) for c in path)):
            return False
        decoded = unquote(path)
        if decoded == path:
            return True
        path = decoded
    return False


def _unsafe(c: str) -> bool:
    return c == "\\" or c.isspace() or not c.isprintable()


def safe_next(target: str | None) -> str:
    """Where to go after login: `target` if it is a path on this site, else the concepts page (no open redirect)."""
    return target if is_site_path(target) else url_for("admin.concepts")


# ---------------------------------------------------------------------------- wiring

def init_app(app: Flask, settings: AppSettings) -> None:
    app.extensions["coinage.password_hash"] = admin_password_hash(settings)
    app.extensions["coinage.sessions"] = AdminSessions(
        settings, credential_fingerprint(settings.admin.user, app.extensions["coinage.password_hash"]))
    app.jinja_env.globals.update(csrf_token=csrf_token, is_admin=is_admin)

    @app.before_request
    def protect() -> None:
        g.request_started = time.perf_counter()
        _check_csrf(app)

    @app.after_request
    def headers(response):
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        response.headers.setdefault(
            "Content-Security-Policy",
            "default-src 'self'; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; script-src 'self'; "
            "object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'")
        if session.get("admin"):
            response.headers.setdefault("Cache-Control", "no-store")
        return response
