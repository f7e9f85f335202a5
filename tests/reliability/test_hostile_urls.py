"""`--allow-urls` against hostile servers: a slow drip, a redirect to another scheme, internal addresses (SSRF).
Every server here is a loopback one, so the fetches that are meant to reach it pass url_private_ok=True."""
from __future__ import annotations

import http.server
import threading
import time

import pytest

from attack_kit import encode
from PIL import Image

from indexer.decode import Decoded, Decoder, Rejected, Row
from indexer.fetch import check_address
from indexer.errors import Reject

PNG = encode(Image.new("RGB", (32, 32), "red"), "PNG")


class _Hostile(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - http.server's naming
        if self.path == "/drip.png":  # a valid PNG, one byte every 50 ms (about 10 s in all)
            self.send_response(200)
            self.send_header("Content-Length", str(len(PNG)))
            self.end_headers()
            for i in range(len(PNG)):
                try:
                    self.wfile.write(PNG[i:i + 1])
                    self.wfile.flush()
                except OSError:  # the client hung up: what the test wants
                    return
                time.sleep(0.05)
        elif self.path.startswith("/to-"):  # a redirect to another URL
            self.send_response(302)
            self.send_header("Location", self.path[len("/to-"):].replace("|", "/"))
            self.end_headers()
        else:
            self.send_response(200)
            self.send_header("Content-Length", str(len(PNG)))
            self.end_headers()
            self.wfile.write(PNG)

    def log_message(self, *args):  # keep test output quiet
        pass


@pytest.fixture(scope="module")
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hostile)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def fetch(url: str, private_ok: bool = True, timeout_s: float = 1.0):
    decoder = Decoder(".", 32, "k", allow_urls=True, url_timeout_s=timeout_s, url_private_ok=private_ok)
    return decoder(Row(row=1, id="r1", product_id="r1", title="t", image=url))


def test_a_good_url_is_fetched(server):
    assert isinstance(fetch(f"{server}/ok.png"), Decoded)


def test_url_timeout_bounds_a_slow_drip_not_only_each_read(server):
    t0 = time.perf_counter()
    result = fetch(f"{server}/drip.png", timeout_s=1.0)
    assert time.perf_counter() - t0 < 3.0
    assert isinstance(result, Rejected) and "timed out: not done within 1s (--url-timeout)" in result.reason, result


def test_redirects_to_other_schemes_are_refused(server):
    result = fetch(f"{server}/to-ftp:||127.0.0.1:21|x.png")
    assert isinstance(result, Rejected) and "redirected to a ftp: URL" in result.reason, result
    assert isinstance(fetch(f"{server}/to-{server.replace('/', '|')}|ok.png"), Decoded)  # http -> http is fine


def test_internal_addresses_are_refused_unless_allowed(server):
    result = fetch(f"{server}/ok.png", private_ok=False)
    assert isinstance(result, Rejected) and "127.0.0.1, a loopback, private" in result.reason, result
    assert "--allow-private-urls" in result.reason
    # a redirect cannot get around it either: the address is checked on every connection
    assert "a loopback, private" in fetch(f"{server}/to-{server.replace('/', '|')}|ok.png", private_ok=False).reason


@pytest.mark.parametrize("address", ["169.254.169.254", "10.1.2.3", "192.168.0.1", "::1", "::ffff:127.0.0.1",
                                     "fe80::1", "0.0.0.0", "100.64.0.1"])
def test_what_counts_as_internal(address):
    with pytest.raises(Reject, match="server-side request forgery"):
        check_address(address, private_ok=False)
    check_address(address, private_ok=True)
    check_address("93.184.216.34", private_ok=False)  # a public address: no error
