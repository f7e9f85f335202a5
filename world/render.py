"""Render a `PhotoSpec` to a small RGB image: a pure, deterministic function of the spec.

Pipeline: the product is drawn once per (product, size) at 2x and box-downsampled
(anti-aliasing), kept premultiplied and cached; each photo then poses it with one affine
warp, lays it with a soft drop shadow on a shifted window of the cached context texture,
and applies brightness/contrast. Costs well under 2 ms per 64x64 image on one CPU core.
"""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw

from .backgrounds import margin, texture
from .errors import WorldError
from .silhouettes import GLYPHS, SILHOUETTES, Ellipse, Line, Poly, Prim, Ring, RRect
from .specs import PhotoSpec, ProductSpec
from .vocab import COLOURS

MIN_SIZE = 32  # below this the ~10 px emblem of a 64 px photo is no longer drawable
SUPERSAMPLE = 2  # products are drawn at this multiple of the output size


def _draw(draw: ImageDraw.ImageDraw, prim: Prim, scale: float, fill: int | tuple[int, int, int],
          to_px=None) -> None:
    """Draw one primitive; `scale` converts widths and radii to pixels, `to_px` maps points
    (default: multiply by `scale`)."""
    to_px = to_px or (lambda p: (p[0] * scale, p[1] * scale))
    if isinstance(prim, Poly):
        draw.polygon([to_px(p) for p in prim.points], fill=fill)
    elif isinstance(prim, Ellipse):
        (x0, y0), (x1, y1) = to_px(prim.box[:2]), to_px(prim.box[2:])
        draw.ellipse((min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)), fill=fill)
    elif isinstance(prim, Ring):
        (x0, y0), (x1, y1) = to_px(prim.box[:2]), to_px(prim.box[2:])
        w = max(1, round(prim.width * scale))
        draw.ellipse((min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)), outline=fill, width=w)
    elif isinstance(prim, RRect):
        (x0, y0), (x1, y1) = to_px(prim.box[:2]), to_px(prim.box[2:])
        draw.rounded_rectangle((x0, y0, x1, y1), radius=prim.radius * scale, fill=fill)
    elif isinstance(prim, Line):
        draw.line([to_px(p) for p in prim.points], fill=fill, width=max(1, round(prim.width * scale)),
                  joint="curve")
    else:  # pragma: no cover - the Prim union is closed
        raise TypeError(f"unknown primitive {prim!r}")


@lru_cache(maxsize=32)
def pattern_mask(pattern: str, n: int) -> np.ndarray:
    """`n`x`n` read-only bool mask (True = pattern colour) of a pattern in the product's frame."""
    y, x = np.mgrid[0:n, 0:n].astype(np.float32) / n
    if pattern == "solid":
        m = np.zeros((n, n), bool)
    elif pattern == "striped":
        m = np.mod(x, 0.11) < 0.055
    elif pattern == "dotted":
        row = np.floor(y / 0.11)
        xs = x + 0.055 * np.mod(row, 2)
        dx, dy = np.mod(xs, 0.11) - 0.055, np.mod(y, 0.11) - 0.055
        m = dx * dx + dy * dy < 0.028 ** 2
    elif pattern == "checked":
        m = (np.floor(x / 0.09) + np.floor(y / 0.09)) % 2 == 1
    elif pattern == "zigzag":
        tri = np.abs(np.mod(x, 0.12) / 0.06 - 1.0)  # 0..1 triangle wave along x
        m = np.mod(y + 0.045 * tri, 0.13) < 0.05
    else:
        raise WorldError(f"no drawing for pattern {pattern!r}; add it to world.render.pattern_mask")
    m.setflags(write=False)
    return m


@lru_cache(maxsize=512)
def _fabric(pattern: str, colour: str, pattern_colour: str | None, n: int) -> Image.Image:
    """The body material: main colour with the pattern in the pattern colour, `n`x`n` RGB."""
    base = np.empty((n, n, 3), np.uint8)
    base[...] = COLOURS[colour]
    if pattern_colour is not None:
        base[pattern_mask(pattern, n)] = COLOURS[pattern_colour]
    return Image.fromarray(base, "RGB")


def _edge(alpha: np.ndarray) -> np.ndarray:
    """Pixels inside `alpha` with a 4-neighbour outside it (a 1 px inner outline)."""
    inside = alpha > 127
    eroded = inside.copy()
    eroded[1:, :] &= inside[:-1, :]
    eroded[:-1, :] &= inside[1:, :]
    eroded[:, 1:] &= inside[:, :-1]
    eroded[:, :-1] &= inside[:, 1:]
    return inside & ~eroded


def _outline_colour(colour: str) -> tuple[int, int, int]:
    r, g, b = COLOURS[colour]
    if 0.3 * r + 0.59 * g + 0.11 * b < 60:
        return (96, 96, 104)
    return (int(r * 0.5), int(g * 0.5), int(b * 0.5))


@lru_cache(maxsize=4096)
def product_layer(product: ProductSpec, size: int) -> Image.Image:
    """The product in its canonical pose on a transparent `size`x`size` canvas, mode "RGBa"."""
    n = size * SUPERSAMPLE
    sil = SILHOUETTES[product.category](*product.shape)
    main, trim = COLOURS[product.colour], COLOURS[product.trim_colour]
    outline = _outline_colour(product.colour)

    alpha = Image.new("L", (n, n), 0)
    adraw = ImageDraw.Draw(alpha)
    for prim in sil.body:
        _draw(adraw, prim, n, 255)
    rgb = _fabric(product.pattern, product.colour, product.pattern_colour, n).copy()
    draw = ImageDraw.Draw(rgb)
    for prim in sil.trim:
        _draw(draw, prim, n, trim)
        _draw(adraw, prim, n, 255)
    # the emblem: a plain halo disc in the main colour, the glyph in the trim colour on top
    cx, cy = sil.anchors[product.emblem_pos]
    half = sil.emblem_size / 2
    _draw(draw, Ellipse((cx - half * 1.3, cy - half * 1.3, cx + half * 1.3, cy + half * 1.3)), n, main)
    inks = {"fg": trim, "bg": main}
    for prim, ink in GLYPHS[product.emblem]:
        _draw(draw, prim, half * n, inks[ink], to_px=lambda p: ((cx + p[0] * half) * n, (cy + p[1] * half) * n))
    for prim in sil.details:
        _draw(draw, prim, n, outline)
    rgb.putalpha(alpha)
    small = np.array(rgb.convert("RGBa").reduce(SUPERSAMPLE))
    # outline at output resolution: blend the rim pixels halfway to the outline colour
    edge = _edge(small[..., 3])
    rim = small[edge].astype(np.float32)
    rim[:, :3] = 0.5 * rim[:, :3] + 0.5 * np.asarray(outline, np.float32) * rim[:, 3:] / 255.0
    small[edge] = rim.astype(np.uint8)
    return Image.frombuffer("RGBa", (size, size), small.tobytes(), "raw", "RGBa", 0, 1)


def _affine(photo: PhotoSpec, size: int) -> tuple[float, ...]:
    """Output-to-input affine coefficients for PIL: mirror, rotate, scale about the centre, shift."""
    c = size / 2.0
    tx, ty = photo.offset[0] * size, photo.offset[1] * size
    t = math.radians(photo.rotation)
    cos, sin = math.cos(t) / photo.scale, math.sin(t) / photo.scale
    f = -1.0 if photo.flip else 1.0
    # input = F R(t)^-1 (out - c - t) / s + c, with y pointing down so +rotation is counter-clockwise
    a, b = f * cos, -f * sin
    d, e = sin, cos
    ox, oy = c + tx, c + ty
    return (a, b, c - a * ox - b * oy, d, e, c - d * ox - e * oy)


def _background(photo: PhotoSpec, size: int) -> np.ndarray:
    tex = texture(photo.context, size)
    span = 2 * margin(size)
    x0, y0 = round(photo.bg_shift[0] * span), round(photo.bg_shift[1] * span)
    win = tex[y0:y0 + size, x0:x0 + size]
    return win[:, ::-1] if photo.bg_flip else win


def render_array(photo: PhotoSpec, size: int = 64) -> np.ndarray:
    """`render` as a (size, size, 3) uint8 array (no PIL round trip for training loops)."""
    if size < MIN_SIZE:
        raise WorldError(f"size={size} is too small to show the emblem; use size >= {MIN_SIZE}")
    layer = product_layer(photo.product, size)
    posed = layer.transform((size, size), Image.Transform.AFFINE, _affine(photo, size),
                            resample=Image.Resampling.BILINEAR)
    arr = np.asarray(posed, dtype=np.float32)
    fg, a = arr[..., :3], arr[..., 3:] * (1.0 / 255.0)
    # drop shadow: the alpha, shifted down-right by ~2% of the side, darkens the background
    s = max(1, size // 40)
    keep = 1.0 - a
    keep[s:, s:] -= 0.35 * a[:-s, :-s] * keep[s:, s:]
    # brightness b and contrast c: ((x - 127.5) * c + 127.5) * b  ==  x * k + m
    k = photo.contrast * photo.brightness
    m = 127.5 * photo.brightness * (1.0 - photo.contrast) + 0.5
    out = (_background(photo, size) * keep + fg) * k + m
    return np.clip(out, 0, 255).astype(np.uint8)


def render(photo: PhotoSpec, size: int = 64) -> Image.Image:
    """Render `photo` as a `size`x`size` RGB image; same spec and size give the same pixels."""
    return Image.fromarray(render_array(photo, size), "RGB")
