"""Opening user image files with PIL: the errors it raises, said in Coinage's words, and the pixel limit.

Every door that opens a user's image (uploads, search by photo, catalog photos, concept photos) names the file
and Coinage's own limit when it refuses one, never PIL's `<_io.BytesIO object at 0x...>` or PIL's bomb limit.
PIL's guard (PIL.Image.MAX_IMAGE_PIXELS: a warning above it, an error above twice it) fires inside
`Image.open`, before a caller can read the size; `check_pixel_limit` keeps Coinage's limits at or below it, so
a refusal by PIL's guard always means "over Coinage's limit" too.

`ImageShape` is the one shape limit both doors share (uploads: web.settings.LimitSettings.shape; catalog photos:
indexer.decode.ImageLimits.shape): a longest side and an aspect ratio, so a 16 x 1,560,000 strip that passes
any pixel-count limit is refused from its header.
"""
from __future__ import annotations

import re
import struct
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError


def pil_error(e: BaseException, pixel_limit: str | None = None) -> str:
    """Why PIL could not open an image, in words that name the problem (callers name the file). `pixel_limit`
    names the limit that applies, e.g. "the limit of 25,000,000 pixels (COINAGE_MAX_IMAGE_PIXELS)"; None: the
    most any Coinage door opens."""
    if is_bomb(e):
        pixel_limit = pixel_limit or f"the most Coinage opens ({Image.MAX_IMAGE_PIXELS:,} pixels)"
        return f"it has more pixels than {pixel_limit}: refused unopened, as a possible decompression bomb"
    if isinstance(e, UnidentifiedImageError):
        return "its content is not in an image format PIL reads"
    text = re.sub(r"<_io\.\w+ object at 0x[0-9a-fA-F]+>", "the file", str(e))
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def is_bomb(e: BaseException) -> bool:
    """PIL's decompression-bomb guard refused the image (before its size could be read)."""
    return isinstance(e, (Image.DecompressionBombError, Image.DecompressionBombWarning))


def pil_open_errors() -> tuple[type[BaseException], ...]:
    """What PIL raises for a file that is no readable image (malformed headers raise many types), the bomb
    guard included (its warning too, where warnings are errors)."""
    return (OSError, ValueError, SyntaxError, EOFError, struct.error, Image.DecompressionBombError,
            Image.DecompressionBombWarning)


def check_pixel_limit(value: int, name: str) -> None:
    """A Coinage pixel limit must be positive and at most PIL's own guard (see the module docstring)."""
    if not 0 < value <= Image.MAX_IMAGE_PIXELS:
        raise ValueError(f"{name}={value} must be from 1 to {Image.MAX_IMAGE_PIXELS:,} pixels (PIL refuses larger "
                         "images unopened as possible decompression bombs)")


@dataclass(frozen=True)
class ImageShape:
    """Image proportions every door accepts, checked from the header before decoding."""

    max_side: int = 16_384  # longest side in pixels
    max_aspect: float = 20.0  # longest side / shortest side (a panorama is about 4; a product strip rarely 10)

    def __post_init__(self) -> None:
        if self.max_side < 1 or not self.max_aspect >= 1:
            raise ValueError(f"ImageShape(max_side={self.max_side}, max_aspect={self.max_aspect}): the side must "
                             "be >= 1 pixel and the aspect ratio >= 1")

    def problem(self, width: int, height: int) -> str | None:
        """Why a width x height image is refused (a phrase for the caller to prefix with the file), or None."""
        if max(width, height) > self.max_side:
            return (f"is {width}x{height} pixels; the longest side may be at most {self.max_side:,} pixels: "
                    "scale it down")
        if max(width, height) > self.max_aspect * max(min(width, height), 1):
            return (f"is {width}x{height} pixels, an aspect ratio over {self.max_aspect:g}:1; crop it to the "
                    "product")
        return None


SHAPE = ImageShape()  # the default both doors use
