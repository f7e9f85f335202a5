"""Uploaded images, checked at the boundary: count, type, file size and pixel count, then decoded by PIL.

The request as a whole is bounded by MAX_CONTENT_LENGTH (413); each image here by
LimitSettings.max_image_bytes (413), max_image_pixels and shape (longest side, aspect ratio: the
indexer's limits too), read from the header before any decoding, so a decompression bomb or a
16 x 1,560,000 strip is refused unopened. Only the formats in
LimitSettings.image_formats are accepted, whatever the file name or content type claims.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Sequence

from flask import request
from PIL import Image

from engine.image_files import is_bomb, pil_error, pil_open_errors
from web.settings import LimitSettings

from .errors import ApiError

EXTENSIONS = {"PNG": "png", "JPEG": "jpg", "WEBP": "webp"}
MIME = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}


@dataclass(frozen=True)
class CheckedImage:
    name: str  # the file name as uploaded (for messages only; never used as a path)
    data: bytes  # the file's bytes
    format: str  # PIL format name: PNG, JPEG or WEBP
    width: int
    height: int

    @property
    def extension(self) -> str:
        return EXTENSIONS.get(self.format, "img")


def check_image(name: str, data: bytes, limits: LimitSettings, field: str = "images") -> CheckedImage:
    """One image file, or ApiError naming the file, the problem and the limit."""
    label = f"{name!r}" if name else "the uploaded file"
    pixel_limit = f"the limit of {limits.max_image_pixels:,} pixels (COINAGE_MAX_IMAGE_PIXELS)"
    allowed = ", ".join(limits.image_formats)
    if not data:
        raise ApiError(400, "empty_file", f"{label} is empty; choose an image file ({allowed})", field=field)
    if len(data) > limits.max_image_bytes:
        raise ApiError(413, "image_too_large", f"{label} is {len(data) / 2**20:.1f} MiB; each image may be at most "
                       f"{limits.max_image_bytes / 2**20:.0f} MiB (COINAGE_MAX_IMAGE_MB): resize or recompress it",
                       field=field)
    try:
        with Image.open(io.BytesIO(data)) as image:  # reads the header only
            fmt, (width, height) = image.format, image.size
            if fmt not in limits.image_formats:
                raise ApiError(400, "unsupported_image", f"{label} is a {fmt or 'unknown'} image; upload {allowed}",
                               field=field)
            if width * height > limits.max_image_pixels:
                raise ApiError(400, "image_too_many_pixels", f"{label} is {width}x{height} pixels, over "
                               f"{pixel_limit}: scale it down", field=field)
            if (problem := limits.shape.problem(width, height)) is not None:
                raise ApiError(400, "image_bad_shape", f"{label} {problem}", field=field)
            if min(width, height) < limits.min_image_side:
                raise ApiError(400, "image_too_small", f"{label} is {width}x{height} pixels; images need at least "
                               f"{limits.min_image_side} pixels on each side", field=field)
            image.load()  # full decode: truncated or corrupt files fail here
    except ApiError:
        raise
    except pil_open_errors() as e:
        if is_bomb(e):
            raise ApiError(400, "image_too_many_pixels", f"{label} is over {pixel_limit}: scale it down",
                           field=field) from e
        raise ApiError(400, "not_an_image", f"{label} is not an image Coinage can read ({pil_error(e)}); upload "
                       f"{allowed}", field=field) from e
    return CheckedImage(name, data, fmt, width, height)


def check_images(files: Sequence[tuple[str, bytes]], limits: LimitSettings, field: str = "images",
                 minimum: int | None = None, maximum: int | None = None) -> list[CheckedImage]:
    """Several images (name, bytes), with the count checked first."""
    lo = limits.min_concept_images if minimum is None else minimum
    hi = limits.max_concept_images if maximum is None else maximum
    files = [(n, d) for n, d in files if n or d]
    if not lo <= len(files) <= hi:
        raise ApiError(400, "image_count", f"upload {lo} to {hi} images of the concept; got {len(files)}",
                       field=field)
    return [check_image(name, data, limits, field) for name, data in files]


def form_files(field: str) -> list[tuple[str, bytes]]:
    """The files of a multipart field as (name, bytes), empty file inputs left out."""
    return [(f.filename or "", f.read()) for f in request.files.getlist(field) if f and (f.filename or f.content_length)]
