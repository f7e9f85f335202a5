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
    "header-bomb-20000": ("b.png", png_header_only(20_000, 20_000), "decompression bomb",
                          (400, "image_too_many_pixels")),
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
    # a strip far under every pixel limit: refused from its header by the one shared shape limit (aspect ratio)
    "tall-strip": ("s.png", encode(Image.new("RGB", (16, 4000), "red"), "PNG"), "aspect ratio over 20:1",
                   (400, "image_bad_shape")),
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
        assert page.status_code == 200 and page.get_data(as_text=True).count('<article class="card') >= 1
    else:
        status, codes = web
        assert r.status_code == status and r.json["error"]["code"] in codes.split("|"), r.json
        assert r.json["error"]["message"] and r.json["error"]["field"] in ("image", "query")
        html = page.get_data(as_text=True)
        assert page.status_code == status and any(f'data-code="{c}"' in html for c in codes.split("|")), html


# Over PIL's own guard (twice PIL.Image.MAX_IMAGE_PIXELS): PIL refuses it inside Image.open, before Coinage reads
# the size; and a file no image format knows (PIL names the in-memory buffer, "<_io.BytesIO object at 0x...>").
BOMB = png_header_only(20_000, 20_000)
TEXT = b"just some text, not an image"
PIL_WORDS = ("BytesIO", "0x", "178956970", "178,956,970", "exceeds limit", "decompression bomb DOS")


def _clean(message: str) -> str:
    assert not [w for w in PIL_WORDS if w in message], message
    return message


def test_refusals_name_the_file_and_coinage_limit_never_pil_internals(client, tmp_path):
    """Every door that opens a user's image: uploads (search by photo, the JSON API; concept uploads use the same
    check), the indexer's decoder, the concept registry and the trainer."""
    from engine.concepts import ConceptError, ConceptRegistry
    from indexer.decode import decode_image, ImageLimits, Reject
    from trainer.config import TrainingError
    from trainer.data import to_pil

    token = client.get("/api/session").json["csrf_token"]
    for data, code, needle in ((BOMB, "image_too_many_pixels", "over the limit of 25,000,000 pixels "
                                                                "(COINAGE_MAX_IMAGE_PIXELS)"),
                               (TEXT, "not_an_image", "not in an image format")):
        page = client.post("/search/photo", data={"photo": (io.BytesIO(data), "holiday.png"), "csrf_token": token},
                           content_type="multipart/form-data", headers={"HX-Request": "true"})
        html = _clean(page.get_data(as_text=True))
        assert page.status_code == 400 and f'data-code="{code}"' in html and "&#39;holiday.png&#39;" in html, html
        assert needle in html, html
        r = client.post("/api/search", json={"image": base64.b64encode(data).decode()})
        assert r.json["error"]["code"] == code and needle in _clean(r.json["error"]["message"]), r.json

    with pytest.raises(Reject) as e:
        decode_image(BOMB, ImageLimits())
    assert "the limit of 40,000,000 pixels (IndexerConfig.limits.max_pixels)" in _clean(str(e.value))
    registry = ConceptRegistry(tmp_path)
    for data, needle in ((BOMB, "more pixels than"), (TEXT, "not in an image format")):
        with pytest.raises(ConceptError, match=needle) as e:
            registry.register("<aurora>", "dress", [data] * 3, ["red", "dark"])
        _clean(str(e.value))
        (tmp_path / "photo.png").write_bytes(data)
        with pytest.raises(TrainingError, match=needle) as e:
            to_pil(tmp_path / "photo.png")
        assert str(tmp_path / "photo.png") in _clean(str(e.value))


def test_pixel_limits_stay_within_pils_guard():
    """Coinage's limits may not exceed PIL's guard, or PIL's message would speak for an image Coinage allows."""
    from web.settings import AppSettings, SettingsError
    from indexer.decode import ImageLimits

    with pytest.raises(SettingsError, match="COINAGE_MAX_IMAGE_PIXELS=200000000 must be from 1 to 89,478,485"):
        AppSettings.from_env({"COINAGE_MAX_IMAGE_PIXELS": "200000000"})
    with pytest.raises(ValueError, match="ImageLimits.max_pixels"):
        ImageLimits(max_pixels=10**9)


# The probe's strip: 16 x 1,560,000 pixels (24,960,000: under the 25,000,000-pixel upload limit), about 25 KB.
STRIP = (16, 1_560_000)


def test_the_probes_tall_strip_is_refused_from_its_header_by_the_upload_check():
    from web.settings import LimitSettings
    from web.uploads import check_image
    from web.errors import ApiError

    data = encode(Image.new("L", STRIP, 200), "PNG")
    with pytest.raises(ApiError) as e:
        check_image("strip.png", data, LimitSettings())
    assert (e.value.status, e.value.code) == (400, "image_bad_shape")
    assert "'strip.png' is 16x1560000 pixels; the longest side may be at most 16,384" in e.value.message


def test_uploads_and_the_indexer_share_one_shape_limit():
    from engine.image_files import SHAPE
    from indexer.decode import ImageLimits
    from web.settings import LimitSettings

    assert LimitSettings().shape is SHAPE and ImageLimits().shape is SHAPE


def test_fit_resamples_no_more_than_the_output_needs(monkeypatch):
    """`fit` on a long strip (a stored upload, a catalog photo) resizes only the box under the centre square: no
    intermediate image much larger than the output is ever asked for."""
    from engine import preprocess

    asked: list[tuple[int, int]] = []
    resize = Image.Image.resize

    def guarded(self, size, *args, **kwargs):
        asked.append(tuple(size))
        assert size[0] * size[1] <= preprocess.MAX_STRETCH * 32 * 32, f"resize to {size} for a 32x32 output"
        return resize(self, size, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "resize", guarded)
    ramp = np.repeat(np.linspace(0, 255, 60_000).astype(np.uint8)[:, None], 16, axis=1)  # dark top, light bottom
    strip = Image.fromarray(ramp, "L").convert("RGB")
    pixels = preprocess.fit(strip, 32)
    assert pixels.shape == (32, 32, 3) and asked == [(32, 32)]
    assert np.abs(pixels.astype(int) - 127).max() <= 1  # the centre of the strip (rows 29,992 to 30,008)


def test_fit_gives_the_same_pixels_as_resize_then_crop_for_photos():
    """Below MAX_STRETCH the whole image is resized then cropped, as before: stored vectors stay valid."""
    from engine.preprocess import fit

    rng = np.random.default_rng(1)
    for w, h in ((640, 480), (33, 97), (225, 300), (120, 470)):
        image = Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
        scale = 32 / min(w, h)
        whole = image.resize((max(32, round(w * scale)), max(32, round(h * scale))), Image.BICUBIC)
        left, top = (whole.width - 32) // 2, (whole.height - 32) // 2
        assert np.array_equal(fit(image, 32), np.asarray(whole.crop((left, top, left + 32, top + 32))))
