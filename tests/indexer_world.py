"""What the indexer tests share: the demo world (16 products x 6 photos, world.catalog), a private copy of its
catalog, the ONNX cache and embedder of the tiny backbone, the store per backend, and small helpers.

Test modules import the fixtures by name (`from indexer_world import catalog, world, ...`); pytest finds them
in the importing module.
"""
from __future__ import annotations

import io
import json
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.store import StoreConfig
from indexer import IndexerConfig
from indexer.decode import Row
from indexer.embed import make_embedder

ROOT = Path(__file__).resolve().parents[1]
ROWS = 96  # 16 products x 6 photos


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    from world.catalog import main as write_world

    out = tmp_path_factory.mktemp("world")
    assert write_world(["--out", str(out), "--products", "16", "--photos", "6", "--heldout", "8"]) == 0
    return out


@pytest.fixture
def catalog(world, tmp_path) -> Path:
    """A private copy of the demo catalog (tests modify it)."""
    return copy_world(world, tmp_path / "cat")


def copy_world(world: Path, to: Path) -> Path:
    """A copy of the demo world at `to`; returns its catalog.jsonl."""
    shutil.copytree(world, to)
    return to / "catalog.jsonl"


@pytest.fixture(scope="module")
def onnx_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("onnx")


@pytest.fixture(scope="module")
def embedder(tiny, onnx_cache):
    return make_embedder(tiny, onnx=True, cache_dir=onnx_cache)


@pytest.fixture
def store_cfg(store_config, tmp_path) -> StoreConfig:
    """The test's store, once per backend; persistent, since the indexer reopens it from its config."""
    return store_config(tmp_path / "store", persistent=True)


def config(catalog: Path, tmp_path: Path, onnx_cache: Path, store: StoreConfig, **kw) -> IndexerConfig:
    values = dict(catalog=catalog, backbone="tiny-random", store=store,
                  batch_size=8, workers=2, onnx_cache=onnx_cache, rejects_path=tmp_path / "rejects.jsonl",
                  progress_bar=False, device="cpu")
    values.update(kw)
    return IndexerConfig(**values)


def rejects(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def snapshot(store, collection: str) -> dict[str, tuple[np.ndarray, dict]]:
    ids = store.scroll_ids(collection)
    return {p.id: (p.vector, p.payload) for p in store.retrieve(collection, ids, with_vectors=True)}


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A valid PNG header announcing width x height, with almost no data: a decompression bomb."""
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def row(image: str, rid: str = "x-1", **kw) -> Row:
    return Row(row=1, id=rid, product_id=rid, title="a thing", image=image, **kw)
