"""Per-client rate limits (Flask-Limiter, on the `limits` library): searches, new preview jobs, failed logins,
click beacons.

    rates = init_app(app, settings.ratelimit, clicks_per_minute=settings.merch.clicks_per_minute)   # create_app
    rates.allow_preview("203.0.113.7")    # False past RateLimitSettings.previews: no new preview job
    rates.allow_click("203.0.113.7")      # False past MerchSettings.clicks_per_minute: the beacon answers 429
    app.extensions["coinage.login_throttle"].check(address)   # 429 past login_failures (web/security.py)

The client is the request's address (`request.remote_addr`, which ProxyFix sets from X-Forwarded-For
behind COINAGE_PROXY_HOPS proxies). Counts live in RateLimitSettings.storage_uri
(COINAGE_RATELIMIT_STORAGE): `memory://` counts per process, right for one web process (the demo,
`coinage serve`); several gunicorn workers or hosts share counts through a server storage such as
`redis://HOST:6379` (the `limits` library also speaks valkey://, memcached:// and mongodb://). A storage
that fails is logged and lets requests through (swallow_errors): the limits protect the service, they
must not take it down.
"""
from __future__ import annotations

from flask import Flask
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from limits import parse
from limits.errors import ConfigurationError

from web.settings import RateLimitSettings, SettingsError

from .security import LoginThrottle

#: The views that run a search (the start page runs one when given `q`).
SEARCH_ENDPOINTS = ("search.index", "search.search", "search.search_photo", "api.search_get", "api.search_post")


class RateLimits:
    def __init__(self, app: Flask, settings: RateLimitSettings, clicks_per_minute: int):
        self.settings = settings
        try:
            self.limiter = Limiter(get_remote_address, app=app, storage_uri=settings.storage_uri,
                                   strategy="moving-window", headers_enabled=True, swallow_errors=True)
        except ConfigurationError as e:
            raise SettingsError(f"COINAGE_RATELIMIT_STORAGE={settings.storage_uri!r} cannot be used ({e}); use "
                                "memory:// (one process) or redis://HOST:6379 (shared by all processes; needs "
                                "pip install 'coinage[redis]')") from e
        # one count per client for all of them (a shared scope), not one per endpoint
        search = self.limiter.shared_limit(settings.search, scope="search", error_message="too many searches from "
                                           "this address; wait a minute and search again")
        for endpoint in SEARCH_ENDPOINTS:  # the decorator's wrapper does the counting: it replaces the view
            app.view_functions[endpoint] = search(app.view_functions[endpoint])
        self._previews = parse(settings.previews)
        self._clicks = parse(f"{clicks_per_minute} per minute")

    def allow_preview(self, client: str | None) -> bool:
        """Count one new preview job for `client`; False (not counted) once its limit is spent."""
        return client is None or self.limiter.limiter.hit(self._previews, "preview", client)

    def allow_click(self, client: str | None) -> bool:
        """Count one click beacon from `client` (None: an unknown address, counted as one client)."""
        return self.limiter.limiter.hit(self._clicks, "click", client or "unknown")


def init_app(app: Flask, settings: RateLimitSettings, clicks_per_minute: int) -> RateLimits:
    rates = RateLimits(app, settings, clicks_per_minute)
    app.extensions["coinage.ratelimits"] = rates
    app.extensions["coinage.login_throttle"] = LoginThrottle(rates.limiter.limiter, parse(settings.login_failures))
    return rates
