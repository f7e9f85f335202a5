"""Helpers of the reliability suite (not fixtures): the admin password of the shared app, a free loopback
port, image encoders and a header-only PNG of any announced size."""
from __future__ import annotations

import io
import socket

from indexer_world import png_header_only  # noqa: F401  (one maker of header-only PNGs: tests/)
from PIL import Image

PASSWORD = "reliability-pw"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- images -------------------------------------------------------------------------------


def encode(image: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kw)
    return buf.getvalue()


