"""Stage 2, decode/validate: raw rows -> typed rows -> image bytes -> content hash -> model-sized pixels.

`validate` checks a row's fields (cheap, in the main thread, in catalog order). `Decoder` does the
rest for one row (in a worker thread): read the file or fetch the URL, hash bytes + payload + model,
and -- unless the store already holds that hash -- decode with limits, then prepare the pixels with
engine.preprocess (EXIF orientation, alpha on white, RGB, resize/crop), as engine.images.ImageEncoder
does. Every problem with a row becomes a `Rejected` result with a reason, never an exception.
"""
from __future__ import annotations

import hashlib
import io
import json
import math
import os
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from engine.errors import ImageError
from engine.image_files import SHAPE, ImageShape, check_pixel_limit, is_bomb, pil_error
from engine.preprocess import fit, upright_rgb
from engine.product import CATALOG_FIELDS, canonical_id, payload_problem
from engine.store import point_id

from .errors import Reject
from .fetch import Validators, check_scheme, fetch_url
from .readers import RawRow

# Raster formats we decode; anything else (PSD, EPS, ...) is refused unparsed.
ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")  # JPEG covers MPO (phone photos)
MAX_ID_LENGTH = 512


@dataclass(frozen=True)
class ImageLimits:
    max_bytes: int = 32 << 20  # larger image files (or URL bodies) are refused unread
    max_pixels: int = 40_000_000  # width x height above this is refused before decoding (decompression bombs)
    shape: ImageShape = field(default=SHAPE)  # longest side and aspect ratio, shared with uploads
    min_side: int = 8  # shortest side in pixels; smaller images carry no usable content
    read_timeout_s: float = 30.0  # reading one image file may take at most this long (slow or hung mounts)

    def __post_init__(self) -> None:
        check_pixel_limit(self.max_pixels, "ImageLimits.max_pixels")


@dataclass
class Row:
    """A catalog row that passed field validation."""

    row: int  # position in the catalog file (RawRow.row)
    id: str  # catalog id of the row (one photo); the point id is derived from it
    product_id: str  # product the photo belongs to (defaults to id)
    title: str
    image: str  # path (relative to the image root) or http(s) URL, as the catalog gives it
    category: str | None = None
    price: float | None = None
    attributes: dict[str, Any] | None = None  # free-form; unknown columns are merged in

    @property
    def point_id(self) -> str:
        return point_id(self.id)

    def payload(self) -> dict[str, Any]:
        return {"id": self.id, "product_id": self.product_id, "title": self.title, "category": self.category,
                "price": self.price, "image": self.image, "attributes": dict(self.attributes or {})}


@dataclass
class Decoded:
    row: Row
    pixels: np.ndarray  # (S, S, 3) uint8, resized and centre-cropped
    hash: str  # content hash, stored as payload engine.product.HASH
    seconds: float  # time this row spent in the decoder
    stamp: str | None = None  # source_stamp or url_stamp, stored as payload engine.product.STAMP (None: none)


@dataclass
class Unchanged:
    row: Row
    seconds: float
    restamp: str | None = None  # the stored stamp is stale (same bytes, new size/mtime): store this one


@dataclass
class Rejected:
    row: int
    id: str | None
    reason: str
    seconds: float = 0.0


# --- validation --------------------------------------------------------------------------


def validate(raw: RawRow) -> Row | Rejected:
    """Typed row, or Rejected naming the first problem."""
    if raw.fields is None:
        return Rejected(raw.row, None, raw.error or "unparseable row")
    f = raw.fields
    try:
        rid = _ident(f.get("id"), "id")
        row = Row(
            row=raw.row, id=rid,
            product_id=rid if _blank(f.get("product_id")) else _ident(f.get("product_id"), "product_id"),
            title=_text(f.get("title"), "title"),
            image=_text(f.get("image"), "image"),
            category=None if _blank(f.get("category")) else _text(f.get("category"), "category"),
            price=_price(f.get("price")),
            attributes=_attributes(f),
        )
        if (problem := payload_problem(row.payload())) is not None:
            raise Reject(problem)
    except Reject as e:
        return Rejected(raw.row, _id_or_none(f.get("id")), str(e))
    return row


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _ident(value: Any, name: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        if value is None:
            raise Reject(f"missing required field {name!r}")
        raise Reject(f"{name} must be a string or an integer, got {type(value).__name__}")
    try:
        text = canonical_id(str(value)).strip()  # ValueError: an int over Python's 4,300-digit str() limit
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise Reject(f"{name} holds a lone surrogate at character {e.start}, which is no valid text; fix the "
                     "encoding of the catalog") from None
    except ValueError:
        raise Reject(f"{name} is an integer too long to be an id") from None
    if not text:
        raise Reject(f"missing required field {name!r}")
    if len(text) > MAX_ID_LENGTH:
        raise Reject(f"{name} is {len(text)} characters long; the limit is {MAX_ID_LENGTH}")
    return text


def _id_or_none(value: Any) -> str | None:
    try:
        return _ident(value, "id")
    except Reject:
        return None


def _text(value: Any, name: str) -> str:
    if value is None:
        raise Reject(f"missing required field {name!r}")
    if not isinstance(value, str):
        raise Reject(f"{name} must be a string, got {type(value).__name__}")
    if not value.strip():
        raise Reject(f"missing required field {name!r} (empty)")
    return value.strip()


def _price(value: Any) -> float | None:
    if _blank(value):
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise Reject(f"price must be a number, got {type(value).__name__}")
    try:
        price = float(value)
    except OverflowError:  # an integer of hundreds of digits
        raise Reject(f"price must be a finite number >= 0, got an integer of {len(str(value))} digits") from None
    except ValueError:
        raise Reject(f"price must be a number, got {value!r}"[:200]) from None
    if not math.isfinite(price) or price < 0:
        raise Reject(f"price must be a finite number >= 0, got {value!r}")
    return price


def _attributes(fields: dict[str, Any]) -> dict[str, Any]:
    value = fields.get("attributes")
    if _blank(value):
        attrs: dict[str, Any] = {}
    elif isinstance(value, dict):
        attrs = dict(value)
    elif isinstance(value, str):
        try:
            attrs = json.loads(value)
        except ValueError as e:
            raise Reject(f"attributes is not valid JSON: {e}") from None
        except RecursionError:
            raise Reject("attributes nest deeper than Python can parse; flatten them into a few levels") from None
        if not isinstance(attrs, dict):
            raise Reject(f"attributes must be a JSON object, got {type(attrs).__name__}")
    else:
        raise Reject(f"attributes must be an object or a JSON string, got {type(value).__name__}")
    for key, extra in fields.items():  # unknown columns are attributes too
        if key not in CATALOG_FIELDS and key not in attrs and not _blank(extra):
            attrs[str(key)] = extra
    try:
        json.dumps(attrs, allow_nan=False)
    except RecursionError:
        raise Reject("attributes nest deeper than Python can serialise; flatten them into a few levels") from None
    except (TypeError, ValueError):
        try:
            attrs = json.loads(json.dumps(attrs, default=str, allow_nan=False))
        except ValueError:  # NaN / Infinity (JSON Lines and Parquet can hold them): the store takes strict JSON
            raise Reject("attributes hold a NaN or infinite number; use null or a finite number") from None
    return attrs


# --- images ------------------------------------------------------------------------------


def resolve_image(image: str, root: Path, allow_urls: bool) -> str | Path:
    """The URL to fetch or the file to read for a row's `image`; Reject when it may not be used."""
    if "://" in image:
        check_scheme(image)
        if not allow_urls:
            raise Reject("image is a URL and URL fetching is off; pass --allow-urls (IndexerConfig.allow_urls)")
        return image
    root = root.resolve()
    path = (root / image).resolve()
    if not path.is_relative_to(root):
        raise Reject(f"image path {image!r} leaves the image root {root}; set --image-root to a folder holding it")
    return path


def read_image_bytes(source: Path, limits: ImageLimits) -> bytes:
    """An image file's bytes (URLs: indexer.fetch.fetch_url)."""
    data = read_file(source, limits)
    if not data:
        raise Reject("image file is empty (0 bytes)")
    return data


FILE_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISCHR, "a device"),
              (stat.S_ISBLK, "a device"), (stat.S_ISSOCK, "a socket"))


def read_file(path: Path, limits: ImageLimits) -> bytes:
    """A regular file's bytes, bounded: opened without blocking (a named pipe would wait forever for a writer),
    checked to be a regular file on the open descriptor, at most `limits.max_bytes`, and read in chunks against
    `limits.read_timeout_s` (a chunk that blocks forever, e.g. a hung network mount, is not interrupted)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise Reject(f"image file {path} does not exist") from None
    except OSError as e:
        raise Reject(f"cannot read image file {path}: {e}") from None
    try:
        mode, size = (st := os.fstat(fd)).st_mode, st.st_size
        if not stat.S_ISREG(mode):
            kind = next((name for test, name in FILE_KINDS if test(mode)), "not a regular file")
            raise Reject(f"image path {path} is {kind}; point the row at a regular image file")
        if size > limits.max_bytes:
            raise Reject(f"image file is {size} bytes, over the {limits.max_bytes}-byte limit")
        deadline, chunks, total = time.monotonic() + limits.read_timeout_s, [], 0
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
            total += len(chunk)
            if total > limits.max_bytes:
                raise Reject(f"image file grew past the {limits.max_bytes}-byte limit while being read")
            if time.monotonic() > deadline:
                raise Reject(f"reading image file {path} took over {limits.read_timeout_s:g}s "
                             "(ImageLimits.read_timeout_s); check the disk or network mount it is on")
        return b"".join(chunks)
    except OSError as e:
        raise Reject(f"cannot read image file {path}: {e}") from None
    finally:
        os.close(fd)


def decode_image(data: bytes, limits: ImageLimits, draft_size: int | None = None) -> Image.Image:
    """Bytes -> RGB image, refusing bombs, truncated/corrupt files and unsupported formats.

    `draft_size`: a JPEG is decoded at the smallest DCT scale (1/2, 1/4, 1/8) still at least this many pixels on
    each side (`Image.draft`): what a model of that input size sees, several times faster on camera photos."""
    try:
        image = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
    except UnidentifiedImageError:
        raise Reject(f"not an image in a supported format ({', '.join(ALLOWED_FORMATS)})") from None
    except Exception as e:  # PIL raises many types (SyntaxError, struct.error, ...) for malformed headers
        limit = f"the limit of {limits.max_pixels:,} pixels (IndexerConfig.limits.max_pixels)"
        raise Reject(f"image refused: {pil_error(e, limit)}" if is_bomb(e)
                     else f"corrupt image header ({pil_error(e)})") from None
    w, h = image.size
    if w * h > limits.max_pixels or max(w, h) > limits.shape.max_side:
        raise Reject(f"image is {w}x{h} ({w * h} pixels), over the limits ({limits.max_pixels} pixels, "
                     f"{limits.shape.max_side} per side): refused as a possible decompression bomb")
    if (problem := limits.shape.problem(w, h)) is not None:
        raise Reject(f"image {problem} (IndexerConfig.limits.shape)")
    if min(w, h) < limits.min_side:
        raise Reject(f"image is {w}x{h}, smaller than {limits.min_side} pixels on a side")
    if draft_size is not None and image.format == "JPEG":
        image.draft("RGB", (draft_size, draft_size))
    try:
        image.load()
    except Exception as e:  # truncated data, broken streams, bad chunks: all "this file is damaged"
        raise Reject(f"corrupt or truncated image: {type(e).__name__}: {e}") from None
    try:
        return upright_rgb(image)
    except ImageError as e:
        raise Reject(str(e)) from None


def content_hash(data: bytes, payload: dict[str, Any], model_key: str) -> str:
    """sha256 of the model identity, the canonical payload JSON and the image bytes."""
    h = _row_hash(payload, model_key)
    h.update(b"\0")
    h.update(data)
    return h.hexdigest()


def _row_hash(payload: dict[str, Any], model_key: str):
    """sha256 of the model identity and the canonical payload JSON: what every hash and stamp of a row starts
    with."""
    h = hashlib.sha256(model_key.encode())
    h.update(b"\0")
    h.update(json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode())
    return h


def source_stamp(source: Path, payload: dict[str, Any], model_key: str) -> str | None:
    """A hash of the model identity, the payload and the image file's size and modification time: while it
    matches the stamp stored with the point (engine.product.STAMP), the row is unchanged and its image is not
    read. None for a file that cannot be stat'ed (a URL's stamp is url_stamp's)."""
    try:
        st = source.stat()
    except OSError:
        return None
    h = _row_hash(payload, model_key)
    h.update(f"\0{st.st_size}\0{st.st_mtime_ns}".encode())
    return h.hexdigest()[:32]


URL_STAMP = "url:"  # prefix of a URL's stamp: url:<hash of model and payload>:<JSON [ETag, Last-Modified]>


def url_stamp(payload: dict[str, Any], model_key: str, validators: Validators) -> str | None:
    """A URL row's stamp: the model and payload it was indexed with and the server's ETag and Last-Modified for
    the image, which the next run sends back (If-None-Match, If-Modified-Since). None when the server sent
    neither: the URL is fetched and hashed every run."""
    if not validators:
        return None
    return f"{URL_STAMP}{_row_key(payload, model_key)}:{json.dumps([validators.etag, validators.last_modified])}"


def url_validators(stamp: str | None, payload: dict[str, Any], model_key: str) -> Validators:
    """The validators a stored URL stamp holds, if it was made for this model and payload (else none: the row
    changed, so its image must be fetched and hashed whatever the server says)."""
    prefix = f"{URL_STAMP}{_row_key(payload, model_key)}:"
    if not stamp or not stamp.startswith(prefix):
        return Validators()
    try:
        etag, last_modified = json.loads(stamp[len(prefix):])
    except (ValueError, TypeError):  # a stamp this code did not write: fetch unconditionally
        return Validators()
    return Validators(etag, last_modified)


def _row_key(payload: dict[str, Any], model_key: str) -> str:
    return _row_hash(payload, model_key).hexdigest()[:16]


class Decoder:
    """Row -> Decoded | Unchanged | Rejected. Thread-safe (no shared mutable state)."""

    def __init__(self, image_root: Path, image_size: int, model_key: str, limits: ImageLimits | None = None,
                 allow_urls: bool = False, url_timeout_s: float = 10.0, url_private_ok: bool = False):
        self.image_root = Path(image_root)
        self.image_size = image_size
        self.model_key = model_key
        self.limits = limits or ImageLimits()
        self.allow_urls = allow_urls
        self.url_timeout_s = url_timeout_s
        self.url_private_ok = url_private_ok

    def __call__(self, row: Row, known_hash: str | None = None,
                 known_stamp: str | None = None) -> Decoded | Unchanged | Rejected:
        """`known_hash` / `known_stamp`: what the store holds for the row's point (None: no point)."""
        start = time.perf_counter()
        try:
            source = resolve_image(row.image, self.image_root, self.allow_urls)
            payload = row.payload()
            if isinstance(source, str):
                fetched = self._fetch(source, payload, known_hash, known_stamp)
                if fetched.data is None:  # 304 Not Modified: the stored point is this image's
                    return Unchanged(row, time.perf_counter() - start)
                data, stamp = fetched.data, url_stamp(payload, self.model_key, fetched.validators)
            else:
                stamp = source_stamp(source, payload, self.model_key)
                if stamp is not None and stamp == known_stamp and known_hash is not None:
                    return Unchanged(row, time.perf_counter() - start)  # the image is not even opened
                data = read_image_bytes(source, self.limits)
            digest = content_hash(data, payload, self.model_key)
            if digest == known_hash:  # same bytes, new size/mtime (touched, copied): store the new stamp
                return Unchanged(row, time.perf_counter() - start, None if stamp == known_stamp else stamp)
            pixels = fit(decode_image(data, self.limits, self.image_size), self.image_size)
        except Reject as e:
            return Rejected(row.row, row.id, str(e), time.perf_counter() - start)
        return Decoded(row, pixels, digest, time.perf_counter() - start, stamp)

    def _fetch(self, url: str, payload: dict[str, Any], known_hash: str | None, known_stamp: str | None):
        """The URL's body, or (a 304 to the validators of the stored stamp) none: unchanged."""
        since = url_validators(known_stamp, payload, self.model_key) if known_hash is not None else Validators()
        return fetch_url(url, self.limits.max_bytes, self.url_timeout_s, self.url_private_ok, since)
