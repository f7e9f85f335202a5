"""Catalog ingestion, the rows: readers (CSV, JSON Lines, Parquet), unreadable catalogs, field validation.

Everything runs on the tiny backbone and a small demo catalog (tests/indexer_world.py); the tests that write a
store run once per backend (store_config, tests/conftest.py).
"""
from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from engine.store import point_id
from indexer import IndexerError
from indexer.decode import Rejected, Row, validate
from indexer.readers import RawRow, open_catalog
from indexer_world import ROWS
from indexer_world import catalog, embedder, onnx_cache, store_cfg, world  # noqa: F401 (fixtures)


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
