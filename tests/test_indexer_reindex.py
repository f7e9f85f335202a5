"""Catalog ingestion, blue/green reindex: the alias switch under searches, a failed or killed reindex, the CLI,
BM25 vectors and the vocabulary, deferred indexing, the Ray stages run without Ray.

Everything runs on the tiny backbone and a small demo catalog (tests/indexer_world.py); the tests that write a
store run once per backend (store_config, tests/conftest.py).
"""
from __future__ import annotations

import dataclasses
import json
import threading

import numpy as np
import pytest

from engine.product import RUN
from engine.store import StoreConfig, open_store, point_id
from indexer import IndexCancelled, IndexerError, ImageLimits, run_index, run_reindex
from indexer.embed import OnnxEmbedder
from indexer.pipeline import ingest
from indexer_world import ROWS, config, snapshot
from indexer_world import catalog, embedder, onnx_cache, store_cfg, world  # noqa: F401 (fixtures)


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
    from indexer.ray_stages import Embed, Prepare, StageConfig, Upload, ranges, read_ranges
    from indexer.readers import open_catalog

    cfg = config(catalog, tmp_path, onnx_cache, store_cfg)
    stage = StageConfig(catalog=str(catalog), image_root=str(catalog.parent), collection="stages", run_id="run-1",
                        sparse=True, model_key=embedder.key, image_size=embedder.image_size, limits=ImageLimits(),
                        allow_urls=False, url_timeout_s=10.0, store=cfg.store)
    embed = Embed(str(embedder.encoder.path), ["CPUExecutionProvider"], None, embedder.mean, embedder.std,
                  embedder.key, embedder.variant)
    parts = pa.Table.from_pylist(ranges(open_catalog(catalog).checkpoints(1000), ROWS // 3))
    with open_store(cfg.store) as store:
        for name in ("here", "stages"):
            store.create_collection(name, dim=embedder.dim)
        ingest(cfg, store, "here", embedder, prune=True)
        prepare, upload = Prepare(stage, store), Upload(stage, store)

        def run() -> list[dict]:
            return [s for b in read_ranges(parts, str(catalog), 16) for s in upload(embed(prepare(b))).to_pylist()]

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
