"""Opening user image files with PIL: the errors it raises, said in Coinage's words, and the pixel limit.

Every door that opens a user's image (uploads, search by photo, catalog photos, concept photos) names the file
and Coinage's own limit when it refuses one, never PIL's `<_io.BytesIO object at 0x...>` or PIL's bomb limit.
PIL's guard (PIL.Image.MAX_IMAGE_PIXELS: a warning above it, an error above twice it) fires inside
`Image.open`, before a caller can read the size; `check_pixel_limit` keeps Coinage's limits at or below it, so
a refusal by PIL's guard always means "over Coinage's limit" too.
"""
from __future__ import annotations

import re
import struct

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
