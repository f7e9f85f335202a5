"""The vector store goes away under a running web app (server backend): searches fail fast with a 503 that
names the store and the fix, /readyz says not ready, and both recover by themselves when the store is
back on the same address. A store that accepts connections but never answers costs at most the
configured timeout. No Qdrant binary runs here, so a small stand-in answers Qdrant's REST calls for
search (its index is the tiny catalog's real vectors, copied from the embedded store)."""
from __future__ import annotations

import json
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from engine.store import StoreConfig, StoreUnavailable, open_store

from attack_kit import free_port


class FakeQdrant:
    """Qdrant's REST answers for the calls the search path makes, on a fixed loopback port; stop() closes the port."""

    def __init__(self, port: int, points: list, collection: str, alias: str):
        self.port, self.points, self.collection, self.alias = port, points, collection, alias
        self.vectors = np.stack([p.vector for p in points]) if points else np.zeros((0, 1), np.float32)
        self.server: ThreadingHTTPServer | None = None

    def start(self) -> "FakeQdrant":
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, result) -> None:
                data = json.dumps({"result": result, "status": "ok", "time": 0.0}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):  # noqa: N802 - http.server's naming
                if self.path.startswith("/collections") and self.path.rstrip("/") == "/collections":
                    return self._send({"collections": [{"name": fake.collection}]})
                if self.path.startswith("/aliases"):
                    return self._send({"aliases": [{"alias_name": fake.alias, "collection_name": fake.collection}]})
                self.send_error(404)

            def do_POST(self):  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                m = re.fullmatch(r"/collections/([^/]+)/points/(query|count|query/groups)", self.path.split("?")[0])
                if not m or m.group(1) not in (fake.collection, fake.alias):
                    return self.send_error(404)
                if m.group(2) == "count":
                    return self._send({"count": len(fake.points)})
                query = body["query"]
                if body.get("prefetch"):  # hybrid: rank by the dense prefetch (the stand-in has no BM25 index)
                    query = next(p["query"] for p in body["prefetch"] if isinstance(p["query"], list))
                query = query["nearest"] if isinstance(query, dict) else query
                if isinstance(query, dict):  # a sparse (BM25) side: the stand-in has no BM25 index, so no hits
                    return self._send({"points": []})
                query = np.asarray(query, np.float32)
                scores = fake.vectors @ query / (np.linalg.norm(fake.vectors, axis=1) * np.linalg.norm(query) + 1e-9)
                offset, limit = body.get("offset") or 0, body.get("limit", 10)
                point = lambda i: {"id": fake.points[i].id, "version": 0, "score": float(scores[i]),  # noqa: E731
                                   "payload": fake.points[i].payload}
                if m.group(2) == "query/groups":
                    groups: dict = {}
                    for i in np.argsort(-scores):
                        hits = groups.setdefault(fake.points[i].payload[body["group_by"]], [])
                        if len(hits) < body.get("group_size", 3):
                            hits.append(point(i))
                    return self._send({"groups": [{"id": k, "hits": v} for k, v in list(groups.items())[:limit]]})
                self._send({"points": [point(i) for i in np.argsort(-scores)[offset:offset + limit]]})

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def catalog_points(app):
    """Every point of the shared app's index (vectors included), and the collection behind its alias."""
    store = app.extensions["coinage"].store
    collection = store.get_alias("products")
    return store.retrieve(collection, store.scroll_ids(collection), with_vectors=True), collection


@pytest.fixture
def served(shop, catalog_points, tmp_path):
    """A second app over the same catalog with backend='server' on a fake Qdrant, and the fake."""
    from web import create_app
    from web.testing import tiny_settings

    points, collection = catalog_points
    fake = FakeQdrant(free_port(), points, collection, "products").start()
    settings = tiny_settings(tmp_path)
    settings.catalog = shop / "world" / "catalog.jsonl"
    settings.store = StoreConfig(backend="server", url=f"http://127.0.0.1:{fake.port}", timeout_s=2.0)
    app = create_app(settings)
    yield app, fake
    app.extensions["coinage"].close()
    if fake.server is not None:
        try:
            fake.stop()
        except OSError:
            pass


def _timed(client, url):
    t0 = time.perf_counter()
    r = client.get(url)
    return r, time.perf_counter() - t0


def test_store_down_searches_503_fast_and_recover_when_it_returns(served):
    app, fake = served
    client = app.test_client()
    up, _ = _timed(client, "/api/search?q=red+dress&preview=0&limit=3")
    assert up.status_code == 200 and len(up.json["results"]) == 3
    ids_before = [x["id"] for x in up.json["results"]]

    fake.stop()  # the port is closed now: connection refused
    for url in ("/api/search?q=red+dress&preview=0", "/api/search?q=blue+mug&preview=0"):
        r, seconds = _timed(client, url)
        assert r.status_code == 503 and seconds < 2.0, (r.status_code, seconds)
        error = r.json["error"]
        assert error["code"] == "store_unavailable"
        assert f"127.0.0.1:{fake.port}" in error["message"] and "COINAGE_QDRANT_URL" in error["message"]
    page, seconds = _timed(client, "/search?q=red+dress")
    assert page.status_code == 503 and seconds < 2.0 and "did not answer" in page.get_data(as_text=True)
    ready = client.get("/readyz")
    assert ready.status_code == 503 and not ready.json["checks"]["index"]["ok"]
    assert client.get("/healthz").status_code == 200  # alive, not ready: the orchestrator keeps it, the balancer skips it

    fake.start()  # back on the same address: no restart of the web app
    again, _ = _timed(client, "/api/search?q=red+dress&preview=0&limit=3")
    assert again.status_code == 200 and [x["id"] for x in again.json["results"]] == ids_before
    assert client.get("/readyz").status_code == 200


def test_a_store_that_accepts_but_never_answers_costs_at_most_the_timeout(served):
    app, fake = served
    fake.stop()
    silent = socket.socket()
    silent.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    silent.bind(("127.0.0.1", fake.port))
    silent.listen(16)  # connections are accepted by the kernel and never answered
    try:
        r, seconds = _timed(app.test_client(), "/api/search?q=red+dress&preview=0")
        assert r.status_code == 503 and r.json["error"]["code"] == "store_unavailable"
        assert seconds < 2.0 + 3.0, seconds  # timeout_s = 2 (one attempt), plus slack for a loaded machine
    finally:
        silent.close()
    fake.server = None


def test_an_app_started_while_the_store_is_down_says_which_store_and_how_to_fix_it(tmp_path):
    from web import create_app
    from web.testing import tiny_settings

    settings = tiny_settings(tmp_path)
    settings.store = StoreConfig(backend="server", url=f"http://127.0.0.1:{free_port()}", timeout_s=1.0)
    t0 = time.perf_counter()
    with pytest.raises(StoreUnavailable, match=r"did not answer .*COINAGE_QDRANT_URL"):
        create_app(settings)
    assert time.perf_counter() - t0 < 5.0
    with pytest.raises(StoreUnavailable):
        open_store(settings.store)
