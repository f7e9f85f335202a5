"""Half-created collections: a process SIGKILLed while the embedded store created a collection left a directory
without meta.json (with the engine's preallocated 32 MiB WAL), and one killed while dropping one left a `.trash-*`
directory. The store ignored both, and nothing removed them: each killed attempt cost disk space for good. Now the
store removes them when it opens (engine/store/orphans.py::remove_unfinished, under the store's exclusive lock),
never a directory an alias names, and never a complete collection (those are orphans that a reindex adopts)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np

from engine.diskspace import tree_bytes
from engine.store import StoreConfig, open_store
from engine.store.base import Point, point_id

ROOT = Path(__file__).resolve().parents[2]
DIM = 8

# The child opens the store and stops for good at one step of a create or a drop, printing "ready" there; the
# test then kills it with SIGKILL, as a crash or the OOM killer would.
CHILD = """
import os, shutil, sys, time
from engine.store import StoreConfig, open_store
import engine.store.embedded as embedded

step, name = sys.argv[2], sys.argv[3]
real_replace, real_rmtree = os.replace, shutil.rmtree

def stop_here():
    print("ready", flush=True)
    time.sleep(600)

def replace(src, dst):
    if step == "create" and str(dst).endswith("meta.json"):
        stop_here()  # the shard and its WAL are on disk; meta.json, written last, is not
    return real_replace(src, dst)

def rmtree(path, *args, **kwargs):
    if step == "drop" and ".trash-" in str(path):
        stop_here()  # the collection was renamed away, not yet deleted
    return real_rmtree(path, *args, **kwargs)

embedded.os.replace, embedded.shutil.rmtree = replace, rmtree
store = open_store(StoreConfig(path=sys.argv[1]))
if step == "create":
    store.create_collection(name, dim=8)
else:
    store.drop_collection(name)
"""


def kill_during(store_path: Path, step: str, name: str) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    with subprocess.Popen([sys.executable, "-c", CHILD, str(store_path), step, name], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, env=env) as child:
        try:
            line = child.stdout.readline()
            assert line.strip() == "ready", (line, child.stderr.read()[-2000:] if child.poll() is not None else "")
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait(30)
    assert child.returncode == -signal.SIGKILL


def points(n: int) -> list[Point]:
    rng = np.random.default_rng(0)
    return [Point(point_id(f"p{i}"), rng.normal(size=DIM).astype(np.float32), {"product_id": f"p{i}"})
            for i in range(n)]


def test_collections_half_created_or_half_dropped_by_a_killed_process_are_removed_at_open(tmp_path, caplog):
    config = StoreConfig(path=str(tmp_path / "store"))
    collections = tmp_path / "store" / "collections"
    with open_store(config) as store:
        for name in ("products-live", "products-orphan", "doomed"):
            store.create_collection(name, dim=DIM)
            store.upsert(name, points(5))
        store.set_alias("products", "products-live")
    kill_during(tmp_path / "store", "create", "products-half")
    half = collections / "products-half"
    assert half.is_dir() and not (half / "meta.json").exists() and tree_bytes(half) > 0
    # an alias that names a directory is never touched, whatever state it is in
    aliases = tmp_path / "store" / "aliases.json"
    aliases.write_text(json.dumps({"products": "products-live", "by-hand": "products-half"}))
    with open_store(config) as store:
        assert half.is_dir()
        assert store.list_collections() == ["doomed", "products-live", "products-orphan"]
    aliases.write_text(json.dumps({"products": "products-live"}))
    with caplog.at_level("WARNING", logger="engine.store.orphans"):
        with open_store(config) as store:
            assert not half.exists()
            assert "whose creation was killed" in caplog.text
            store.create_collection("products-half", dim=DIM)  # the name is free again and works
            assert store.count("products-half") == 0
        kill_during(tmp_path / "store", "drop", "doomed")
        (trash,) = collections.glob(".trash-doomed-*")
        assert tree_bytes(trash) > 0
        with open_store(config) as store:
            assert not trash.exists() and "drop or restore that was killed" in caplog.text
            assert sorted(p.name for p in collections.iterdir()) == ["products-half", "products-live",
                                                                      "products-orphan"]
            assert store.get_alias("products") == "products-live" and store.count("products") == 5
            assert store.count("products-orphan") == 5  # a complete orphan stays: a reindex adopts it
