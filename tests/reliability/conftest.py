"""Shared set-up of the reliability suite: one tiny indexed web app per session, image makers, a free port.

Everything runs on the `tiny-random` backbone in temporary directories, on loopback only
(tests/conftest.py refuses other addresses).
"""
from __future__ import annotations

import io
import socket
import struct
import zlib

import pytest
import torch
from PIL import Image

PASSWORD = "reliability-pw"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run fastest on one thread (and the test machine is shared)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def shop(tmp_path_factory):
    """A tiny catalog indexed into an embedded store: 24 products x 6 photos (web.testing.build_catalog)."""
    from web.testing import build_catalog

    root = tmp_path_factory.mktemp("shop")
    build_catalog(root)
    return root


@pytest.fixture(scope="session")
def app(shop):
    from web import create_app
    from web.testing import tiny_settings

    app = create_app(tiny_settings(shop, password=PASSWORD))
    yield app
    app.extensions["coinage"].close()


@pytest.fixture
def res(app):
    return app.extensions["coinage"]


@pytest.fixture
def client(app):
    return app.test_client()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- images -------------------------------------------------------------------------------


def encode(image: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kw)
    return buf.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A valid PNG header announcing width x height with almost no pixel data (a decompression bomb)."""
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def deflate_bomb(side: int = 6000) -> bytes:
    """A real PNG of side x side black pixels: ~100 KB on disk, side*side*3 bytes once decoded."""
    return encode(Image.new("RGB", (side, side)), "PNG", optimize=True)
