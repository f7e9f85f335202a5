"""Catalog ingestion, the images: decoding, refusals, modes and orientation, the embedders against the engine's
encoder, JPEG draft decoding.

Everything runs on the tiny backbone and a small demo catalog (tests/indexer_world.py); the tests that write a
store run once per backend (store_config, tests/conftest.py).
"""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from engine.images import ImageEncoder
from engine.store import open_store, point_id
from indexer import ImageLimits, run_index
from indexer.decode import Decoded, Decoder, Rejected, decode_image, fit
from indexer.embed import OnnxEmbedder, TorchEmbedder, normalize
from indexer_world import config, png_bytes, png_header_only, row
from indexer_world import catalog, embedder, onnx_cache, store_cfg, world  # noqa: F401 (fixtures)


@pytest.fixture
def images(tmp_path) -> Path:
    d = tmp_path / "img"
    d.mkdir()
    rng = np.random.default_rng(0)
    good = png_bytes(Image.fromarray(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)))
    (d / "good.png").write_bytes(good)
    (d / "truncated.png").write_bytes(good[: len(good) // 2])
    jpeg = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)).save(jpeg, "JPEG")
    (d / "truncated.jpg").write_bytes(jpeg.getvalue()[: len(jpeg.getvalue()) // 2])
    (d / "empty.png").write_bytes(b"")
    (d / "text.png").write_text("this is not an image")
    (d / "png-named.jpg").write_bytes(good)
    (d / "bomb.png").write_bytes(png_header_only(30_000, 30_000))
    (d / "large.png").write_bytes(png_header_only(7_000, 7_000))
    (d / "tiny.png").write_bytes(png_bytes(Image.new("RGB", (4, 4))))
    return d


@pytest.mark.parametrize("name, reason", [
    ("truncated.png", "corrupt or truncated image"),
    ("truncated.jpg", "corrupt or truncated image"),
    ("empty.png", "empty (0 bytes)"),
    ("text.png", "not an image in a supported format"),
    ("bomb.png", "decompression bomb"),
    ("large.png", "possible decompression bomb"),
    ("tiny.png", "smaller than 8 pixels"),
    ("missing.png", "does not exist"),
    ("../outside.png", "leaves the image root"),
    ("http://127.0.0.1:9/x.png", "--allow-urls"),
    ("file:///etc/passwd", "scheme 'file' is not supported"),
])
def test_bad_images_are_rejected_with_a_reason(images, name, reason):
    result = Decoder(images, 32, "k")(row(name))
    assert isinstance(result, Rejected), result
    assert reason in result.reason and result.id == "x-1"


def test_extension_does_not_matter_content_does(images):
    assert isinstance(Decoder(images, 32, "k")(row("png-named.jpg")), Decoded)


def test_image_modes_become_rgb_with_alpha_on_white(tmp_path):
    cmyk = io.BytesIO()
    Image.new("CMYK", (20, 20), (0, 255, 255, 0)).save(cmyk, "JPEG")
    palette = Image.new("P", (20, 20), 0)
    palette.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    pal = io.BytesIO()
    palette.save(pal, "PNG", transparency=0)
    wide = Image.fromarray(np.full((20, 20), 65535, np.uint16))
    cases = {
        "cmyk": (cmyk.getvalue(), (255, 0, 0)),
        "palette-transparent": (pal.getvalue(), (255, 255, 255)),
        "rgba-transparent": (png_bytes(Image.new("RGBA", (20, 20), (0, 0, 255, 0))), (255, 255, 255)),
        "rgba-opaque": (png_bytes(Image.new("RGBA", (20, 20), (0, 0, 255, 255))), (0, 0, 255)),
        "la": (png_bytes(Image.new("LA", (20, 20), (0, 255))), (0, 0, 0)),
        "grey16": (png_bytes(wide), (255, 255, 255)),
    }
    for name, (data, colour) in cases.items():
        image = decode_image(data, ImageLimits())
        assert image.mode == "RGB", name
        assert np.allclose(np.asarray(image)[10, 10], colour, atol=3), (name, np.asarray(image)[10, 10])


def test_exif_orientation_is_applied():
    image = Image.new("RGB", (40, 20), "red")
    image.paste((0, 0, 255), (20, 0, 40, 20))  # right half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    buf = io.BytesIO()
    image.save(buf, "JPEG", exif=exif, quality=95)
    shown = decode_image(buf.getvalue(), ImageLimits())
    assert shown.size == (20, 40)
    top, bottom = np.asarray(shown)[5, 10], np.asarray(shown)[35, 10]
    assert top[0] > 200 and top[2] < 60  # red on top after rotating clockwise
    assert bottom[2] > 200 and bottom[0] < 60


def test_decoder_and_embedders_match_the_engine_image_encoder(tiny, embedder, world):
    paths = sorted((world / "images").rglob("*.png"))[:6]
    pil = [Image.open(p) for p in paths]
    engine = ImageEncoder(tiny)
    pixels = np.stack([fit(decode_image(p.read_bytes(), ImageLimits()), tiny.image_size) for p in paths])
    ref = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255
    assert torch.equal(ref, engine.pil_to_tensor(pil))
    expected = engine.encode_pil(pil).numpy()
    torch_vectors = TorchEmbedder(tiny, "w").encode(pixels)
    np.testing.assert_allclose(torch_vectors, expected, atol=1e-6)
    np.testing.assert_allclose(embedder.encode(pixels), expected, atol=1e-5)
    assert isinstance(embedder, OnnxEmbedder) and embedder.variant == "fp32"
    norm = normalize(pixels, embedder.mean, embedder.std)
    assert norm.shape == (6, 3, tiny.image_size, tiny.image_size) and norm.dtype == np.float32


def test_rotated_and_transparent_photos_give_one_vector_indexed_searched_and_trained(
        tiny, tmp_path, onnx_cache, make_store_config):
    """engine.preprocess is the one path: a phone photo with EXIF orientation 6 and a transparent PNG are embedded
    as they are shown (upright, transparency on white) by the indexer, by search by photo and by the trainer."""
    from engine.query import QueryConfig, QueryService, SearchRequest
    from engine.tokens import TokenSet
    from trainer.data import to_pil

    rng = np.random.default_rng(3)
    pixels = rng.integers(0, 256, (32, 48, 3), dtype=np.uint8)
    pixels[:, :24] //= 4  # a dark left half: the orientation shows
    stored = Image.fromarray(pixels)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    jpeg = io.BytesIO()
    stored.save(jpeg, "JPEG", exif=exif, quality=95)
    alpha = np.full((32, 48), 255, np.uint8)
    alpha[8:24, 8:40] = 0  # a transparent window over coloured pixels: they must show white
    clear = png_bytes(Image.fromarray(np.dstack([pixels, alpha]), "RGBA"))
    photos = {"rotated": jpeg.getvalue(), "transparent": clear}
    # the references are bare pixel arrays (an image derived with PIL keeps the EXIF block, orientation included)
    as_stored = {name: np.asarray(Image.open(io.BytesIO(data)).convert("RGB")) for name, data in photos.items()}
    white = pixels.copy()
    white[alpha == 0] = 255
    shown = {"rotated": Image.fromarray(np.ascontiguousarray(np.rot90(as_stored["rotated"], k=-1))),  # 90 deg CW
             "transparent": Image.fromarray(white)}
    naive = {name: Image.fromarray(array) for name, array in as_stored.items()}  # convert("RGB") only

    cat = tmp_path / "cat"
    cat.mkdir()
    for name, data in photos.items():
        (cat / f"{name}.img").write_bytes(data)
    (cat / "catalog.jsonl").write_text("".join(json.dumps({"id": name, "title": name, "image": f"{name}.img"}) + "\n"
                                               for name in photos))
    store_cfg = make_store_config("embedded", tmp_path / "store")
    assert run_index(config(cat / "catalog.jsonl", tmp_path, onnx_cache, store_cfg)).accepted == 2

    encoder = ImageEncoder(tiny)
    with open_store(store_cfg) as store:
        service = QueryService(tiny, store, TokenSet(), {}, QueryConfig(text_runtime="torch"))
        for name, data in photos.items():
            indexed = store.retrieve("products", [point_id(name)], with_vectors=True)[0].vector
            np.testing.assert_allclose(indexed, encoder.encode_pil([shown[name]])[0].numpy(), atol=1e-4)
            assert not np.allclose(indexed, encoder.encode_pil([naive[name]])[0].numpy(), atol=1e-2), name
            np.testing.assert_allclose(service.image_vector(data).numpy(), indexed, atol=1e-4)
            response = service.search(SearchRequest(image=data, limit=1))
            assert response.results[0].payload["id"] == name
            assert response.results[0].score == pytest.approx(1.0, abs=1e-4)
            np.testing.assert_allclose(encoder.encode_pil([to_pil(data)])[0].numpy(), indexed, atol=1e-4)


def test_jpegs_are_decoded_at_the_smallest_dct_scale_the_model_needs():
    """Image.draft: a 1024-px JPEG decoded for a 64-px model comes out at 1/8 scale (128 px, still >= 64 on each
    side), and the model's pixels stay close to a full decode's; PNGs are decoded whole."""
    rng = np.random.default_rng(0)
    small = Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).resize((1024, 768), Image.BICUBIC)
    buf = io.BytesIO()
    small.save(buf, format="JPEG", quality=95)
    jpeg = buf.getvalue()
    assert decode_image(jpeg, ImageLimits(), draft_size=64).size == (128, 96)
    assert decode_image(jpeg, ImageLimits()).size == (1024, 768)
    assert decode_image(png_bytes(small), ImageLimits(), draft_size=64).size == (1024, 768)
    drafted = fit(decode_image(jpeg, ImageLimits(), draft_size=64), 64).astype(float)
