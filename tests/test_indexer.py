"""Catalog ingestion: readers, validation, image decoding, incremental runs, kill-and-resume, blue/green reindex, CLI.

Everything runs on the tiny backbone and a small demo catalog from world.catalog; the tests that write a
store run once per backend (store_config, tests/conftest.py): the embedded store in a temporary directory
and the server backend as qdrant-client's local mode there (url "local:<dir>", a stand-in for a Qdrant
server that outlives the store object and the process, as the kill-and-resume tests need). URL fetching
is tested against a local http.server on 127.0.0.1.
"""
from __future__ import annotations

import http.server
import io
import dataclasses
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from engine.images import ImageEncoder
from engine.product import RUN
from engine.store import StoreConfig, open_store, point_id
from indexer import IndexCancelled, IndexerConfig, IndexerError, ImageLimits, run_index, run_reindex
from indexer.decode import Decoded, Decoder, Rejected, Row, decode_image, fit, validate
from indexer.embed import OnnxEmbedder, TorchEmbedder, make_embedder, normalize
from indexer.pipeline import ingest
from indexer.readers import RawRow, open_catalog

ROOT = Path(__file__).resolve().parents[1]
ROWS = 96  # 16 products x 6 photos


# --- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    from world.catalog import main as write_world

    out = tmp_path_factory.mktemp("world")
    assert write_world(["--out", str(out), "--products", "16", "--photos", "6", "--heldout", "8"]) == 0
    return out


@pytest.fixture
def catalog(world, tmp_path) -> Path:
    """A private copy of the demo catalog (tests modify it)."""
    shutil.copytree(world, tmp_path / "cat")
    return tmp_path / "cat" / "catalog.jsonl"


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


# --- readers and validation ------------------------------------------------------------------


def test_readers_agree_on_csv_jsonl_and_parquet(world, tmp_path):
    records = [json.loads(line) for line in (world / "catalog.jsonl").read_text().splitlines()]
    pq.write_table(pa.Table.from_pylist(records), tmp_path / "catalog.parquet")
    parsed = {}
    for path in (world / "catalog.jsonl", world / "catalog.csv", tmp_path / "catalog.parquet"):
        reader = open_catalog(path)
        assert reader.count() == ROWS
        rows = [validate(raw) for raw in reader]
        assert all(isinstance(r, Row) for r in rows), [r for r in rows if not isinstance(r, Row)][:3]
        parsed[reader.format] = [r.payload() for r in rows]
    assert parsed["csv"] == parsed["jsonl"] == parsed["parquet"]
    first = parsed["jsonl"][0]
    assert first["id"] == records[0]["id"] and first["price"] == records[0]["price"]
    assert first["attributes"] == records[0]["attributes"]


def test_an_unreadable_catalog_is_a_one_line_error_naming_the_file(world, tmp_path, monkeypatch, capsys):
    """Tests run as root, where chmod 000 still reads: the readers' open() fails the way it does for a user
    without permission (and a read error mid-file the way a failing disk does)."""
    import builtins

    from coinage.cli import main
    from indexer import readers

    real_open = builtins.open

    def denied(path, *args, **kwargs):
        if Path(path).name.startswith("catalog."):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(readers, "open", denied, raising=False)  # the readers' name for the builtin
    for path in (world / "catalog.jsonl", world / "catalog.csv"):
        reader = open_catalog(path)
        for action in (reader.count, lambda: next(iter(reader))):
            with pytest.raises(IndexerError, match=f"catalog {path} cannot be read \\(Permission denied\\)"):
                action()
    code = main(["index", "--catalog", str(world / "catalog.csv"), "--backbone", "tiny-random", "--no-onnx",
                 "--store-path", str(tmp_path / "store"), "--rejects", str(tmp_path / "r.jsonl"), "--no-progress",
                 "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and f"catalog {world / 'catalog.csv'} cannot be read" in err, err

    class FailingDisk:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def __iter__(self):
            yield next(self.f)
            raise OSError(5, "Input/output error")

    monkeypatch.setattr(readers, "open", lambda *a, **k: FailingDisk(real_open(*a, **k)), raising=False)
    rows = iter(open_catalog(world / "catalog.jsonl"))
    assert next(rows).fields is not None
    with pytest.raises(IndexerError, match="cannot be read \\(Input/output error\\)"):
        next(rows)


def test_parquet_struct_and_map_attributes(tmp_path):
    rows = [{"id": "a", "title": "t", "image": "a.png", "attributes": {"colour": "red"}},
            {"id": "b", "title": "t", "image": "b.png", "attributes": {"size": "M"}}]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "struct.parquet")
    as_map = pa.table({"id": ["a"], "title": ["t"], "image": ["a.png"],
                       "attributes": pa.array([[("colour", "red")]], type=pa.map_(pa.string(), pa.string()))})
    pq.write_table(as_map, tmp_path / "map.parquet")
    got = [validate(r).attributes for r in open_catalog(tmp_path / "struct.parquet")]
    assert got == [{"colour": "red", "size": None}, {"colour": None, "size": "M"}]  # a struct has every key
    assert [validate(r).attributes for r in open_catalog(tmp_path / "map.parquet")] == [{"colour": "red"}]


def test_unparseable_rows_are_reported_with_their_row_number(tmp_path):
    jsonl = tmp_path / "c.jsonl"
    jsonl.write_text('{"id": "a", "title": "t", "image": "a.png"}\n{not json\n\n[1, 2]\n')
    got = [(r.row, r.error) for r in open_catalog(jsonl)]
    assert got[0] == (1, None)
    assert got[1][0] == 2 and "invalid JSON" in got[1][1]
    assert got[2][0] == 4 and "expected a JSON object" in got[2][1]
    csv_path = tmp_path / "c.csv"
    csv_path.write_text("id,title,image\na,t,a.png\nb,t\n")
    got = list(open_catalog(csv_path))
    assert got[1].row == 2 and "2 fields but the header has 3" in got[1].error
    (tmp_path / "c.xml").write_text("<x/>")
    with pytest.raises(IndexerError, match="unknown extension"):
        open_catalog(tmp_path / "c.xml")
    with pytest.raises(IndexerError, match="does not exist"):
        open_catalog(tmp_path / "missing.csv")


@pytest.mark.parametrize("fields, reason", [
    ({"title": "t", "image": "a.png"}, "missing required field 'id'"),
    ({"id": "a", "image": "a.png"}, "missing required field 'title'"),
    ({"id": "a", "title": "t"}, "missing required field 'image'"),
    ({"id": ["a"], "title": "t", "image": "a.png"}, "id must be a string or an integer"),
    ({"id": True, "title": "t", "image": "a.png"}, "id must be a string or an integer"),
    ({"id": "a", "title": 3, "image": "a.png"}, "title must be a string"),
    ({"id": "a", "title": "t", "image": "a.png", "price": "cheap"}, "price must be a number"),
    ({"id": "a", "title": "t", "image": "a.png", "price": -1}, "price must be a finite number >= 0"),
    ({"id": "a", "title": "t", "image": "a.png", "attributes": "[1]"}, "attributes must be a JSON object"),
    ({"id": "a", "title": "t", "image": "a.png", "attributes": "{oops"}, "attributes is not valid JSON"),
])
def test_field_errors_are_rejections(fields, reason):
    got = validate(RawRow(7, fields))
    assert isinstance(got, Rejected) and got.row == 7 and reason in got.reason


def test_types_are_normalised_and_extra_columns_become_attributes():
    got = validate(RawRow(1, {"id": 42, "title": " Mug ", "image": "m.png", "price": "9.5", "category": "",
                              "brand": "Acme", "attributes": {"colour": "red"}}))
    assert isinstance(got, Row)
    assert (got.id, got.product_id, got.title, got.price, got.category) == ("42", "42", "Mug", 9.5, None)
    assert got.attributes == {"colour": "red", "brand": "Acme"}
    assert got.point_id == point_id("42")


# --- images ---------------------------------------------------------------------------------


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


class _Images(http.server.SimpleHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - http.server's naming
        if self.path.startswith("/slow"):
            time.sleep(1.0)
        super().do_GET()

    def log_message(self, *args):  # keep test output quiet
        pass


@pytest.fixture
def http_images(world):
    handler = lambda *a, **kw: _Images(*a, directory=str(world), **kw)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_urls_are_fetched_only_when_allowed(world, http_images):
    url = f"{http_images}/images/p0000/0.png"
    assert "--allow-urls" in Decoder(world, 32, "k")(row(url)).reason
    fetching = Decoder(world, 32, "k", allow_urls=True, url_timeout_s=0.3, url_private_ok=True)  # 127.0.0.1
    assert isinstance(fetching(row(url)), Decoded)
    assert "HTTP 404" in fetching(row(f"{http_images}/images/nope.png")).reason
    assert "timed out" in fetching(row(f"{http_images}/slow/images/p0000/0.png")).reason


# --- pipeline: bad rows, idempotence, kill-and-resume ----------------------------------------


def test_bad_rows_are_reported_and_skipped_never_fatal(catalog, tmp_path, onnx_cache, store_cfg):
    cat = catalog.parent
    (cat / "bad").mkdir()
    (cat / "bad" / "zero.png").write_bytes(b"")
    (cat / "bad" / "bomb.png").write_bytes(png_header_only(30_000, 30_000))
    good = (cat / "images" / "p0000" / "0.png").read_bytes()
    (cat / "bad" / "cut.png").write_bytes(good[: len(good) // 2])
    extra = [
        '{"id": "bad-1", "image": "images/p0000/0.png"}',
        '{"id": "p0000-0", "title": "dupe", "image": "images/p0000/1.png"}',
        '{"id": "bad-2", "title": "t", "image": "bad/zero.png"}',
        '{"id": "bad-3", "title": "t", "image": "bad/bomb.png"}',
        '{"id": "bad-4", "title": "t", "image": "bad/cut.png"}',
        '{"id": "bad-5", "title": "t", "image": "bad/none.png", "price": "x"}',
        '{this is not json',
    ]
    with catalog.open("a") as f:
        f.write("\n".join(extra) + "\n")
    report = run_index(config(catalog, tmp_path, onnx_cache, store_cfg))
    assert (report.accepted, report.rejected, report.rows) == (ROWS, len(extra), ROWS + len(extra))
    got = {r["row"]: r for r in rejects(tmp_path / "rejects.jsonl")}
    assert sorted(got) == list(range(ROWS + 1, ROWS + len(extra) + 1))
    assert "missing required field 'title'" in got[ROWS + 1]["reason"] and got[ROWS + 1]["id"] == "bad-1"
    assert "duplicate id: first seen at row 1" in got[ROWS + 2]["reason"]
    assert "empty" in got[ROWS + 3]["reason"]
    assert "decompression bomb" in got[ROWS + 4]["reason"]
    assert "truncated" in got[ROWS + 5]["reason"]
    assert "price" in got[ROWS + 6]["reason"]
    assert got[ROWS + 7]["id"] is None and "invalid JSON" in got[ROWS + 7]["reason"]
    with open_store(store_cfg) as store:
        assert store.count("products") == ROWS
        first = store.retrieve("products", [point_id("p0000-0")])[0].payload
        assert first["title"] != "dupe" and first["_hash"]
    assert set(report.stage_seconds) == {"read", "lookup", "decode", "embed", "write"}
    assert "rejected rows" in report.summary()


def test_rerun_skips_unchanged_rows_and_redoes_changed_ones(catalog, tmp_path, onnx_cache, store_cfg):
    cfg = config(catalog, tmp_path, onnx_cache, store_cfg)
    first = run_index(cfg)
    assert (first.accepted, first.unchanged) == (ROWS, 0)
    with open_store(cfg.store) as store:
        before = snapshot(store, "products")
    second = run_index(cfg)
    assert (second.accepted, second.unchanged, second.rejected) == (0, ROWS, 0)
    lines = catalog.read_text().splitlines()
    changed = json.loads(lines[3])
    changed["title"] = "Renamed"
    lines[3] = json.dumps(changed)
    catalog.write_text("\n".join(lines[:-1]) + "\n")  # last row removed from the catalog
    Image.new("RGB", (64, 64), "teal").save(catalog.parent / json.loads(lines[5])["image"])
    third = run_index(config(catalog, tmp_path, onnx_cache, store_cfg, prune=True))
    assert (third.accepted, third.unchanged, third.pruned) == (2, ROWS - 3, 1)
    with open_store(cfg.store) as store:
        after = snapshot(store, "products")
    assert len(after) == ROWS - 1
    assert after[point_id(changed["id"])][1]["title"] == "Renamed"
    repainted = point_id(json.loads(lines[5])["id"])
    assert not np.allclose(after[repainted][0], before[repainted][0])
    same = point_id(json.loads(lines[0])["id"])
    assert np.array_equal(after[same][0], before[same][0])
    assert RUN not in before[same][1] and after[same][1].pop(RUN)  # a pruning run marks the rows it saw
    assert after[same][1] == before[same][1]


def test_a_rerun_does_not_open_unchanged_images(catalog, tmp_path, onnx_cache, store_cfg, monkeypatch):
    """Size and mtime are kept with each point: a rerun reads an image only when they changed; a touched file
    with the same bytes is read once, stays unchanged and gets its new stamp."""
    import indexer.decode as decode

    opened: list[str] = []
    real = decode.read_image_bytes
    monkeypatch.setattr(decode, "read_image_bytes", lambda source, *a: opened.append(str(source)) or real(source, *a))
    cfg = config(catalog, tmp_path, onnx_cache, store_cfg)
    assert run_index(cfg).accepted == ROWS and len(opened) == ROWS
    opened.clear()
    assert run_index(cfg).unchanged == ROWS
    assert opened == []
    touched = catalog.parent / json.loads(catalog.read_text().splitlines()[2])["image"]
    os.utime(touched, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert run_index(cfg).unchanged == ROWS
    assert opened == [str(touched.resolve())]
    opened.clear()
    assert run_index(cfg).unchanged == ROWS and opened == []


DRIVER = r"""
import json, sys, time
from engine.onnx.runtime import OnnxImageEncoder
from engine.store import StoreConfig, open_store
from indexer.config import IndexerConfig
from indexer.embed import OnnxEmbedder
from indexer.pipeline import ingest

a = json.loads(sys.argv[1])
assert "torch" not in sys.modules  # the ONNX ingest path runs without torch


class Slow(OnnxEmbedder):
    batches = 0

    def encode(self, pixels):
        out = super().encode(pixels)
        Slow.batches += 1
        print("batch", Slow.batches, flush=True)
        time.sleep(a["pause"])
        return out


embedder = Slow(OnnxImageEncoder(a["onnx"]), a["key"], a["mean"], a["std"])
cfg = IndexerConfig(catalog=a["catalog"], store=StoreConfig(**a["store"]), batch_size=a["batch"], workers=2,
                    progress_bar=False, rejects_path=a["rejects"])
with open_store(cfg.store) as store:
    ingest(cfg, store, a["collection"], embedder)
print("finished", flush=True)
"""


def test_index_refuses_to_prune_the_live_collection_from_an_empty_or_truncated_catalog(
        catalog, tmp_path, onnx_cache, store_cfg, capsys):
    """`coinage index --prune` with a catalog of zero rows (or only rejected rows, or a third of the products) would
    empty the index searches use: it exits non-zero naming --force and deletes nothing; --force does it."""
    from coinage.cli import main

    assert run_index(config(catalog, tmp_path, onnx_cache, store_cfg)).accepted == ROWS
    where = ["--store-url", store_cfg.url] if store_cfg.backend == "server" else ["--store-path", store_cfg.path]
    common = ["--backbone", "tiny-random", *where, "--onnx-cache", str(onnx_cache), "--rejects",
              str(tmp_path / "r.jsonl"), "--no-progress", "--device", "cpu"]

    def index(lines: list[str], *flags: str) -> tuple[int, str]:
        path = catalog.parent / "part.jsonl"
        path.write_text("".join(line + "\n" for line in lines))
        code = main(["index", "--catalog", str(path), *common, *flags])
        return code, capsys.readouterr().err

    def count() -> int:
        with open_store(store_cfg) as store:
            return store.count("products")

    rows = catalog.read_text().splitlines()
    for lines, needle in (([], "0 rows read, 0 rejected"),
                          (['{"id": "a"}', "not json"], "2 rows read, 2 rejected")):
        code, err = index(lines, "--prune")
        assert code == 1 and needle in err and "nothing was pruned" in err and "--force" in err, err
        assert count() == ROWS
        code, err = index(lines)  # without --prune: still an error, nothing indexed
        assert code == 1 and "could be indexed" in err, err
    code, err = index(rows[:ROWS // 3], "--prune")
    assert code == 1 and f"delete {ROWS - ROWS // 3} of the {ROWS} points" in err and "--force" in err, err
    assert count() == ROWS
    assert index(rows[:ROWS // 3], "--prune", "--max-prune-fraction", "0.7")[0] == 0
    assert count() == ROWS // 3
    assert index([], "--prune", "--force")[0] == 0  # deliberately
    assert count() == 0


def test_killed_ingest_resumes_to_exactly_the_clean_result(catalog, tmp_path, onnx_cache, store_cfg, store_config,
                                                            embedder):
    """SIGKILL a subprocess mid-ingest three times, then resume: same ids, payloads and vectors as a clean run."""
    cfg = config(catalog, tmp_path, onnx_cache, store_cfg, batch_size=4)
    clean_cfg = config(catalog, tmp_path, onnx_cache, store_config(tmp_path / "clean", persistent=True), batch_size=4)
    with open_store(clean_cfg.store) as store:
        store.create_collection("c", dim=embedder.dim)
        ingest(clean_cfg, store, "c", embedder)
    # Both results are read back after a reopen: qdrant-client's local mode returns a cosine vector re-normalised
    # (float32) by the session that wrote it but as sent once reopened, so only reopened stores compare bit for bit.
    with open_store(clean_cfg.store) as store:
        clean = snapshot(store, "c")
    with open_store(cfg.store) as store:
        store.create_collection("c", dim=embedder.dim)
    args = {"onnx": str(embedder.encoder.path), "key": embedder.key, "mean": embedder.mean, "std": embedder.std,
            "catalog": str(catalog), "store": dataclasses.asdict(cfg.store), "batch": 4, "pause": 0.15,
            "collection": "c", "rejects": str(tmp_path / "child-rejects.jsonl")}
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    counts = []
    for kill_after_batch, delay in ((2, 0.0), (3, 0.14), (5, 0.05)):
        with subprocess.Popen([sys.executable, "-c", DRIVER, json.dumps(args)], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as child:
            try:
                for line in child.stdout:
                    if line.strip() == f"batch {kill_after_batch}":
                        break
                else:
                    pytest.fail(f"driver ended before batch {kill_after_batch}: {child.stderr.read()[-2000:]}")
                time.sleep(delay)
            finally:
                child.send_signal(signal.SIGKILL)
                child.wait(timeout=30)
        assert child.returncode == -signal.SIGKILL
        with open_store(cfg.store) as store:  # the lock died with the child; the data did not
            counts.append(store.count("c"))
    assert 0 < counts[0] <= counts[1] <= counts[2] < ROWS, counts
    with open_store(cfg.store) as store:
        resumed = ingest(cfg, store, "c", embedder)
        assert resumed.unchanged == counts[-1] and resumed.accepted == ROWS - counts[-1]
    with open_store(cfg.store) as store:
        got = snapshot(store, "c")
    assert sorted(got) == sorted(clean)
    for pid, (vector, payload) in clean.items():
        assert got[pid][1] == payload
        np.testing.assert_array_equal(got[pid][0], vector)  # ORT gives bitwise-equal rows whatever the batch


# --- blue/green reindex ----------------------------------------------------------------------


def test_alias_swap_while_searches_keep_answering(catalog, tmp_path, onnx_cache, store_cfg):
    cfg = config(catalog, tmp_path, onnx_cache, store_cfg)
    stop = threading.Event()
    errors: list[BaseException] = []
    answered = [0]
    events: list[dict] = []
    with open_store(cfg.store) as store:
        run_index(cfg, store=store)
        old = store.get_alias("products")
        query = store.retrieve("products", [point_id("p0003-2")], with_vectors=True)[0].vector

        def search() -> None:
            while not stop.is_set():
                try:
                    hits = store.search("products", query, limit=5)
                    assert len(hits) == 5 and hits[0].payload["id"] == "p0003-2"
                    answered[0] += 1
                except BaseException as e:  # noqa: BLE001 - collected and asserted below
                    errors.append(e)
                    return

        threads = [threading.Thread(target=search) for _ in range(3)]
        for t in threads:
            t.start()
        try:
            report = run_reindex(cfg, progress=events.append, store=store)
        finally:
            stop.set()
            for t in threads:
                t.join()
        assert not errors, errors[:1]
        assert answered[0] > 0
        assert report.switched and report.previous == old and report.dropped_previous
        assert store.get_alias("products") == report.collection != old
        assert not store.collection_exists(old)
        assert store.count("products") == ROWS
    stages = [e["stage"] for e in events]
    assert stages[0] == "build" and "reindex" in stages and "optimize" in stages and stages[-1] == "done"
    assert any(e.get("total") == ROWS and "eta_s" in e for e in events)


def test_failed_reindex_leaves_the_live_alias_untouched(catalog, tmp_path, onnx_cache, store_cfg, monkeypatch):
    from engine.store.artifacts import ARTIFACTS

    cfg = config(catalog, tmp_path, onnx_cache, store_cfg)
    with open_store(cfg.store) as store:
        run_index(cfg, store=store)
        live = store.get_alias("products")

        def unchanged() -> None:
            assert store.get_alias("products") == live
            # the server backend also holds the vocabulary artifacts' collection (engine/store/artifacts.py)
            assert [c for c in store.list_collections() if c != ARTIFACTS] == [live]
            assert store.count("products") == ROWS

        # 1. the embedder breaks mid-way
        calls = [0]
        original = OnnxEmbedder.encode

        def flaky(self, pixels):
            calls[0] += 1
            if calls[0] > 2:
                raise RuntimeError("simulated encoder failure")
            return original(self, pixels)

        monkeypatch.setattr(OnnxEmbedder, "encode", flaky)
        with pytest.raises(IndexerError, match="simulated encoder failure") as failed:
            run_reindex(cfg, store=store)
        assert not failed.value.report.switched
        unchanged()
        monkeypatch.undo()
        # 2. cancelled from the job system
        cancel = threading.Event()
        with pytest.raises(IndexCancelled):
            run_reindex(cfg, progress=lambda e: cancel.set() if e.get("done", 0) >= 8 else None,
                        cancel=cancel, store=store)
        unchanged()
        # 3. too many rejected rows
        broken = tmp_path / "broken.jsonl"
        lines = catalog.read_text().splitlines()
        broken.write_text("\n".join(lines[:10] + [json.dumps({**json.loads(x), "image": "nope.png"})
                                                  for x in lines[10:]]) + "\n")
        with pytest.raises(IndexerError, match="max_reject_fraction"):
            run_reindex(config(broken, tmp_path, onnx_cache, store_cfg, image_root=catalog.parent), store=store)
        unchanged()


def test_reindex_adopts_the_build_a_killed_job_left(catalog, tmp_path, onnx_cache, store_cfg, embedder):
    cfg = config(catalog, tmp_path, onnx_cache, store_cfg)
    half = tmp_path / "half.jsonl"
    half.write_text("\n".join(catalog.read_text().splitlines()[:40]) + "\n")
    with open_store(cfg.store) as store:
        run_index(cfg, store=store)
        orphan = "products-20200101-000000-000"
        store.create_collection(orphan, dim=embedder.dim)
        ingest(config(half, tmp_path, onnx_cache, store_cfg, image_root=catalog.parent), store, orphan, embedder)
        report = run_reindex(cfg, store=store)
        assert report.resumed and report.collection == orphan and store.get_alias("products") == orphan
        assert (report.ingest.unchanged, report.ingest.accepted) == (40, ROWS - 40)


# --- CLI -------------------------------------------------------------------------------------


def test_cli_index_and_reindex_in_process(catalog, tmp_path, onnx_cache, store_cfg, capsys):
    from coinage.cli import main

    where = ["--store-url", store_cfg.url] if store_cfg.backend == "server" else ["--store-path", store_cfg.path]
    common = ["--catalog", str(catalog), "--backbone", "tiny-random", *where,
              "--onnx-cache", str(onnx_cache), "--rejects", str(tmp_path / "r.jsonl"), "--batch-size", "16",
              "--no-progress", "--device", "cpu"]
    assert main(["index", *common]) == 0
    assert f"{ROWS} embedded" in capsys.readouterr().out
    assert main(["index", *common, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["unchanged"] == ROWS
    assert main(["reindex", *common, "--no-onnx"]) == 0
    out = capsys.readouterr().out
    assert "alias 'products' -> products-" in out and "dropped" in out
    assert main(["index", *common[2:], "--catalog", str(tmp_path / "missing.csv")]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert main(["index", *common, "--no-onnx", "--quantize", "int8"]) == 1
    assert "quantize needs onnx" in capsys.readouterr().err


def test_index_writes_bm25_vectors_and_reindex_refreshes_the_vocabulary(catalog, tmp_path, onnx_cache, store_cfg):
    from engine.lexical import embed_query
    from engine.spelling import Speller
    from engine.store import StoreQuery
    from engine.vocabulary import read_vocabulary, vocabulary_version

    cfg = config(catalog, tmp_path, onnx_cache, store_cfg)
    report = run_index(cfg)
    rows = [json.loads(line) for line in catalog.read_text().splitlines()]
    with open_store(cfg.store) as store:
        assert store.has_sparse("products")
        target = store.get_alias("products")
        speller = Speller(read_vocabulary(store, target)[1])
        assert report.vocabulary_words == len(speller.counts) > 0
        assert vocabulary_version(store, target) is not None  # an artifact beside the collection ...
        assert store.get_metadata("products").get("spelling") is None  # ... not in the metadata get_collection sends
        assert all(speller.known(w) for w in rows[0]["title"].replace("—", " ").split())
        # the product's own title, searched lexically only, finds one of its photos first
        top = store.query("products", StoreQuery(sparse=embed_query(rows[0]["title"])), limit=1)[0]
        assert top.payload["title"] == rows[0]["title"]
    for r in rows:
        if r["product_id"] == rows[0]["product_id"]:
            r["title"] = "Quokkaberry Parasol"
    catalog.write_text("".join(json.dumps(r) + "\n" for r in rows))
    run_reindex(cfg)
    with open_store(cfg.store) as store:
        speller = Speller(read_vocabulary(store, store.get_alias("products"))[1])
        assert speller.known("quokkaberry")
        assert speller.correct("quokaberry parasol").corrected == "quokkaberry parasol"


def test_index_into_a_collection_built_before_bm25_keeps_working(catalog, tmp_path, onnx_cache, store_cfg, caplog):
    cfg = config(catalog, tmp_path, onnx_cache, store_cfg)
    with open_store(cfg.store) as store:
        store.create_collection("products-old", _dim(cfg), sparse=False)
        store.set_alias("products", "products-old")
    report = run_index(cfg)
    assert report.accepted == ROWS
    assert "coinage reindex" in caplog.text
    with open_store(cfg.store) as store:
        assert not store.has_sparse("products") and store.count("products") == ROWS


def _dim(cfg) -> int:
    from indexer.pipeline import build_embedder, load_backbone_for

    return build_embedder(cfg, load_backbone_for(cfg)).dim


def test_an_index_run_without_prune_merges_the_vocabulary_and_with_prune_replaces_it(catalog, tmp_path, onnx_cache,
                                                                                      store_cfg):
    from engine.lexical import document_text, words
    from engine.vocabulary import read_vocabulary

    cfg = config(catalog, tmp_path, onnx_cache, store_cfg)
    run_index(cfg)
    rows = [json.loads(line) for line in catalog.read_text().splitlines()]
    kept = [r for r in rows if r["product_id"] == rows[0]["product_id"]]
    for r in kept:
        r["title"] = "Quokkaberry Parasol"
    others = {w for r in rows if r not in kept for w in words(document_text(r))} - {
        w for r in kept for w in words(document_text(r))}
    assert others
    catalog.write_text("".join(json.dumps(r) + "\n" for r in kept))  # a catalog file with one product only
    run_index(cfg)
    with open_store(cfg.store) as store:
        words = read_vocabulary(store, store.get_alias("products"))[1].counts
        assert "quokkaberry" in words and others <= set(words)  # the other rows are still in the collection
    run_index(dataclasses.replace(cfg, prune=True, force=True))
    with open_store(cfg.store) as store:
        words = read_vocabulary(store, store.get_alias("products"))[1].counts
        assert "quokkaberry" in words and not others & set(words)  # pruned: the catalog's words only
def test_reindex_defers_indexing_during_the_bulk_load_and_waits_for_it_before_the_switch(
        catalog, tmp_path, onnx_cache, monkeypatch):
    """Server backend: the build collection's HNSW indexing is off while it is filled, turned back on before the
    alias switch, and optimize() (which waits for a green collection) runs after that."""
    from qdrant_client import QdrantClient

    from engine.store import marks
    from engine.store.server import ServerStore

    events: list = []

    class Spy(QdrantClient):
        def update_collection(self, collection_name, **kw):
            if kw.get("optimizers_config") is not None:
                events.append(("indexing_threshold", kw["optimizers_config"].indexing_threshold))
            return super().update_collection(collection_name, **kw)

        def update_collection_aliases(self, *a, **kw):
            events.append("switch")
            return super().update_collection_aliases(*a, **kw)

    real_optimize = ServerStore.optimize
    monkeypatch.setattr(ServerStore, "optimize", lambda self, c: events.append("optimize") or real_optimize(self, c))
    cfg = config(catalog, tmp_path, onnx_cache, StoreConfig(backend="server", url=":memory:"))
    with ServerStore(cfg.store, client=Spy(location=":memory:")) as store:
        assert run_reindex(cfg, store=store).switched
    assert events == [("indexing_threshold", 0), ("indexing_threshold", marks.DEFAULT_INDEXING_THRESHOLD_KB),
                      "optimize", "switch"], events


def test_the_ray_stages_without_ray_write_what_the_in_process_pass_writes(catalog, tmp_path, onnx_cache, store_cfg,
                                                                         embedder):
    """The bulk path's map stages (indexer.ray_stages), called in order on one open store without Ray, write the
    in-process pass's points, emit its vocabulary counts, and find every row unchanged the second time."""
    import collections

    import pyarrow as pa

    from engine.vocabulary import read_vocabulary
    from indexer.ray_stages import Embed, Prepare, StageConfig, Upload, read_slices, slices

    cfg = config(catalog, tmp_path, onnx_cache, store_cfg)
    stage = StageConfig(catalog=str(catalog), image_root=str(catalog.parent), collection="stages", run_id="run-1",
                        sparse=True, model_key=embedder.key, image_size=embedder.image_size, limits=ImageLimits(),
                        allow_urls=False, url_timeout_s=10.0, store=cfg.store)
    embed = Embed(str(embedder.encoder.path), ["CPUExecutionProvider"], None, embedder.mean, embedder.std,
                  embedder.key, embedder.variant)
    parts = pa.Table.from_pylist(slices(ROWS, 3))
    with open_store(cfg.store) as store:
        for name in ("here", "stages"):
            store.create_collection(name, dim=embedder.dim)
        ingest(cfg, store, "here", embedder, prune=True)
        prepare, upload = Prepare(stage, store), Upload(stage, store)

        def run() -> list[dict]:
            return [s for b in read_slices(parts, str(catalog), 16) for s in upload(embed(prepare(b))).to_pylist()]

        first = run()
        assert sum(s["accepted"] for s in first) == ROWS and sum(s["valid"] for s in first) == ROWS
        words = collections.Counter()
        for s in first:
            words.update(json.loads(s["words"]))
        assert dict(words) == dict(read_vocabulary(store, "here")[1].counts)
        here, there = snapshot(store, "here"), snapshot(store, "stages")
        second = run()
        assert sum(s["unchanged"] for s in second) == ROWS and sum(s["accepted"] for s in second) == 0
    assert sorted(there) == sorted(here)
    for pid, (vector, payload) in here.items():
        assert there[pid][1].pop(RUN) == "run-1" and payload.pop(RUN)
        assert there[pid][1] == payload
        np.testing.assert_allclose(there[pid][0], vector, atol=1e-6)


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
    whole = fit(decode_image(jpeg, ImageLimits()), 64).astype(float)
    assert np.abs(drafted - whole).mean() < 4.0
