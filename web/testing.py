"""Small, fast set-ups for tests of the web app (and for trying it by hand): a tiny demo catalog, indexed
with the tiny-random backbone, and AppSettings that keep everything under one temporary directory.

    root = tmp_path
    build_catalog(root)                              # 24 products x 6 photos at 32 px, indexed
    app = create_app(tiny_settings(root, password="pw"))
"""
from __future__ import annotations

import io
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image
from werkzeug.security import generate_password_hash

from engine.query import QueryConfig
from engine.store import StoreConfig
from indexer import IndexerConfig, run_index
from trainer import TrainConfig
from web.settings import AdminSettings, AppSettings, LimitSettings, RateLimitSettings, WorkerSettings
from world.catalog import main as catalog_main

TINY_TRAIN = dict(steps=3, batch_size=2, generated_negatives=2, checkpoint_every=0, num_attributes=4, lr=1e-2)


def build_catalog(root: Path, products: int = 24, photos: int = 6, heldout: int = 4, index: bool = True,
                  backbone: str = "tiny-random", size: int = 32) -> Path:
    """Write the demo world's catalog under root/world and (optionally) index it into root/store with `backbone`."""
    out = root / "world"
    if catalog_main(["--out", str(out), "--products", str(products), "--photos", str(photos), "--heldout",
                     str(heldout), "--size", str(size)]) != 0:
        raise RuntimeError(f"could not write the tiny catalog to {out}")
    if index:
        run_index(IndexerConfig(catalog=out / "catalog.jsonl", backbone=backbone,
                                store=StoreConfig(path=str(root / "store")), onnx=False, progress_bar=False,
                                device="cpu", rejects_path=root / "indexer" / "rejects-build.jsonl"))
    return out / "catalog.jsonl"


def tiny_settings(root: Path, password: str = "secret-pw", worker: str = "off", **overrides) -> AppSettings:
    """Settings for tests: tiny-random on CPU, PyTorch text encoder, 2-step previews, tiny training runs."""
    settings = AppSettings(
        data_dir=root, backbone="tiny-random", device="cpu", onnx=False, secret_key="test-secret-key-0123456789",
        query=QueryConfig(text_runtime="torch", steps=2, weights=(0.0, 0.5, 1.0)),
        train=TrainConfig(**TINY_TRAIN),
        admin=AdminSettings(user="admin", password_hash=generate_password_hash(password, method="pbkdf2:sha256:1000")),
        limits=LimitSettings(results_per_page=6, max_queued_previews_per_client=32),  # one address: see ratelimit
        worker=WorkerSettings(mode=worker, poll_s=0.05, heartbeat_s=0.2, stale_after_s=5.0),
        # a test module's searches all come from one address: limits its tests do not reach (their own tests set them)
        ratelimit=RateLimitSettings(search="100000 per minute", previews="100000 per minute"),
    )
    for key, value in overrides.items():
        setattr(settings, key, value)
    return settings


def png_bytes(seed: int = 0, size: int = 32, colour: tuple[int, int, int] | None = None) -> bytes:
    """A small PNG: a coloured square on noise (deterministic)."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 80, (size, size, 3), dtype=np.uint8)
    c = colour or tuple(int(v) for v in rng.integers(80, 256, 3))
    pixels[size // 4: 3 * size // 4, size // 4: 3 * size // 4] = c
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def with_limits(settings: AppSettings, **limits) -> AppSettings:
    settings.limits = replace(settings.limits, **limits)
    return settings


def api_login(client, password: str, user: str = "admin"):
    """Log `client` (a Flask test client) in through the JSON API as an admin; later requests send the CSRF token
    the login rotated. Returns the login response."""
    token = client.get("/api/session").json["csrf_token"]
    r = client.post("/api/login", json={"user": user, "password": password}, headers={"X-CSRF-Token": token})
    if r.status_code == 200:
        client.environ_base["HTTP_X_CSRF_TOKEN"] = r.json["csrf_token"]  # rotated at login
    return r
