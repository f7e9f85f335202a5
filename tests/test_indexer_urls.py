"""Catalog ingestion from image URLs (`--allow-urls`), against a local http.server on 127.0.0.1.

Everything runs on the tiny backbone and a small demo catalog (tests/indexer_world.py); the tests that write a
store run once per backend (store_config, tests/conftest.py).
"""
from __future__ import annotations

import hashlib
import http.server
import json
import os
import threading
import time
from pathlib import Path

import pytest
from PIL import Image

from indexer import run_index
from indexer.decode import Decoded, Decoder, Unchanged
from indexer_world import config, row
from indexer_world import catalog, embedder, onnx_cache, store_cfg, world  # noqa: F401 (fixtures)


class _Images(http.server.SimpleHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - http.server's naming
        if self.path.startswith("/slow"):
            time.sleep(1.0)
        super().do_GET()

    def log_message(self, *args):  # keep test output quiet
        pass


@pytest.fixture
def http_images(world):
    handler = lambda *a, **kw: _Images(*a, directory=str(world), **kw)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_urls_are_fetched_only_when_allowed(world, http_images):
    url = f"{http_images}/images/p0000/0.png"
    assert "--allow-urls" in Decoder(world, 32, "k")(row(url)).reason
    fetching = Decoder(world, 32, "k", allow_urls=True, url_timeout_s=0.3, url_private_ok=True)  # 127.0.0.1
    assert isinstance(fetching(row(url)), Decoded)
    assert "HTTP 404" in fetching(row(f"{http_images}/images/nope.png")).reason
    assert "timed out" in fetching(row(f"{http_images}/slow/images/p0000/0.png")).reason


class _Validating(http.server.SimpleHTTPRequestHandler):
    """Serves the world's images with an ETag (the body's hash; `etag=False`: none) and Last-Modified, answers
    304 to a matching If-None-Match (If-Modified-Since: SimpleHTTPRequestHandler's own), and logs each request as
    (path, conditional headers sent, status)."""

    etag = True
    log: list[tuple[str, dict, int]]

    def send_head(self):
        path = self.translate_path(self.path)
        if self.etag and os.path.isfile(path):
            tag = '"' + hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16] + '"'
            if self.headers.get("If-None-Match") == tag:
                self.send_response(304)
                self.send_header("ETag", tag)
                self.end_headers()
                return None
            self._tag = tag
        return super().send_head()

    def end_headers(self):
        if getattr(self, "_tag", None) and self.etag:
            self.send_header("ETag", self._tag)
            self._tag = None
        super().end_headers()

    def send_response(self, code, message=None):
        sent = {k: self.headers[k] for k in ("If-None-Match", "If-Modified-Since") if k in self.headers}
        self.log.append((self.path, sent, code))
        super().send_response(code, message)

    def log_message(self, *args):
        pass


@pytest.fixture
def validating_server(world):
    """(base URL, request log, handler class: set `.etag = False` for a server sending Last-Modified only)."""
    log: list = []
    cls = type("Handler", (_Validating,), {"log": log})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), lambda *a, **kw: cls(*a, directory=str(world), **kw))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", log, cls
    server.shutdown()
    server.server_close()


def _again(decoder: Decoder, r, result: Decoded):
    return decoder(r, result.hash, result.stamp)


def test_a_url_keeps_its_etag_and_a_rerun_downloads_it_only_when_it_changed(world, validating_server):
    """The stamp keeps the ETag and Last-Modified; the next fetch sends them (If-None-Match, If-Modified-Since):
    a 304 is Unchanged without a body; new bytes (new ETag) are fetched, hashed and decoded; a changed row (payload)
    fetches unconditionally, since its content hash must be computed again."""
    base, log, _ = validating_server
    decoder = Decoder(world, 32, "k", allow_urls=True, url_private_ok=True)
    r = row(f"{base}/images/p0000/0.png")
    first = decoder(r)
    assert isinstance(first, Decoded) and first.stamp.startswith("url:") and '"' in first.stamp
    assert log[-1][1:] == ({}, 200)
    assert isinstance(second := _again(decoder, r, first), Unchanged) and second.restamp is None
    sent, status = log[-1][1:]
    assert status == 304 and set(sent) == {"If-None-Match", "If-Modified-Since"}
    unstamped = decoder(r, first.hash, None)  # no stamp kept: fetched unconditionally, hashed, stamp stored
    assert isinstance(unstamped, Unchanged) and unstamped.restamp == first.stamp and log[-1][1:] == ({}, 200)
    renamed = row(r.image, price=9.5)
    assert isinstance(_again(decoder, renamed, first), Decoded) and log[-1][1:] == ({}, 200)
    image = world / "images" / "p0000" / "0.png"
    original = image.read_bytes()
    Image.new("RGB", (64, 64), "teal").save(image)
    try:
        changed = _again(decoder, r, first)
        assert isinstance(changed, Decoded) and changed.hash != first.hash and changed.stamp != first.stamp
        etag = json.loads(first.stamp.split(":", 2)[2])[0]
        assert log[-1][1]["If-None-Match"] == etag and log[-1][2] == 200
    finally:
        image.write_bytes(original)


def test_last_modified_alone_also_skips_the_download(world, validating_server):
    base, log, handler = validating_server
    handler.etag = False
    decoder = Decoder(world, 32, "k", allow_urls=True, url_private_ok=True)
    r = row(f"{base}/images/p0001/0.png")
    first = decoder(r)
    assert isinstance(first, Decoded) and first.stamp.startswith("url:")
    assert isinstance(_again(decoder, r, first), Unchanged)
    assert log[-1][1:] == ({"If-Modified-Since": log[-1][1]["If-Modified-Since"]}, 304)


def test_an_index_rerun_of_url_rows_sends_conditional_requests_and_downloads_nothing(
        catalog, tmp_path, onnx_cache, store_cfg, validating_server):
    base, log, _ = validating_server
    lines = [json.loads(line) for line in catalog.read_text().splitlines()[:12]]
    catalog.write_text("".join(json.dumps({**r, "image": f"{base}/{r['image']}"}) + "\n" for r in lines))
    cfg = config(catalog, tmp_path, onnx_cache, store_cfg, allow_urls=True, allow_private_urls=True)
    assert run_index(cfg).accepted == 12
    log.clear()
    assert run_index(cfg).unchanged == 12
    assert sorted(status for _, _, status in log) == [304] * 12, log
