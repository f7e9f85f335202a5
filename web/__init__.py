"""The web app: search page with previews, admin (concepts, catalog, jobs), JSON API, health and metrics.

    app = create_app()                                   # settings from COINAGE_* variables
    app = create_app(AppSettings(data_dir=tmp_path, backbone="tiny-random"))   # tests

Resources (backbone, store, registry, job store, query service, worker) hang off
`app.extensions["coinage"]` (web/resources.py); close them with `app.extensions["coinage"].close()`.
Templates: one per page and one per fragment (templates/partials/); an htmx request
(`HX-Request: true`) gets only the fragment. htmx is vendored in static/ with its version in the name.
"""
from __future__ import annotations

from datetime import timedelta

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix


from . import concepts_admin, errors, metrics, ratelimit, security
from .resources import Resources
from .settings import AppSettings
from .templating import init_app as init_templating
from .views import admin, api, merch, merch_api, ops, search

HTMX_FILE = "htmx-2.0.11.min.js"  # vendored from the npm package htmx.org (dist/htmx.min.js)


def create_app(config: AppSettings | None = None) -> Flask:
    """Build the app from `config` (default: AppSettings.from_env()); loads the backbone and opens the store."""
    settings = config if config is not None else AppSettings.from_env()
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=security.secret_key(settings),
        MAX_CONTENT_LENGTH=settings.limits.max_request_bytes,
        MAX_FORM_MEMORY_SIZE=settings.limits.max_request_bytes,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.env == "production",
        SESSION_COOKIE_NAME="session",
        PERMANENT_SESSION_LIFETIME=timedelta(hours=settings.admin.session_hours),
        JSON_SORT_KEYS=False,
        COINAGE_SETTINGS=settings,
    )
    if settings.proxy_hops:
        # the client address and scheme the proxies saw (X-Forwarded-For/-Proto), trusting the last proxy_hops values
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=settings.proxy_hops, x_proto=settings.proxy_hops)
    resources = Resources(settings)
    app.extensions["coinage"] = resources
    try:
        security.init_app(app, settings)
        errors.init_app(app)
        metrics.init_app(app, settings.metrics_token)
        for blueprint in (search.bp, admin.bp, api.bp, merch.bp, merch_api.bp, ops.bp):
            app.register_blueprint(blueprint)
        # per-client limits on the views just registered
        ratelimit.init_app(app, settings.ratelimit, clicks_per_minute=settings.merch.clicks_per_minute)
        app.jinja_env.globals.update(htmx_file=HTMX_FILE, settings=settings)
        init_templating(app)
        concepts_admin.reconcile_registrations(resources)  # what a registration killed mid-way left behind
        if settings.worker.mode == "thread":
            resources.start_worker()
    except BaseException:
        resources.close()
        raise
    return app
