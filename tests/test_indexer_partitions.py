"""The Ray path's partitions (indexer.readers checkpoints -> indexer.ray_stages.ranges / read_ranges): one pass
finds a checkpoint at a product boundary about every N rows, with the offset reading resumes at; each range runs
from checkpoint to checkpoint. So every row is read by exactly one task, a product whose photos are listed together
by one task, and no task reads the rows before its own (the old ranges skipped them by reading: rows x ranges).
Checked on JSON Lines, CSV (quoted newlines, CRLF, lone CR, a BOM, blank lines) and Parquet (several row groups)."""
from __future__ import annotations

import csv
import io
import json
import random

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from indexer.ray_pipeline import range_rows
from indexer.ray_stages import ranges, read_ranges
from indexer.readers import CsvReader, JsonlReader, ParquetReader, open_catalog


def _records(sizes: list[int]) -> tuple[list[dict], list[str]]:
    """Products of the given photo counts, listed together; every 9th row lacks a title (rejected), every 13th
    has a title across two lines."""
    records, products = [], []
    for p, size in enumerate(sizes):
        for _ in range(size):
            n = len(records)
            fields = {"id": f"r{n}", "product_id": f"p{p}", "image": "x.png", "title": "t\nwo" if n % 13 == 5 else "t"}
            if n % 9 == 8:
                fields["title"] = ""
            records.append(fields)
            products.append(f"p{p}")
    return records, products


def _write(tmp_path, kind: str, records: list[dict]) -> str:
    if kind == "jsonl":
        lines = [json.dumps(r) for r in records]
        for k in range(3, len(lines), 17):
            lines[k] += "\n"  # blank lines between some rows: JSON Lines row numbers count them
        path = tmp_path / "catalog.jsonl"
        path.write_text("\n".join(lines) + "\n")
    elif kind == "parquet":
        path = tmp_path / "catalog.parquet"
        pq.write_table(pa.Table.from_pylist(records), path, row_group_size=7)
    else:
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=list(records[0]), lineterminator="\r\n")
        writer.writeheader()
        writer.writerows(records)
        text = out.getvalue()
        if kind == "csv-cr":  # old Mac line ends: a lone \r after every record
            text = text.replace("\r\n", "\r")
        path = tmp_path / "catalog.csv"
        path.write_bytes(b"\xef\xbb\xbf" + text.encode())
    return str(path)


KINDS = ["jsonl", "csv", "csv-cr", "parquet"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("seed", range(3))
def test_every_row_is_read_once_and_every_product_by_one_task(tmp_path, kind, seed):
    rng = random.Random(seed)
    records, products = _records([rng.choice([1, 1, 2, 6, 7, 30]) for _ in range(40)])
    catalog = _write(tmp_path, kind, records)
    whole = [(raw.row, raw.fields) for raw in open_catalog(catalog)]
    assert len(whole) == len(records)
    for most in (1, 3, 10, 64, 1000):
        plan = open_catalog(catalog).checkpoints(most)
        assert plan.total == len(records) == open_catalog(catalog).count()
        assert 1 <= len(plan.points) <= most
        every = -(-len(records) // most)
        for rows in (1, every, 3 * every, len(records)):
            spans = ranges(plan, rows)
            assert spans[0]["start"] == 0 and spans[-1]["stop"] == len(records)
            assert all(a["stop"] == b["start"] for a, b in zip(spans, spans[1:]))
            owner: dict[int, int] = {}
            got = []
            for task, span in enumerate(spans):
                for table in read_ranges(pa.Table.from_pylist([span]), catalog, batch_rows=5):
                    for row in table.column("row").to_pylist():
                        assert row not in owner, (most, rows, row)
                        owner[row] = task
                        got.append(row)
            assert got == [row for row, _ in whole], (most, rows)  # each row once, in the file's order
            tasks: dict[str, set[int]] = {}
            for (row, _), product in zip(whole, products):
                tasks.setdefault(product, set()).add(owner[row])
            assert all(len(t) == 1 for t in tasks.values()), (most, rows)


@pytest.mark.parametrize("kind", KINDS)
def test_a_range_reads_its_own_rows_and_the_rows_are_the_whole_files(tmp_path, kind, monkeypatch):
    """Reading every range parses each row once (the old ranges re-read every row above their start), and a
    range's rows are the whole-file reader's rows, fields and row numbers alike."""
    records, _ = _records([3] * 60)
    catalog = _write(tmp_path, kind, records)
    whole = {raw.row: raw.fields for raw in open_catalog(catalog)}
    spans = ranges(open_catalog(catalog).checkpoints(64), 10)
    assert len(spans) >= 10
    cls = type(open_catalog(catalog))
    parsed = []
    parse = cls._parse
    monkeypatch.setattr(cls, "_parse", lambda self, row, record: parsed.append(row) or parse(self, row, record))
    read = {}
    for span in spans:
        read.update({raw.row: raw.fields for raw in _range(catalog, span)})
    assert sorted(parsed) == sorted(whole)  # nothing parsed twice, nothing skipped by parsing
    assert read == whole


def _range(catalog: str, span: dict):
    import itertools

    from indexer.readers import Checkpoint

    rows = open_catalog(catalog).rows_from(Checkpoint(span["start"], span["offset"], span["row"]))
    return list(itertools.islice(rows, span["stop"] - span["start"]))


def test_a_product_longer_than_a_range_stays_whole_and_an_empty_catalog_has_no_range(tmp_path):
    records, products = _records([2, 50, 2])
    catalog = _write(tmp_path, "jsonl", records)
    spans = ranges(open_catalog(catalog).checkpoints(5), 5)
    assert [(s["start"], s["stop"]) for s in spans] == [(0, 52), (52, 54)]  # the 50-photo product is not cut
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    plan = open_catalog(empty).checkpoints(5)
    assert (plan.total, plan.points, ranges(plan, 5)) == (0, [], [])


def test_range_rows_keep_every_worker_busy_and_are_bounded():
    assert range_rows(100, 2) == 13  # 4 ranges per worker
    assert range_rows(10_000_000, 8) == 2_000  # RANGE_ROWS, however large the catalog
    assert range_rows(0, 2) == 1


def test_plain_row_ranges_would_split_products(tmp_path):
    """What the boundaries fix: with 7-photo products and ranges of 10 plain rows, products are cut in two."""
    _, products = _records([7] * 12)
    cut = [s for s in range(10, len(products), 10) if products[s] == products[s - 1]]
    assert cut


def test_readers_resume_where_their_checkpoints_say(tmp_path):
    """The three readers are the ones open_catalog picks, and each resumes mid-file at a checkpoint."""
    records, _ = _records([4] * 10)
    for kind, cls in (("jsonl", JsonlReader), ("csv", CsvReader), ("parquet", ParquetReader)):
        reader = open_catalog(_write(tmp_path, kind, records))
        assert type(reader) is cls
        point = reader.checkpoints(8).points[2]  # 10 products: 8 or fewer checkpoints after thinning
        rest = list(reader.rows_from(point))
        assert len(rest) == len(records) - point.position
        assert rest[0].fields["id"] == records[point.position]["id"]


def test_a_small_catalog_gets_fine_checkpoints_and_a_large_one_at_most_the_cap(tmp_path):
    """Every product boundary is a checkpoint while they are few; past the cap they thin out evenly."""
    records, _ = _records([2] * 500)
    catalog = _write(tmp_path, "jsonl", records)
    assert [p.position for p in open_catalog(catalog).checkpoints(1000).points] == list(range(0, 1000, 2))
    thinned = [p.position for p in open_catalog(catalog).checkpoints(100).points]
    assert 50 <= len(thinned) <= 100
    gaps = {b - a for a, b in zip(thinned, thinned[1:])}
    assert max(gaps) <= 2 * min(gaps), gaps
