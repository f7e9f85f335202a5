"""Hostile and unusual images through both doors: the indexer's decoder (catalog photos) and the web app's
uploads (search by photo, JSON and multipart). Bad ones are refused with a reason (indexer) or a 4xx
with a code and message (web), never a 500, and without decoding a bomb; unusual but valid ones
(CMYK, palette, alpha, 16-bit, animated, wrong extension) are searched like any photo."""
from __future__ import annotations

import base64
import io
import time

import numpy as np
import pytest
from PIL import Image

from indexer.decode import Decoded, Decoder, Rejected, Row

from attack_kit import encode, png_header_only


def _noise(mode: str = "RGB", size=(48, 48), seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).convert(mode)


def _animated(fmt: str) -> bytes:
    frames = [_noise(seed=i) for i in range(3)]
    kw = {"save_all": True, "append_images": frames[1:], "duration": 100, "loop": 0}
    return encode(frames[0].convert("P") if fmt == "GIF" else frames[0], fmt, **kw)


def _palette_with_transparency() -> bytes:
    image = Image.new("P", (40, 40), 0)
    image.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    return encode(image, "PNG", transparency=0)


GOOD_PNG = encode(_noise(), "PNG")
GOOD_JPEG = encode(_noise(), "JPEG")

# name -> (file name, bytes, indexer: reason fragment or None = decoded, web: (status, error code) or 200)
CASES = {
    "truncated-png": ("t.png", GOOD_PNG[: len(GOOD_PNG) // 2], "truncated", (400, "not_an_image")),
    "truncated-jpeg": ("t.jpg", GOOD_JPEG[: len(GOOD_JPEG) // 2], "truncated", (400, "not_an_image")),
    "zero-byte": ("z.png", b"", "empty (0 bytes)", (400, "empty_file|missing_field")),  # JSON: "" = no image
    "text-named-png": ("x.png", b"just some text, not an image", "not an image", (400, "not_an_image")),
    "png-named-jpg": ("x.jpg", GOOD_PNG, None, 200),
    "header-bomb-20000": ("b.png", png_header_only(20_000, 20_000), "decompression bomb", (400, "not_an_image")),
    "header-bomb-wide": ("w.png", png_header_only(400_000, 100), "refused as a possible decompression bomb",
                         (400, "image_too_many_pixels")),
    "deflate-bomb-7000": ("d.png", encode(Image.new("L", (7000, 7000)), "PNG", optimize=True),
                          "refused as a possible decompression bomb", (400, "image_too_many_pixels")),
    "one-pixel": ("one.png", encode(Image.new("RGB", (1, 1), "red"), "PNG"), "smaller than 8", (400, "image_too_small")),
    "one-pixel-header": ("oh.png", png_header_only(1, 1), "smaller than 8", (400, "image_too_small")),
    "cmyk-jpeg": ("c.jpg", encode(_noise("CMYK"), "JPEG"), None, 200),
    "palette-transparent": ("p.png", _palette_with_transparency(), None, 200),
    "rgba": ("a.png", encode(_noise("RGBA"), "PNG"), None, 200),
    "grey-alpha": ("la.png", encode(_noise("LA"), "PNG"), None, 200),
    "grey-16bit": ("g16.png", encode(Image.fromarray(np.full((40, 40), 40000, np.uint16)), "PNG"), None, 200),
    "bilevel": ("1.png", encode(_noise("1"), "PNG"), None, 200),
    "animated-gif": ("a.gif", _animated("GIF"), None, (400, "unsupported_image")),
    "animated-webp": ("a.webp", _animated("WEBP"), None, 200),
    "animated-png": ("a.png", _animated("PNG"), None, 200),
    "tiff": ("t.tiff", encode(_noise(), "TIFF"), None, (400, "unsupported_image")),
    "svg": ("s.svg", b'<svg xmlns="http://www.w3.org/2000/svg" width="9000" height="9000"/>', "not an image",
            (400, "not_an_image")),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_indexer_decoder(name, tmp_path):
    file_name, data, reason, _ = CASES[name]
    (tmp_path / file_name).write_bytes(data)
    t0 = time.perf_counter()
    result = Decoder(tmp_path, 32, "k")(Row(row=1, id="r1", product_id="r1", title="t", image=file_name))
    assert time.perf_counter() - t0 < 5.0  # no bomb was decoded
    if reason is None:
        assert isinstance(result, Decoded), result
        assert result.pixels.shape == (32, 32, 3) and result.pixels.dtype == np.uint8
    else:
        assert isinstance(result, Rejected) and reason in result.reason, result


@pytest.mark.parametrize("name", sorted(CASES))
def test_web_search_by_photo(name, client):
    file_name, data, _, web = CASES[name]
    t0 = time.perf_counter()
    r = client.post("/api/search", json={"image": base64.b64encode(data).decode(), "limit": 3})
    token = client.get("/api/session").json["csrf_token"]
    page = client.post("/search/photo", data={"photo": (io.BytesIO(data), file_name), "csrf_token": token},
                       content_type="multipart/form-data", headers={"HX-Request": "true"})
    assert time.perf_counter() - t0 < 10.0
    if web == 200:
        assert r.status_code == 200, r.json
        assert len(r.json["results"]) == 3
        assert page.status_code == 200 and page.get_data(as_text=True).count('class="card"') >= 1
    else:
        status, codes = web
        assert r.status_code == status and r.json["error"]["code"] in codes.split("|"), r.json
        assert r.json["error"]["message"] and r.json["error"]["field"] in ("image", "query")
        html = page.get_data(as_text=True)
        assert page.status_code == status and any(f'data-code="{c}"' in html for c in codes.split("|")), html
