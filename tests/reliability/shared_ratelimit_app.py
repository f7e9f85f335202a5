"""The app that both processes of test_shared_ratelimits.py run, and the requests each makes (one place for both).

Limits: 3 searches, 2 new previews, 2 click beacons and 2 failed logins per address a minute; each kind of request
comes from its own address, so the counts do not mix (a preview search also counts as a search for its address).
"""
from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

from web import create_app
from web.testing import build_catalog, tiny_settings

LIMITS = {"search": "3 per minute", "previews": "2 per minute", "login_failures": "2 per minute"}
CLICKS_PER_MINUTE = 2
SEARCHER, PREVIEWER, CLICKER, GUESSER = "198.51.100.11", "198.51.100.12", "198.51.100.13", "198.51.100.14"


def make_app(root: Path, storage_uri: str):
    """An app on its own tiny catalog under `root`, counting its rate limits in `storage_uri`."""
    build_catalog(root)
    settings = tiny_settings(root)
    settings.ratelimit = replace(settings.ratelimit, storage_uri=storage_uri, **LIMITS)
    settings.merch = replace(settings.merch, clicks_per_minute=CLICKS_PER_MINUTE)
    return create_app(settings)


def one_of_each(client, n: int) -> dict:
    """One request of each limited kind (the n-th preview query is new): the status code, or the preview's state."""
    def at(address):
        return {"environ_base": {"REMOTE_ADDR": address}}

    search = client.get("/api/search?q=red+dress&preview=0", **at(SEARCHER)).status_code
    page = client.get(f"/search?q=shoe+{n}", headers={"HX-Request": "true"}, **at(PREVIEWER)).get_data(as_text=True)
    (preview,) = re.findall(r'data-state="(\w+)"', page)
    click = client.post("/api/click", json={"search_id": "x", "product_id": "p", "position": 1},
                        **at(CLICKER)).status_code
    token = client.get("/api/session").json["csrf_token"]
    login = client.post("/api/login", json={"user": "admin", "password": "wrong"}, headers={"X-CSRF-Token": token},
                        **at(GUESSER)).status_code
    return {"search": search, "preview": preview, "click": click, "login": login}
