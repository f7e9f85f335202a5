"""Catalog ingestion, whole runs: bad rows reported and skipped, incremental reruns, the prune guards,
kill-and-resume.

Everything runs on the tiny backbone and a small demo catalog (tests/indexer_world.py); the tests that write a
store run once per backend (store_config, tests/conftest.py).
"""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from engine.product import ROW, RUN
from engine.store import open_store, point_id
from indexer import run_index
from indexer.pipeline import ingest
from indexer_world import ROOT, ROWS, config, png_header_only, rejects, snapshot
from indexer_world import catalog, embedder, onnx_cache, store_cfg, world  # noqa: F401 (fixtures)


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
    # not re-embedded; equal to float32 rounding, not bit for bit: qdrant-client >= 1.20's local mode (the server
    # backend here) stores a point as memory holds it when its payload is set and normalises it again on reopening
    np.testing.assert_allclose(after[same][0], before[same][0], rtol=0, atol=1e-6)
    assert before[same][1].pop(RUN) != after[same][1].pop(RUN)  # every run marks the rows it saw, at their row
    assert before[same][1].pop(ROW) == after[same][1].pop(ROW) == 1
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
        assert got[pid][1].pop(RUN) != payload.pop(RUN)  # every run marks its points with its own id
        assert got[pid][1] == payload
        np.testing.assert_array_equal(got[pid][0], vector)  # ORT gives bitwise-equal rows whatever the batch
