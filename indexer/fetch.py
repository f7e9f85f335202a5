"""Fetching catalog image URLs (`--allow-urls`) without handing the catalog's author the indexer's network.

- Only http(s), on every hop: a redirect to ftp:, file: or any other scheme is refused (urllib follows ftp).
- Only public addresses: the address actually connected to (after DNS, on every redirect hop, so a rebinding
  name or a redirect cannot slip past) must be global. Loopback, private, link-local (the cloud metadata
  service at 169.254.169.254), multicast and reserved addresses are refused (SSRF) unless `private_ok`
  (images served from the intranet: IndexerConfig.allow_private_urls, `--allow-private-urls`).
- `timeout_s` bounds the whole fetch, headers and body, not only each socket operation: a server that drips a
  byte at a time is cut off when the time is up.
- Environment proxies are not used: the address checked must be the server's.
- Conditional requests: a fetch given the ETag and Last-Modified of the last one sends If-None-Match and
  If-Modified-Since; a 304 answer means the image is unchanged and nothing is downloaded (`Fetched.data` None).
"""
from __future__ import annotations

import http.client
import ipaddress
import socket
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from urllib.parse import urlsplit

from .errors import Reject

USER_AGENT = "coinage-indexer/0.1"
SCHEMES = ("http", "https")


def check_scheme(url: str) -> None:
    scheme = urlsplit(url).scheme.lower()
    if scheme not in SCHEMES:
        raise Reject(f"image URL scheme {scheme!r} is not supported; use http(s) or a path")


def check_address(host: str, private_ok: bool) -> None:
    """Refuse a connection to an address that is not public (unless `private_ok`)."""
    address = ipaddress.ip_address(host.split("%")[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if not private_ok and not address.is_global:
        raise Reject(f"image URL leads to {address}, a loopback, private, link-local or reserved address; "
                     "refused (server-side request forgery). Pass --allow-private-urls "
                     "(IndexerConfig.allow_private_urls) for images served from your own network")


@dataclass(frozen=True)
class Validators:
    """What a server said identifies the version of a URL's body (None: it said nothing)."""

    etag: str | None = None  # the ETag response header, sent back as If-None-Match
    last_modified: str | None = None  # the Last-Modified response header, sent back as If-Modified-Since

    def __bool__(self) -> bool:
        return self.etag is not None or self.last_modified is not None

    def headers(self) -> dict[str, str]:
        found = {"If-None-Match": self.etag, "If-Modified-Since": self.last_modified}
        return {k: v for k, v in found.items() if v is not None}


@dataclass(frozen=True)
class Fetched:
    data: bytes | None  # the body; None: the server answered 304 Not Modified to the conditional request
    validators: Validators  # the response's ETag and Last-Modified (those sent, on a 304 that repeats none)


def fetch_url(url: str, max_bytes: int, timeout_s: float, private_ok: bool = False,
              since: Validators = Validators()) -> Fetched:
    """The body of an http(s) image URL, at most `max_bytes`, fetched within `timeout_s` in all; Reject otherwise.
    Conditional on `since` (the validators of the last fetch, if any): a 304 answer downloads nothing."""
    check_scheme(url)
    deadline = time.monotonic() + timeout_s
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({}), _Redirects(),
        _HTTPHandler(private_ok, timeout_s), _HTTPSHandler(private_ok, timeout_s))
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, **since.headers()})
    chunks, total, validators = [], 0, Validators()
    try:
        with opener.open(request, timeout=timeout_s) as response:
            validators = Validators(response.headers.get("ETag"), response.headers.get("Last-Modified"))
            length = response.headers.get("Content-Length")
            if length and length.isdigit() and int(length) > max_bytes:
                raise Reject(f"image URL body is {length} bytes, over the {max_bytes}-byte limit")
            while chunk := response.read1(1 << 16):
                chunks.append(chunk)
                total += len(chunk)
                if total > max_bytes:
                    raise Reject(f"image URL body is over the {max_bytes}-byte limit")
                if time.monotonic() > deadline:
                    break
    except urllib.error.HTTPError as e:
        if e.code == 304 and since:
            e.close()
            return Fetched(None, Validators(e.headers.get("ETag") or since.etag,
                                            e.headers.get("Last-Modified") or since.last_modified))
        raise Reject(f"fetching {url} failed: HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, TimeoutError, OSError, http.client.HTTPException) as e:
        if time.monotonic() <= deadline:
            raise Reject(f"fetching {url} failed: {getattr(e, 'reason', e)}") from None
    if time.monotonic() > deadline:
        raise Reject(f"fetching {url} timed out: not done within {timeout_s:g}s (--url-timeout)")
    if not total:
        raise Reject(f"image URL {url} returned an empty body")
    return Fetched(b"".join(chunks), validators)


class _Redirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        scheme = urlsplit(newurl).scheme.lower()
        if scheme not in SCHEMES:
            raise Reject(f"fetching {req.full_url} was redirected to a {scheme}: URL; only http(s) redirects are "
                         "followed")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


class _Guarded:
    """Mixin for http.client connections: the peer address is checked before anything is sent, and the socket is
    shut down when the fetch's time is up (a blocked read then returns)."""

    private_ok = False
    total_s = 10.0

    def _checked_connection(self, address, timeout, source_address=None, **kwargs):
        sock = socket.create_connection(address, timeout, source_address, **kwargs)
        try:
            check_address(sock.getpeername()[0], self.private_ok)
        except Reject:
            sock.close()
            raise
        timer = threading.Timer(self.total_s, _shut, (sock,))
        timer.daemon = True
        timer.start()
        self._timer = timer
        return sock

    def close(self):
        timer = getattr(self, "_timer", None)
        if timer is not None:
            timer.cancel()
        super().close()


def _shut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:  # already closed: nothing to cut off
        return


class _GuardedHTTP(_Guarded, http.client.HTTPConnection):
    pass


class _GuardedHTTPS(_Guarded, http.client.HTTPSConnection):
    pass


def _connection(base: type[_Guarded], private_ok: bool, total_s: float):
    def make(*args, **kwargs):
        conn = base(*args, **kwargs)
        conn.private_ok, conn.total_s = private_ok, total_s
        conn._create_connection = conn._checked_connection
        return conn
    return make


class _HTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, private_ok: bool, total_s: float):
        super().__init__()
        self._make = _connection(_GuardedHTTP, private_ok, total_s)

    def http_open(self, req):
        return self.do_open(self._make, req)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, private_ok: bool, total_s: float):
        super().__init__()
        self._make = _connection(_GuardedHTTPS, private_ok, total_s)

    def https_open(self, req):
        return self.do_open(self._make, req, context=self._context)
