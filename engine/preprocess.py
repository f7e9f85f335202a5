"""One preprocessing path for every photo a model sees: catalog photos (indexer), search by photo, concept photos
(registry, attribute suggestion, trainer).

`upright_rgb` applies the EXIF orientation (a phone photo is embedded the way it is shown), composites
transparency on white and converts to 8-bit RGB; `fit` resizes the shortest side (bicubic) and centre-crops to
the model's square. engine.images.ImageEncoder runs both on every PIL image it encodes, and the indexer runs the
same two on the pixels it hands to its embedders, so a photo gives one vector through every door.
"""
from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from engine.errors import ImageError

log = logging.getLogger(__name__)

# Modes that carry transparency; their transparent pixels become white, not whatever colour lies underneath.
ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
INTEGER_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N")
MAX_STRETCH = 4  # `fit` resizes an image whole up to this aspect ratio, beyond it only the centre square's box


def upright_rgb(image: Image.Image) -> Image.Image:
    """The image as shown: EXIF orientation applied, transparency on white, RGB. A new image (the caller may close
    the file it came from); loading errors are PIL's (callers name the file), a float image is an ImageError."""
    image.load()
    try:
        image = ImageOps.exif_transpose(image)
    except Exception as e:  # noqa: BLE001 - a malformed EXIF block is no reason to drop good pixels
        log.warning("unreadable EXIF orientation (%s: %s); keeping the image as stored", type(e).__name__, e)
        image = image.copy()
    return to_rgb(image)


def open_upright(source: str | Path | bytes | bytearray) -> Image.Image:
    """An image file (a path or its bytes) as shown: `upright_rgb`. PIL's errors (engine.image_files.pil_open_errors)
    and ImageError pass through, for the caller to name the file."""
    with Image.open(io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source) as image:
        return upright_rgb(image)


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB with transparency composited on white; CMYK, palette, grey and 16-bit images converted."""
    if (image.mode == "P" and "transparency" in image.info) or image.mode in ALPHA_MODES:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if image.mode in INTEGER_MODES:
        arr = np.asarray(image, dtype=np.float64)
        # 16-bit data -> 8 bits; a 32-bit 'I' image holding 8-bit values is kept as is
        scale = 257.0 if image.mode.startswith("I;16") or arr.max(initial=0) > 255 else 1.0
        return Image.fromarray(np.clip(arr / scale, 0, 255).astype(np.uint8), "L").convert("RGB")
    if image.mode == "F":
        raise ImageError("floating-point images are not supported; export it as 8-bit JPEG or PNG")
    return image.convert("RGB") if image.mode != "RGB" else image


def fit(image: Image.Image, size: int) -> np.ndarray:
    """An RGB image -> (size, size, 3) uint8: shortest side to `size` (bicubic), centre crop.

    The work is bounded by the output, not the input. An image at most MAX_STRETCH times longer than wide (any
    photo) is resized whole, then cropped; a longer strip has only the source box under the centre square
    resampled (PIL's `resize(box=...)`: the same square up to sub-pixel phase), so a 16 x 1,560,000 strip costs
    what a 16 x 16 image does, not a 224 x 21,840,000 intermediate."""
    w, h = image.size
    scale = size / min(w, h)
    out_w, out_h = max(size, round(w * scale)), max(size, round(h * scale))
    left, top = (out_w - size) // 2, (out_h - size) // 2
    if max(out_w, out_h) > MAX_STRETCH * size:
        sx, sy = w / out_w, h / out_h  # source pixels per output pixel
        box = (left * sx, top * sy, (left + size) * sx, (top + size) * sy)
        return np.asarray(image.resize((size, size), Image.BICUBIC, box=box), dtype=np.uint8)
    image = image.resize((out_w, out_h), Image.BICUBIC)
    return np.asarray(image.crop((left, top, left + size, top + size)), dtype=np.uint8)


def model_pixels(image: Image.Image, size: int) -> np.ndarray:
    """Any PIL image -> the (size, size, 3) uint8 pixels a model sees: `upright_rgb`, then `fit`."""
    return fit(upright_rgb(image), size)
