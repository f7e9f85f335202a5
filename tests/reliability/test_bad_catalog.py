"""Hostile catalog rows through a whole index run (JSON Lines and CSV): missing fields, wrong types, duplicate
ids, huge strings, NaN, non-UTF-8 bytes. Every good row is indexed exactly once (nothing lost), every bad
row is in the rejects file with its row number and a reason, and the run never stops."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image

from engine.store import StoreConfig, open_store, point_id
from indexer import IndexerConfig, run_index

GOOD = 12
HUGE = 300_000  # characters: over the csv module's 131,072-character field limit


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("catalog")
    (root / "img").mkdir()
    rng = np.random.default_rng(0)
    for i in range(GOOD):
        Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(root / "img" / f"{i}.png")
    return root


def good_rows() -> list[dict]:
    return [{"id": f"g{i}", "title": f"Good thing {i}", "image": f"img/{i}.png", "price": i + 0.5, "category": "mug"}
            for i in range(GOOD)]


# (row as JSON text or bytes, fragment of the reason); rows are appended after the good ones
BAD_JSONL = [
    ('{"title": "no id", "image": "img/0.png"}', "missing required field 'id'"),
    ('{"id": "b-title", "image": "img/0.png"}', "missing required field 'title'"),
    ('{"id": "b-image", "title": "t"}', "missing required field 'image'"),
    ('{"id": "b-blank", "title": "   ", "image": "img/0.png"}', "missing required field 'title' (empty)"),
    ('{"id": {"x": 1}, "title": "t", "image": "img/0.png"}', "id must be a string or an integer"),
    ('{"id": 3.5, "title": "t", "image": "img/0.png"}', "id must be a string or an integer"),
    ('{"id": "b-t", "title": ["a"], "image": "img/0.png"}', "title must be a string"),
    ('{"id": "b-img", "title": "t", "image": 7}', "image must be a string"),
    ('{"id": "b-p", "title": "t", "image": "img/0.png", "price": "12 EUR"}', "price must be a number"),
    ('{"id": "b-nanp", "title": "t", "image": "img/0.png", "price": NaN}', "finite number"),
    ('{"id": "b-inf", "title": "t", "image": "img/0.png", "price": Infinity}', "finite number"),
    ('{"id": "b-nana", "title": "t", "image": "img/0.png", "weight": NaN}', "NaN or infinite"),
    ('{"id": "b-attr", "title": "t", "image": "img/0.png", "attributes": 5}', "attributes must be an object"),
    ('{"id": "g3", "title": "duplicate of g3", "image": "img/4.png"}', "duplicate id: first seen at row 4"),
    (json.dumps({"id": "x" * 600, "title": "t", "image": "img/0.png"}), "the limit is 512"),
    (json.dumps({"id": "b-long-path", "title": "t", "image": "a/" * 5000 + "x.png"}), "cannot read image file"),
    (b'{"id": "b-utf8", "title": "caf\xe9", "image": "img/0.png"}', "invalid JSON"),
    (b"\xff\xfe\x00garbage", "invalid JSON"),
    ("[1, 2, 3]", "expected a JSON object"),
    ('{"id": 1e999, "title": "t"', "invalid JSON"),
]


def config(tmp_path, catalog) -> IndexerConfig:
    return IndexerConfig(catalog=catalog, backbone="tiny-random", store=StoreConfig(path=str(tmp_path / "store")),
                         onnx=False, device="cpu", progress_bar=False, rejects_path=tmp_path / "rejects.jsonl",
                         batch_size=8)


def check_run(tmp_path, catalog, expected_rejects: dict[int, str], extra_good: dict[str, dict] | None = None):
    report = run_index(config(tmp_path, catalog))
    good = {r["id"]: r for r in good_rows()} | (extra_good or {})
    assert (report.accepted, report.rejected) == (len(good), len(expected_rejects))
    got = {r["row"]: r for r in map(json.loads, (tmp_path / "rejects.jsonl").read_text().splitlines())}
    assert sorted(got) == sorted(expected_rejects)
    for row, needle in expected_rejects.items():
        assert needle in got[row]["reason"], (row, got[row]["reason"])
    with open_store(config(tmp_path, catalog).store) as store:
        ids = store.scroll_ids("products")
        assert sorted(ids) == sorted(point_id(i) for i in good)  # nothing lost, nothing extra, no duplicate
        for point in store.retrieve("products", ids):
            assert point.payload["title"] == good[point.payload["id"]]["title"]
    return report


def test_jsonl_catalog_with_every_kind_of_bad_row(folder, tmp_path):
    catalog = folder / "bad.jsonl"
    huge_title = {"id": "g-huge", "title": "T" * HUGE, "image": "img/5.png"}
    lines = [json.dumps(r).encode() for r in good_rows()] + [json.dumps(huge_title).encode()]
    lines += [x if isinstance(x, bytes) else x.encode() for x, _ in BAD_JSONL]
    catalog.write_bytes(b"\n".join(lines) + b"\n")
    expected = {GOOD + 2 + i: needle for i, (_, needle) in enumerate(BAD_JSONL)}
    report = check_run(tmp_path, catalog, expected, {"g-huge": huge_title})
    assert report.rows == GOOD + 1 + len(BAD_JSONL)


def test_csv_catalog_with_huge_fields_bad_bytes_and_ragged_rows(folder, tmp_path):
    catalog = folder / "bad.csv"
    header = ["id", "title", "image", "price", "category"]
    with open(catalog, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        for r in good_rows():
            w.writerow([r[k] for k in header])
        w.writerow(["b-huge", "H" * HUGE, "img/0.png", "1", "mug"])  # row GOOD + 1
        w.writerow(["b-ragged", "t"])  # GOOD + 2
        w.writerow(["b-price", "t", "img/0.png", "-3", "mug"])  # GOOD + 3
        w.writerow(["g0", "dupe", "img/1.png", "1", "mug"])  # GOOD + 4
        w.writerow(["", "", "", "", ""])  # GOOD + 5
    with open(catalog, "ab") as f:  # GOOD + 6: a title in Latin-1 (not UTF-8): read with U+FFFD, indexed
        f.write(b"g-latin1,Caf\xe9 cup,img/6.png,2,mug\r\n")
    expected = {GOOD + 1: "field larger than field limit", GOOD + 2: "2 fields but the header has 5",
                GOOD + 3: "finite number >= 0", GOOD + 4: "duplicate id: first seen at row 1", GOOD + 5: "empty row"}
    check_run(tmp_path, catalog, expected, {"g-latin1": {"title": "Caf\ufffd cup"}})


def test_a_catalog_whose_every_row_is_bad_fails_the_reindex_not_the_live_index(folder, tmp_path):
    from indexer import IndexerError, run_reindex

    good = folder / "good.jsonl"
    good.write_text("\n".join(json.dumps(r) for r in good_rows()) + "\n")
    run_index(config(tmp_path, good))
    bad = folder / "all-bad.jsonl"
    bad.write_bytes(b"\n".join(x if isinstance(x, bytes) else x.encode() for x, _ in BAD_JSONL) + b"\n")
    with open_store(config(tmp_path, bad).store) as store:
        live = store.get_alias("products")
        with pytest.raises(IndexerError, match="alias was not switched"):
            run_reindex(config(tmp_path, bad), store=store)
        assert store.get_alias("products") == live and store.count("products") == GOOD


def _nested(levels: int) -> dict:
    value: dict = {"leaf": "x"}
    for _ in range(levels - 1):
        value = {"k": value}
    return value


# Rows that stopped or broke the whole run on commit e8bc43e (a traceback, a lost index), with their reasons
CRASHERS = [
    ('{"id": "b-sur-id\\ud800", "title": "t", "image": "img/0.png"}', "id holds a lone surrogate"),
    ('{"id": "b-sur-title", "title": "caf\\udce9", "image": "img/0.png"}', "title holds a lone surrogate (\\udce9)"),
    ('{"id": "b-sur-attr", "title": "t", "image": "img/0.png", "colour": "\\ud83d"}', "attributes holds a lone"),
    ('{"id": "b-price", "title": "t", "image": "img/0.png", "price": 1' + "0" * 400 + "}",
     "got an integer of 401 digits"),
    (json.dumps({"id": "b-deep", "title": "t", "image": "img/0.png", "attributes": _nested(130)}),
     "attributes nest 130 levels deep; the limit is 8"),
    ('{"id": "b-deeper", "attributes": ' + "[" * 100_000 + "]" * 100_000 + "}", "nested deeper than Python"),
    (json.dumps({"id": "b-wide", "title": "t", "image": "img/0.png",
                 "attributes": {f"w{i}": f"word{i}" for i in range(5_000)}}), "attributes hold 5000 keys"),
    (json.dumps({"id": "b-big", "title": "t", "image": "img/0.png", "notes": "words " * 5_000}),
     "attributes is 30,012 bytes as JSON; the limit is 16,384"),
    # the same ids as good rows 1 and 2 after NFC normalisation / without the zero-width space
    (json.dumps({"id": "ge\u03011", "title": "t", "image": "img/0.png"}), "duplicate id: first seen at row 2"),
    (json.dumps({"id": "g\u200b2", "title": "t", "image": "img/0.png"}), "duplicate id: first seen at row 3"),
]


def test_rows_that_crashed_or_broke_the_run_are_rejected_lines(folder, tmp_path):
    good = good_rows()
    good[1]["id"] = "g\u00e91"  # NFC; the crasher "ge\u03011" is the same id decomposed (NFD)
    catalog = folder / "crashers.jsonl"
    lines = [json.dumps(r) for r in good] + [line for line, _ in CRASHERS]
    catalog.write_text("\n".join(lines) + "\n")
    expected = {GOOD + 1 + i: needle for i, (_, needle) in enumerate(CRASHERS)}
    report = run_index(config(tmp_path, catalog))
    assert (report.accepted, report.rejected) == (GOOD, len(CRASHERS))
    got = {r["row"]: r["reason"] for r in map(json.loads, (tmp_path / "rejects.jsonl").read_text().splitlines())}
    assert sorted(got) == sorted(expected)
    for row, needle in expected.items():
        assert needle in got[row], (row, got[row])
    with open_store(config(tmp_path, catalog).store) as store:  # the collection reads back and searches
        assert store.count("products") == GOOD
        vector = store.retrieve("products", store.scroll_ids("products")[:1], with_vectors=True)[0].vector
        assert len(store.search("products", np.asarray(vector, np.float32), limit=3)) == 3


def test_a_named_pipe_as_image_path_is_rejected_not_waited_on(tmp_path):
    """A FIFO blocked the decoder forever (and the web job behind it, which cancel could not stop)."""
    import os
    import threading

    from indexer.decode import Decoder, Rejected, Row

    os.mkfifo(tmp_path / "pipe.png")
    result: list = []
    worker = threading.Thread(target=lambda: result.append(Decoder(tmp_path, 32, "k")(
        Row(row=1, id="r1", product_id="r1", title="t", image="pipe.png"))), daemon=True)
    worker.start()
    worker.join(10)
    try:
        assert not worker.is_alive(), "the decoder is still waiting on the named pipe"
        assert isinstance(result[0], Rejected) and "is a named pipe (FIFO)" in result[0].reason, result
    finally:
        if worker.is_alive():  # release it: a writer that opens and closes gives the reader end-of-file
            os.close(os.open(tmp_path / "pipe.png", os.O_WRONLY | os.O_NONBLOCK))


def test_image_file_reads_are_bounded_by_size_and_time(folder, monkeypatch):
    import types

    from indexer import decode

    with pytest.raises(decode.Reject, match="over the 100-byte limit"):
        decode.read_file(folder / "img" / "0.png", decode.ImageLimits(max_bytes=100))
    clock = iter(range(0, 1000, 40))  # every reading of the clock is 40 s later
    monkeypatch.setattr(decode, "time", types.SimpleNamespace(monotonic=lambda: next(clock)))
    with pytest.raises(decode.Reject, match=r"took over 30s \(ImageLimits.read_timeout_s\)"):
        decode.read_file(folder / "img" / "0.png", decode.ImageLimits())


def test_reindex_never_switches_to_a_collection_that_does_not_read_back(folder, tmp_path, monkeypatch):
    """The safety net behind the schema check: a row the store writes but cannot read back (here a 130-level
    payload let past validation) made the embedded shard unopenable; the reindex switched to it and dropped the
    old collection, losing the whole index. Now the build is reopened and searched before the switch."""
    from indexer import IndexerError, run_reindex
    from indexer import decode

    good = folder / "good-for-verify.jsonl"
    good.write_text("\n".join(json.dumps(r) for r in good_rows()) + "\n")
    run_index(config(tmp_path, good))
    monkeypatch.setattr(decode, "payload_problem", lambda payload: None, raising=False)  # as on e8bc43e
    deep = folder / "deep.jsonl"
    row = {"id": "deep", "title": "t", "image": "img/0.png", "attributes": _nested(130)}
    deep.write_text("\n".join(json.dumps(r) for r in good_rows() + [row]) + "\n")
    with open_store(config(tmp_path, deep).store) as store:
        live = store.get_alias("products")
        # caught by the read-back check, or earlier by the run's sweep, which filters the build's payloads
        with pytest.raises(IndexerError, match="failed its read-back check|cannot be read back") as e:
            run_reindex(config(tmp_path, deep), store=store)
        assert "ecursion" in str(e.value) or "ecursion" in str(e.value.__cause__)
        assert "switch" not in e.value.report.stages and not e.value.report.switched
        assert store.get_alias("products") == live and store.count("products") == GOOD
        assert store.list_collections() == [live]  # the unreadable build was dropped
