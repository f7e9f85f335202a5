"""Image files served from memory: read whole (they are small), so no open file is left for the WSGI server to close.

    return image_response(path, max_age=3600)

Flask's `send_file(path)` hands the server an open file that the server closes when the response ends; when a
browser drops the connection mid-response (it navigated away while images loaded), werkzeug's server can skip that
close (its clean-up reads the dropped socket first), and the file is only closed by the garbage collector, with a
ResourceWarning. A file larger than MAX_IN_MEMORY is still streamed from disk. Conditional requests (ETag from the
file's mtime and size, Last-Modified) and ranges work as before.
"""
from __future__ import annotations

import io
import mimetypes
from pathlib import Path

from flask import Response, send_file

MAX_IN_MEMORY = 16 * 2**20  # bytes: a larger file is streamed from disk


def image_response(path: Path, max_age: int) -> Response:
    stat = path.stat()
    if stat.st_size > MAX_IN_MEMORY:
        return send_file(path, max_age=max_age)
    mimetype = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return send_file(io.BytesIO(path.read_bytes()), mimetype=mimetype, max_age=max_age,
                     last_modified=stat.st_mtime, etag=f"{stat.st_mtime_ns:x}-{stat.st_size:x}")
