"""The bulk path on Ray Data (indexer.ray_pipeline): the same collection as the in-process path, incremental and
mark-and-sweep runs, a corrupt image in a partition, a worker killed mid-run, a killed driver's build adopted.

One local Ray (2 CPUs) serves the whole module. A Ray run costs tens of seconds on the shared 2-core machine, so
the module is `slow` (`pytest -m slow tests/test_indexer_ray.py`; figures in docs/reliability.md).
"""
from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from engine.product import RUN
from engine.store import open_store, point_id
from indexer import IndexerConfig, run_index, run_reindex
from indexer.pipeline import ingest
from indexer.reindex import _build_target
from indexer_world import ROOT, ROWS, config, copy_world
from indexer_world import onnx_cache, world  # noqa: F401 (fixtures)

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.slow



@pytest.fixture(scope="module", autouse=True)
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})
    yield
    ray.shutdown()


@pytest.fixture
def catalog(world, tmp_path) -> Path:
    """The demo catalog plus, in the last partition, a row whose image is corrupt and a row repeating the first
    row's id (a duplicate across partitions)."""
    path = copy_world(world, tmp_path / "cat")
    whole = next((tmp_path / "cat" / "images").rglob("*.png")).read_bytes()
    (tmp_path / "cat" / "broken.png").write_bytes(whole[:len(whole) // 2])  # truncated
    first = json.loads(path.read_text().splitlines()[0])
    with path.open("a") as f:
        f.write(json.dumps({"id": "broken", "title": "A broken photo", "image": "broken.png"}) + "\n")
        f.write(json.dumps({**first, "title": "The first photo again"}) + "\n")
    return path


def contents(cfg: IndexerConfig) -> tuple[dict, dict]:
    """(point id -> (vector, payload without the run mark), the collection's spelling vocabulary), read after a
    reopen."""
    from engine.vocabulary import read_vocabulary

    with open_store(cfg.store) as store:
        ids = store.scroll_ids(cfg.alias)
        points = {p.id: (p.vector, {k: v for k, v in p.payload.items() if k != RUN})
                  for p in store.retrieve(cfg.alias, ids, with_vectors=True)}
        found = read_vocabulary(store, store.get_alias(cfg.alias) or cfg.alias)[1]
        return points, {"rows": found.rows, "words": dict(found.counts)} if found is not None else None


def cli(cfg: IndexerConfig, command: str, *flags: str) -> int:
    from coinage.cli import main

    s = cfg.store
    where = ["--store-url", s.url] if s.backend == "server" else ["--store-path", s.path]
    return main([command, "--catalog", str(cfg.catalog), "--backbone", "tiny-random", *where, "--onnx-cache",
                 str(cfg.onnx_cache), "--rejects", str(cfg.rejects_path), "--no-progress", "--device", "cpu",
                 "--batch-size", "8", "--json", *flags])


def test_reindex_on_ray_gives_the_in_process_collection(catalog, tmp_path, onnx_cache, store_config, capsys):
    """`coinage reindex --workers 2` == the in-process reindex: ids, vectors (fp tolerance), payloads, vocabulary;
    the corrupt image and the duplicate id (across partitions: Ray's group-by, indexer.ray_duplicates) are reported
    with their rows and skipped. A rerun reads nothing new; a removed row is swept."""
    here = config(catalog, tmp_path, onnx_cache, store_config(tmp_path / "here", persistent=True))
    there = config(catalog, tmp_path, onnx_cache, store_config(tmp_path / "ray", persistent=True),
                   rejects_path=tmp_path / "ray-rejects.jsonl")
    expected = run_reindex(here).ingest
    assert (expected.accepted, expected.rejected) == (ROWS, 2)
    assert cli(there, "reindex", "--workers", "2") == 0
    got = json.loads(capsys.readouterr().out)["ingest"]
    assert (got["accepted"], got["unchanged"], got["rejected"], got["rows"]) == (ROWS, 0, 2, ROWS + 2)
    assert got["runner"] == "ray data, 2 workers" and expected.runner == "in process"
    assert got["vocabulary_words"] == expected.vocabulary_words
    rejected = sorted((json.loads(line) for line in there.rejects_path.read_text().splitlines()), key=lambda r: r["row"])
    assert rejected == sorted((json.loads(line) for line in here.rejects_path.read_text().splitlines()),
                              key=lambda r: r["row"])
    assert rejected[0]["row"] == ROWS + 1 and rejected[0]["id"] == "broken" and "corrupt" in rejected[0]["reason"]
    assert rejected[1]["row"] == ROWS + 2 and rejected[1]["reason"] == "duplicate id: first seen at row 1"
    (want, want_meta), (have, have_meta) = contents(here), contents(there)
    assert sorted(have) == sorted(want) and len(have) == ROWS
    for pid, (vector, payload) in want.items():
        assert have[pid][1] == payload
        np.testing.assert_allclose(have[pid][0], vector, atol=1e-6)
    assert want_meta and want_meta["words"] and have_meta == want_meta

    lines = catalog.read_text().splitlines()
    catalog.write_text("".join(line + "\n" for line in lines[1:-1]))  # the first row and its duplicate leave
    assert cli(there, "index", "--workers", "2", "--prune") == 0
    rerun = json.loads(capsys.readouterr().out)
    assert (rerun["accepted"], rerun["unchanged"], rerun["pruned"], rerun["runner"]) == (0, ROWS - 1, 1, got["runner"])
    left, _ = contents(there)
    assert sorted(left) == sorted(set(want) - {point_id(json.loads(lines[0])["id"])})


def _worker_pids(name: str) -> list[int]:
    import psutil

    pids = []
    for p in psutil.process_iter(["cmdline"]):
        if any(name in part for part in (p.info["cmdline"] or [])):
            pids.append(p.pid)
    return pids


def test_a_worker_killed_mid_run_leaves_every_row_exactly_once(catalog, tmp_path, onnx_cache, make_store_config):
    """SIGKILL an embed actor while the run goes on: Ray restarts it and retries its batches; the run finishes
    with every row counted once and the same points as a clean run."""
    cfg = config(catalog, tmp_path, onnx_cache, make_store_config("embedded", tmp_path / "store"), ray_workers=2)
    killed: list[int] = []

    def kill_one_embed_worker() -> None:
        deadline = time.monotonic() + 300
        while not killed and time.monotonic() < deadline:
            pids = _worker_pids("MapBatches(Embed)")
            if pids:
                time.sleep(1.0)  # let it take batches
                os.kill(pids[0], signal.SIGKILL)
                killed.append(pids[0])
            time.sleep(0.2)

    killer = threading.Thread(target=kill_one_embed_worker, daemon=True)
    killer.start()
    report = run_reindex(cfg).ingest
    killer.join()
    assert killed, "no embed worker was seen to kill"
    assert (report.accepted, report.unchanged, report.rejected, report.rows) == (ROWS, 0, 2, ROWS + 2)
    points, meta = contents(cfg)
    assert len(points) == ROWS
    clean = config(catalog, tmp_path, onnx_cache, make_store_config("embedded", tmp_path / "clean"))
    run_index(clean)
    want, want_meta = contents(clean)
    assert sorted(points) == sorted(want) and meta == want_meta
    for pid, (vector, payload) in want.items():
        assert points[pid][1] == payload
        np.testing.assert_allclose(points[pid][0], vector, atol=1e-6)


def test_a_rerun_after_a_killed_driver_adopts_its_build(catalog, tmp_path, onnx_cache, make_store_config):
    """A driver killed mid-reindex leaves its build collection half full; the rerun on Ray adopts it, skips the
    rows already there and switches the alias to it."""
    from indexer.pipeline import build_embedder, load_backbone_for

    cfg = config(catalog, tmp_path, onnx_cache, make_store_config("server", tmp_path / "store", persistent=True),
                 ray_workers=2)
    half = catalog.parent / "half.jsonl"
    half.write_text("".join(line + "\n" for line in catalog.read_text().splitlines()[:ROWS // 2]))
    embedder = build_embedder(cfg, load_backbone_for(cfg))
    with open_store(cfg.store) as store:  # what the killed driver left: a build collection, half written
        build, resumed = _build_target(store, cfg.alias, embedder.dim)
        assert not resumed
        ingest(config(half, tmp_path, onnx_cache, cfg.store), store, build, embedder)
    report = run_reindex(cfg)
    assert report.resumed and report.switched and report.collection == build
    assert (report.ingest.unchanged, report.ingest.accepted) == (ROWS // 2, ROWS // 2)
    points, _ = contents(cfg)
    assert len(points) == ROWS
