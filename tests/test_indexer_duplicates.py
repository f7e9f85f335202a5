"""Duplicate row ids, found without a per-run id map: a later row repeating an id is rejected with both row numbers
("duplicate id: first seen at row N"), the point keeps the first row, and what the in-process pass holds in memory
for it is bounded by its decode window, not by the catalog (indexer.pipeline: run marks with their catalog row in
the store, plus the rows in flight). The Ray path's group-by (indexer.ray_duplicates) runs in
tests/test_indexer_ray.py (slow); its read stage's half is tested here without Ray.
"""
from __future__ import annotations

import json

import pyarrow as pa

from engine.store import open_store, point_id
from indexer import run_index
from indexer.pipeline import _Run
from indexer.ray_stages import REJECTED, ranges, read_ranges
from indexer.readers import open_catalog
from indexer_world import ROWS, config, rejects
from indexer_world import catalog, embedder, onnx_cache, store_cfg, world  # noqa: F401 (fixtures)


def _repeat(lines: list[str], n: int, **changes) -> str:
    return json.dumps({**json.loads(lines[n - 1]), **changes})  # row n (1-based) again


def test_duplicates_in_flight_and_already_written_are_reported_with_both_rows(catalog, tmp_path, onnx_cache,
                                                                              store_cfg):
    """Row 2 repeats row 1 in the same chunk (in flight), row 70 repeats row 60 (the next chunk: in flight or
    written), the last rows repeat rows 1 and 5 long after they were written; a rerun on the unchanged catalog
    (the first rows only marked, not written) reports the same."""
    lines = catalog.read_text().splitlines()
    rows = [lines[0], _repeat(lines, 1, title="copy A"), *lines[1:68], _repeat(lines, 60, title="copy B"),
            *lines[68:], _repeat(lines, 1, title="copy C"), _repeat(lines, 5, title="copy D")]
    catalog.write_text("\n".join(rows) + "\n")
    want = {2: 1, 70: 60 + 1, ROWS + 3: 1, ROWS + 4: 5 + 1}  # row -> first row (rows 2.. shifted by one)
    for _ in range(2):
        cfg = config(catalog, tmp_path, onnx_cache, store_cfg)
        report = run_index(cfg)
        assert report.rows == ROWS + 4 and report.accepted + report.unchanged == ROWS and report.rejected == 4
        got = {r["row"]: r["reason"] for r in rejects(cfg.rejects_path)}
        assert got == {row: f"duplicate id: first seen at row {first}" for row, first in want.items()}
        with open_store(cfg.store) as store:
            kept = {p.payload["title"] for p in store.retrieve("products", [point_id(json.loads(lines[0])["id"])])}
        assert not kept & {"copy A", "copy C"}


def test_what_the_pass_holds_for_duplicates_is_bounded_by_its_window_not_the_catalog(catalog, tmp_path, onnx_cache,
                                                                                      store_cfg, monkeypatch):
    """600 rows (the demo rows under new ids): the rows held in flight stay under the decode window and batches
    (~150 rows at batch 8), on a first run and on a rerun where every row is only marked."""
    lines = catalog.read_text().splitlines()
    many = [json.dumps({**json.loads(lines[n % ROWS]), "id": f"m{n}"}) for n in range(600)]
    catalog.write_text("\n".join(many) + "\n")
    held: list[int] = []
    first_row = _Run._first_row
    monkeypatch.setattr(_Run, "_first_row", lambda self, *a: held.append(len(self.in_flight)) or first_row(self, *a))
    cfg = config(catalog, tmp_path, onnx_cache, store_cfg)
    assert run_index(cfg).accepted == 600
    assert run_index(cfg).unchanged == 600
    assert len(held) == 1200 and 0 < max(held) <= 160, max(held)


def test_the_ray_read_stage_rejects_the_repeats_the_group_by_found(catalog):
    """read_ranges with the driver's `duplicates` (id -> first row): every other row of such an id is rejected."""
    lines = catalog.read_text().splitlines()
    catalog.write_text("\n".join([*lines, _repeat(lines, 3, title="again")]) + "\n")
    rid = json.loads(lines[2])["id"]
    parts = pa.Table.from_pylist(ranges(open_catalog(catalog).checkpoints(100), ROWS + 1))
    out = pa.concat_tables(read_ranges(parts, str(catalog), 32, {rid: 3})).to_pylist()
    assert len(out) == ROWS + 1
    assert [(r["row"], r["kind"], r["reason"]) for r in out if r["id"] == rid] == [
        (3, "", ""), (ROWS + 1, REJECTED, "duplicate id: first seen at row 3")]
