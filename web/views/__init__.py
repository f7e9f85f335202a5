"""Blueprints: `search` (shopper pages), `admin` (concepts, catalog, jobs), `api` (JSON), `ops` (health, files)."""
from __future__ import annotations

from flask import current_app, request


def resources():
    """The app's Resources (web/resources.py)."""
    return current_app.extensions["coinage"]


def is_htmx() -> bool:
    """An htmx request (not a history restore): answer with the fragment only."""
    return request.headers.get("HX-Request") == "true" and request.headers.get("HX-History-Restore-Request") != "true"
