"""Scene backgrounds, one static texture per (context, image size), built with numpy.

Each texture is `size + 2 * margin` pixels square so a photo can take a shifted, optionally
mirrored window of it (background jitter) without redrawing. Textures use a fixed per-context
seed: they are part of the world's look, not of a world seed. Feature sizes scale with `size`.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Callable

import numpy as np

from .vocab import CONTEXTS

Texture = np.ndarray  # float32, (N, N, 3), values in 0..255


def margin(size: int) -> int:
    """Pixels of slack on every side of the window for background shifts."""
    return max(2, size // 8)


def _grid(n: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(y, x) coordinates in units of the image side; the visible window starts at margin."""
    m = margin(size)
    idx = (np.arange(n, dtype=np.float32) - m) / size
    return idx[:, None], idx[None, :]


def _mix(a: tuple[float, float, float], b: tuple[float, float, float], t: np.ndarray) -> Texture:
    a_, b_ = np.asarray(a, np.float32), np.asarray(b, np.float32)
    return a_ + (b_ - a_) * t[..., None].astype(np.float32)


def _full(n: int, rgb: tuple[float, float, float]) -> Texture:
    return np.broadcast_to(np.asarray(rgb, np.float32), (n, n, 3)).copy()


def _blocky_noise(rng: np.random.Generator, n: int, cell: int) -> np.ndarray:
    """Uniform noise in cells of `cell` pixels, shape (n, n)."""
    k = n // cell + 2
    return np.kron(rng.random((k, k)), np.ones((cell, cell)))[:n, :n].astype(np.float32)


def studio(n: int, size: int, rng: np.random.Generator) -> Texture:
    y, x = _grid(n, size)
    t = np.clip(y, 0, 1) + 0 * x
    img = _mix((226, 226, 230), (182, 182, 188), t)
    vignette = ((x - 0.5) ** 2 + (y - 0.45) ** 2)
    return img - 30.0 * vignette[..., None]


def beach(n: int, size: int, rng: np.random.Generator) -> Texture:
    y, x = _grid(n, size)
    y2 = y + 0 * x
    sky = _mix((120, 185, 240), (190, 225, 248), np.clip(y2 / 0.36, 0, 1))
    waves = 0.5 + 0.5 * np.sin(x * 40 + np.sin(y * 90) * 1.5 + y * 140)
    sea = _mix((30, 105, 175), (70, 150, 205), waves * np.clip((y2 - 0.36) / 0.2, 0, 1))
    sand = _mix((236, 212, 158), (214, 186, 128), _blocky_noise(rng, n, max(1, size // 32)) * 0.8)
    wet = np.clip(1 - np.abs(y2 - 0.58) / 0.03, 0, 1)
    sand = sand * (1 - 0.12 * wet[..., None])
    return np.where((y2 < 0.36)[..., None], sky, np.where((y2 < 0.56)[..., None], sea, sand))


def brick_wall(n: int, size: int, rng: np.random.Generator) -> Texture:
    bh, bw = max(4, size // 8), max(8, size // 4)
    mortar = max(1, size // 40)
    rows = np.arange(n)[:, None] // bh
    shifted = np.arange(n)[None, :] + (rows % 2) * (bw // 2)
    cols = shifted // bw
    tone = rng.uniform(0.82, 1.12, size=(n // bh + 2, n // bw + 3)).astype(np.float32)
    brick = np.asarray((168, 66, 46), np.float32) * tone[rows, cols][..., None]
    is_mortar = ((np.arange(n)[:, None] % bh) < mortar) | ((shifted % bw) < mortar)
    return np.where(is_mortar[..., None], np.asarray((206, 198, 186), np.float32), brick)


def grass(n: int, size: int, rng: np.random.Generator) -> Texture:
    streaks = np.repeat(rng.random((n // 3 + 1, n)), 3, axis=0)[:n].astype(np.float32)
    fine = rng.random((n, n)).astype(np.float32)
    t = 0.7 * streaks + 0.3 * fine
    img = _mix((46, 112, 30), (128, 190, 70), t)
    y, _ = _grid(n, size)
    return img * (0.9 + 0.15 * np.clip(y, 0, 1))[..., None]


def wooden_table(n: int, size: int, rng: np.random.Generator) -> Texture:
    y, x = _grid(n, size)
    plank_h = 0.22
    plank = np.floor(y / plank_h + 0 * x).astype(int)
    tone = rng.uniform(0.85, 1.1, size=64).astype(np.float32)[plank % 64]
    grain = 0.5 + 0.5 * np.sin(y * 150 + 2.2 * np.sin(x * 9 + plank * 1.7))
    img = _mix((182, 124, 70), (140, 88, 46), grain) * tone[..., None]
    seam = (np.mod(y, plank_h) < 1.5 / size) + 0 * x
    return np.where(seam[..., None] > 0, np.asarray((84, 50, 26), np.float32), img)


def snow(n: int, size: int, rng: np.random.Generator) -> Texture:
    y, x = _grid(n, size)
    y2 = y + 0 * x
    sky = _mix((178, 192, 214), (212, 222, 236), np.clip(y2 / 0.42, 0, 1))
    ground = _mix((248, 250, 254), (222, 230, 244), np.clip(0.5 + 0.5 * np.sin(x * 8 + y * 20), 0, 1) * 0.6)
    img = np.where((y2 < 0.42 + 0.04 * np.sin(x * 11))[..., None], sky, ground)
    flakes = rng.random((n, n)) < 0.035
    return np.where(flakes[..., None], np.asarray((255, 255, 255), np.float32), img)


def night_city(n: int, size: int, rng: np.random.Generator) -> Texture:
    y, x = _grid(n, size)
    img = _mix((10, 14, 40), (40, 36, 78), np.clip(y + 0 * x, 0, 1))
    bw = max(4, size // 8)
    n_b = n // bw + 1
    heights = rng.uniform(0.15, 0.65, size=n_b)  # building tops, units of the side from the top
    col = (np.arange(n) // bw)[None, :]
    top = heights[col]
    building = (y > top)
    shade = rng.uniform(0.8, 1.2, size=n_b)[col]
    bld = np.asarray((34, 36, 52), np.float32) * shade[..., None]
    win = max(1, size // 32)
    lit = rng.random((n // win + 1, n // win + 1)) < 0.28
    wy, wx = np.arange(n)[:, None] // win, np.arange(n)[None, :] // win
    window = lit[wy, wx] & (wy % 2 == 1) & (wx % 2 == 1) & (y > top + 0.03)
    img = np.where(building[..., None], bld, img)
    img = np.where(window[..., None], np.asarray((246, 212, 110), np.float32), img)
    ground = (y > 0.86) + 0 * x
    return np.where(ground[..., None] > 0, np.asarray((22, 22, 28), np.float32), img)


def pool(n: int, size: int, rng: np.random.Generator) -> Texture:
    y, x = _grid(n, size)
    c1 = np.abs(np.sin(x * 23 + 2.0 * np.sin(y * 17)))
    c2 = np.abs(np.sin(y * 21 + 2.0 * np.sin(x * 19)))
    caustic = np.clip(1.0 - np.minimum(c1, c2) * 5, 0, 1)
    water = _mix((22, 150, 196), (60, 186, 222), np.clip(y + 0 * x, 0, 1))
    water = water + 110 * caustic[..., None] * np.asarray((0.7, 0.6, 0.3), np.float32)
    tile = max(4, size // 8)
    deck = _full(n, (230, 224, 208))
    seam = ((np.arange(n)[:, None] % tile) == 0) | ((np.arange(n)[None, :] % tile) == 0)
    deck = np.where(seam[..., None], np.asarray((180, 174, 160), np.float32), deck)
    edge = (y < 0.16) + 0 * x
    return np.where(edge[..., None] > 0, deck, water)


PAINTERS: dict[str, Callable[[int, int, np.random.Generator], Texture]] = {
    "studio": studio, "beach": beach, "brick_wall": brick_wall, "grass": grass,
    "wooden_table": wooden_table, "snow": snow, "night_city": night_city, "pool": pool,
}


@lru_cache(maxsize=64)
def texture(context: str, size: int) -> Texture:
    """The static background of `context` for `size`-pixel photos (read-only, cached)."""
    seed = sorted(CONTEXTS).index(context) + 1000
    n = size + 2 * margin(size)
    # rounded to whole levels, so last-bit float differences between CPUs cannot reach the pixels
    img = np.round(np.clip(PAINTERS[context](n, size, np.random.default_rng(seed)), 0, 255)).astype(np.float32)
    img.setflags(write=False)
    return img
