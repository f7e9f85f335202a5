"""Previews: PNG bytes of generated query images, and the caches the query service keeps.

A preview is keyed by everything that determines its pixels: the encoded prompt, the versions
of the tokens in it, the seed, w, the backbone id and the sampler settings. The key is a hex
string (URL-safe: `/previews/<key>.png`). `PreviewCache` holds PNGs and GAIR outcomes in a
memory LRU, optionally backed by a directory that separate processes (web workers, CLI,
a generation worker) share; files are written atomically (temp file + rename), so a reader
never sees half a file. `prune` deletes files not written for a while (the web app's retention pass
runs it on a schedule); clear the directory when the backbone changes.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import torch
from PIL import Image

from engine.diffusion import to_pil

from .errors import QueryError

log = logging.getLogger(__name__)

KEY_LENGTH = 32
_KEY_RE = re.compile(rf"^[0-9a-f]{{{KEY_LENGTH}}}$")
V = TypeVar("V")


def cache_key(**parts: Any) -> str:
    """A stable hex key for JSON-serialisable parts (order of keyword arguments does not matter)."""
    blob = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:KEY_LENGTH]


def is_key(key: str) -> bool:
    return isinstance(key, str) and _KEY_RE.match(key) is not None


@dataclass(frozen=True)
class Preview:
    key: str  # stable hex id: the cache key, usable in a URL (/previews/<key>.png)
    png: bytes  # the PNG file: the images generated for one w, side by side
    w: float | None  # the composition weight it shows (None for a plain-text query)
    prompt: str  # the prompt it was generated from (parent words inserted)
    seed: int  # diffusion seed

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "w": self.w, "prompt": self.prompt, "seed": self.seed, "bytes": len(self.png)}


def to_png(images: torch.Tensor, size: int | None = None) -> bytes:
    """(k, 3, H, W) images in [0, 1] -> one PNG, the k images side by side (each resized to `size` if given)."""
    tiles = to_pil(images.detach().float().cpu())
    if size is not None:
        tiles = [t.resize((size, size), Image.BICUBIC) for t in tiles]
    sheet = Image.new("RGB", (sum(t.width for t in tiles), max(t.height for t in tiles)))
    x = 0
    for tile in tiles:
        sheet.paste(tile, (x, 0))
        x += tile.width
    out = io.BytesIO()
    sheet.save(out, format="PNG")
    return out.getvalue()


class LRU(Generic[V]):
    """A thread-safe least-recently-used map with hit/miss counters."""

    def __init__(self, max_items: int):
        self.max_items = max(1, int(max_items))
        self._items: OrderedDict[str, V] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: str) -> V | None:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                self.hits += 1
                return self._items[key]
            self.misses += 1
            return None

    def put(self, key: str, value: V) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.max_items:
                self._items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def __len__(self) -> int:
        return len(self._items)


class PreviewCache:
    """Preview PNGs and GAIR outcomes by key: a memory LRU, optionally backed by a shared directory."""

    def __init__(self, max_items: int = 256, directory: str | Path | None = None):
        self._png: LRU[bytes] = LRU(max_items)
        self._json: LRU[dict] = LRU(max_items * 4)
        self.directory = Path(directory) if directory is not None else None
        if self.directory is not None:
            try:
                self.directory.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise QueryError(f"cannot create the preview directory {self.directory}: {e}; set "
                                 "QueryConfig.preview_dir to a writable directory, or None for memory only") from e

    def get_png(self, key: str) -> bytes | None:
        """The PNG stored under `key`, from memory or disk; None if absent or `key` is not a preview key."""
        if not is_key(key):
            return None
        found = self._png.get(key)
        if found is None and self.directory is not None:
            found = self._read(self.directory / f"{key}.png")
            if found is not None:
                self._png.put(key, found)
        return found

    def put_png(self, key: str, png: bytes) -> None:
        self._check_key(key)
        self._png.put(key, png)
        if self.directory is not None:
            self._write(self.directory / f"{key}.png", png)

    def get_json(self, key: str) -> dict | None:
        if not is_key(key):
            return None
        found = self._json.get(key)
        if found is None and self.directory is not None:
            raw = self._read(self.directory / f"gair-{key}.json")
            if raw is not None:
                try:
                    found = json.loads(raw)
                except ValueError as e:
                    log.warning("ignoring unreadable cache file gair-%s.json (%s); it will be rewritten", key, e)
                    return None
                self._json.put(key, found)
        return found

    def put_json(self, key: str, data: dict) -> None:
        self._check_key(key)
        self._json.put(key, data)
        if self.directory is not None:
            self._write(self.directory / f"gair-{key}.json", json.dumps(data, sort_keys=True).encode())

    def clear_memory(self) -> None:
        """Forget what is held in memory (the shared directory, if any, is left as it is)."""
        self._png.clear()
        self._json.clear()

    def prune(self, older_than_s: float, now: float | None = None) -> int:
        """Delete the shared directory's PNGs, GAIR outcomes and leftover temporary files not written for
        `older_than_s` seconds (the retention pass, web/jobs/retention.py); returns how many. Memory is left as
        it is."""
        if self.directory is None:
            return 0
        cutoff = (time.time() if now is None else now) - older_than_s
        removed = 0
        for pattern in ("*.png", "gair-*.json", ".*.tmp"):
            for path in self.directory.glob(pattern):
                try:
                    if path.stat().st_mtime < cutoff:
                        path.unlink()
                        removed += 1
                except FileNotFoundError:  # another process pruned it first
                    continue
        return removed

    def stats(self) -> dict[str, int]:
        return {"png_items": len(self._png), "png_hits": self._png.hits, "png_misses": self._png.misses,
                "json_items": len(self._json), "json_hits": self._json.hits, "json_misses": self._json.misses}

    @staticmethod
    def _check_key(key: str) -> None:
        if not is_key(key):
            raise ValueError(f"cache key {key!r} is not {KEY_LENGTH} lower-case hex digits; make it with cache_key()")

    @staticmethod
    def _read(path: Path) -> bytes | None:
        try:
            return path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as e:
            log.warning("cannot read cache file %s (%s); treating it as a miss", path, e)
            return None

    @staticmethod
    def _write(path: Path, data: bytes) -> None:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            tmp.write_bytes(data)
            os.replace(tmp, path)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            log.warning("cannot write cache file %s (%s); the value stays in memory only", path, e)
