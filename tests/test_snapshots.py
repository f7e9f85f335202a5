"""`coinage snapshot create|list|restore`: the embedded backend for real, the server backend
against a 3-node stand-in for Qdrant's REST API on 127.0.0.1 (tests/qdrant_stub.py: qdrant-client's
in-memory mode has no snapshots, and no Qdrant server runs here)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from qdrant_stub import QdrantStub

from coinage.cli import main
from engine.query import QueryConfig
from engine.query.spelling_source import SpellingSource
from engine.store import Filter, Point, StoreConfig, StoreError, open_store, point_id
from engine.store.snapshots import Manifest, SnapshotConfig, create_snapshot, list_snapshots
from engine.vocabulary import Vocabulary, read_vocabulary, write_vocabulary

DIM = 16
ENV_VARS = ("COINAGE_STORE_BACKEND", "COINAGE_STORE_PATH", "COINAGE_QDRANT_URL", "COINAGE_QDRANT_API_KEY",
            "COINAGE_QDRANT_NODES", "COINAGE_SNAPSHOT_DIR", "COINAGE_COLLECTION", "COINAGE_QDRANT_SHARDS",
            "COINAGE_QDRANT_REPLICAS", "COINAGE_QDRANT_WRITE_CONSISTENCY", "COINAGE_QDRANT_TIMEOUT_S")
# qdrant-client warns when an API key goes over http; the stub speaks plain http on loopback
insecure_key_ok = pytest.mark.filterwarnings("ignore:Api key is used with an insecure connection")


@pytest.fixture
def env(monkeypatch, tmp_path):
    for var in ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("COINAGE_DATA_DIR", str(tmp_path / "data"))
    return monkeypatch


def points(n: int = 120, seed: int = 0) -> list[Point]:
    rng = np.random.default_rng(seed)
    return [Point(point_id(f"sku-{i}"), rng.standard_normal(DIM).astype(np.float32),
                  {"product_id": f"sku-{i}", "category": ["shoes", "bags", "hats"][i % 3]}) for i in range(n)]


# --- embedded -------------------------------------------------------------------------------


def test_embedded_snapshot_restore_round_trip(env, tmp_path, capsys):
    config = StoreConfig(path=str(tmp_path / "data" / "store"))
    q = np.random.default_rng(9).standard_normal(DIM).astype(np.float32)
    flt = Filter(must={"category": "bags"})
    with open_store(config) as store:
        store.create_collection("products-1", DIM, payload_indexes={"category": "keyword"})
        store.upsert("products-1", points())
        store.optimize("products-1")
        store.set_alias("products", "products-1")
        before = store.search("products", q, limit=10, filter=flt)

    assert main(["snapshot", "create", "--json"]) == 0
    created = json.loads(capsys.readouterr().out)
    folder = Path(created["folder"])
    assert folder.parent == tmp_path / "data" / "snapshots"  # <data_dir>/snapshots by default
    manifest = Manifest.read(folder)
    assert (manifest.backend, manifest.collection, manifest.alias, manifest.points) == (
        "embedded", "products-1", "products", 120)
    assert manifest.files[0].sha256 == hashlib.sha256((folder / manifest.files[0].file).read_bytes()).hexdigest()

    assert main(["snapshot", "list"]) == 0
    assert folder.name in capsys.readouterr().out

    # the snapshot's own name is taken: restore refuses, naming --collection
    assert main(["snapshot", "restore", folder.name]) == 1
    assert "--collection" in capsys.readouterr().err
    assert main(["snapshot", "restore", folder.name, "--collection", "products-restored"]) == 0
    assert "alias 'products' -> products-restored (was products-1)" in capsys.readouterr().out
    with open_store(config) as store:
        assert store.get_alias("products") == "products-restored"
        assert store.count("products") == 120
        after = store.search("products", q, limit=10, filter=flt)
        assert [h.id for h in after] == [h.id for h in before]
        np.testing.assert_allclose([h.score for h in after], [h.score for h in before], atol=1e-5)
        assert [h.payload for h in after] == [h.payload for h in before]
        store.upsert("products-restored", points(5, seed=3))  # a restored collection takes writes
        assert store.count("products-1") == 120


def shop_vocabulary() -> Vocabulary:
    vocabulary = Vocabulary()
    for title in ("Quokkaberry Parasol", "Aurora Striped Dress", "Dune Backpack"):
        vocabulary.add({"title": title})
    return vocabulary


@pytest.mark.parametrize("kept", ["artifact", "metadata"])
def test_embedded_snapshot_round_trips_the_spelling_vocabulary(env, tmp_path, capsys, kept):
    config = StoreConfig(path=str(tmp_path / "data" / "store"))
    with open_store(config) as store:
        store.create_collection("products-1", DIM)
        store.upsert("products-1", points())
        store.set_alias("products", "products-1")
        if kept == "artifact":
            write_vocabulary(store, "products-1", shop_vocabulary())
        else:  # a collection built before the artifact: its vocabulary is in its metadata
            store.set_metadata("products-1", shop_vocabulary().to_metadata())
    assert main(["snapshot", "create", "--json"]) == 0
    folder = Path(json.loads(capsys.readouterr().out)["folder"])
    assert [f.file for f in Manifest.read(folder).artifacts] == ["spelling.json"]
    assert main(["snapshot", "restore", folder.name, "--collection", "products-restored"]) == 0
    with open_store(config) as store:
        assert read_vocabulary(store, "products-restored")[1].counts == shop_vocabulary().counts
        speller = SpellingSource(store, QueryConfig(collection="products")).get()
        assert speller.correct("quokaberri parasol").corrected == "quokkaberry parasol"  # typo correction works


def test_embedded_snapshot_needs_the_store_to_itself(env, tmp_path, capsys):
    config = StoreConfig(path=str(tmp_path / "data" / "store"))
    with open_store(config) as store:
        store.create_collection("products", DIM)
        assert main(["snapshot", "create"]) == 1  # as if `coinage serve` held the store
    assert "stop `coinage serve`" in capsys.readouterr().err
    assert main(["snapshot", "create", "--collection", "nope"]) == 1
    assert "'nope' does not exist" in capsys.readouterr().err
    assert list_snapshots(SnapshotConfig(dir=tmp_path / "data" / "snapshots")) == []  # nothing half-written listed


def test_restore_refuses_damaged_files_and_other_backends(env, tmp_path, capsys):
    config = StoreConfig(path=str(tmp_path / "data" / "store"))
    snaps = SnapshotConfig(dir=tmp_path / "snaps")
    with open_store(config) as store:
        store.create_collection("c", DIM)
        store.upsert("c", points(10))
        folder, manifest = create_snapshot(store, config, snaps, "c")
    env.setenv("COINAGE_SNAPSHOT_DIR", str(tmp_path / "snaps"))
    env.setenv("COINAGE_STORE_BACKEND", "server")
    env.setenv("COINAGE_QDRANT_URL", ":memory:")
    assert main(["snapshot", "restore", str(folder), "--collection", "c2"]) == 1
    err = capsys.readouterr().err
    assert "snapshot of an embedded store" in err and "coinage reindex" in err
    env.delenv("COINAGE_STORE_BACKEND")
    env.delenv("COINAGE_QDRANT_URL")
    archive = folder / manifest.files[0].file
    archive.write_bytes(archive.read_bytes()[:-10] + b"0123456789")
    assert main(["snapshot", "restore", folder.name, "--collection", "c2"]) == 1
    assert "does not match its sha256" in capsys.readouterr().err
    with open_store(config) as store:
        assert store.list_collections() == ["c"]


def test_in_memory_server_mode_says_it_has_no_snapshots():
    config = StoreConfig(backend="server", url=":memory:")
    with open_store(config) as store:
        store.create_collection("c", DIM)
        with pytest.raises(StoreError, match="in-memory mode"):
            create_snapshot(store, config, SnapshotConfig(dir=Path("/nonexistent-unused")), "c")


# --- server (3-node stand-in) ----------------------------------------------------------------


def server_env(env, stub: QdrantStub, nodes: list[str] | None = None) -> None:
    env.setenv("COINAGE_STORE_BACKEND", "server")
    env.setenv("COINAGE_QDRANT_URL", stub.urls[0])
    env.setenv("COINAGE_QDRANT_API_KEY", stub.cluster.api_key)
    env.setenv("COINAGE_QDRANT_NODES", ",".join(stub.urls if nodes is None else nodes))


@insecure_key_ok
def test_server_snapshot_and_restore_go_to_every_node(env, tmp_path, capsys):
    with QdrantStub(nodes=3) as stub:
        c = stub.cluster
        c.collections["products-20261129-120000-000"] = 1200
        c.aliases["products"] = "products-20261129-120000-000"
        server_env(env, stub)

        assert main(["snapshot", "create", "--json"]) == 0
        folder = Path(json.loads(capsys.readouterr().out)["folder"])
        # each node snapshots its own shards; the files are fetched, then deleted there
        made = stub.requests("POST", r"/collections/products-20261129-120000-000/snapshots")
        assert [r.node for r in made] == [0, 1, 2] and all(r.query == {"wait": "true"} for r in made)
        assert all(r.headers["api-key"] == "test-key" for r in stub.cluster.requests)
        for i in range(3):
            assert (folder / f"node-{i}.snapshot").read_bytes() == c.shard_data(i, "products-20261129-120000-000")
        gets = stub.requests("GET", r"/collections/products-20261129-120000-000/snapshots/.+\.snapshot")
        deletes = stub.requests("DELETE", r"/collections/products-20261129-120000-000/snapshots/.+\.snapshot")
        assert [r.node for r in gets] == [r.node for r in deletes] == [0, 1, 2]
        assert all(not files for node in c.snapshots for files in node.values())
        manifest = Manifest.read(folder)
        assert (manifest.backend, manifest.collection, manifest.alias, manifest.points, manifest.server_version) == (
            "server", "products-20261129-120000-000", "products", 1200, "1.20.1")
        assert [f.node for f in manifest.files] == stub.urls

        # disaster: the cluster comes back empty; restore puts node i's file on node i, then the alias
        c.collections.clear()
        c.aliases.clear()
        c.requests.clear()
        assert main(["snapshot", "restore", folder.name]) == 0
        uploads = stub.requests("POST", r"/collections/products-20261129-120000-000/snapshots/upload")
        assert [r.node for r in uploads] == [0, 1, 2]
        for r, f in zip(uploads, manifest.files, strict=True):
            assert r.query == {"wait": "true", "priority": "snapshot", "checksum": f.sha256}
            assert r.headers["content-type"].startswith("multipart/form-data")
        assert [(u["node"], u["from_node"], u["filename"]) for u in c.uploads] == [
            (i, i, f"node-{i}.snapshot") for i in range(3)]
        assert c.aliases == {"products": "products-20261129-120000-000"}
        assert "restored 'products-20261129-120000-000' (1200 points)" in capsys.readouterr().out


@insecure_key_ok
def test_server_snapshot_round_trips_the_spelling_vocabulary(env, tmp_path, capsys):
    with QdrantStub(nodes=3) as stub:
        c = stub.cluster
        c.collections["products-20261129-120000-000"] = 1200
        c.aliases["products"] = "products-20261129-120000-000"
        server_env(env, stub)
        config = StoreConfig.from_env()
        with open_store(config) as store:
            write_vocabulary(store, "products-20261129-120000-000", shop_vocabulary())
        assert main(["snapshot", "create", "--json"]) == 0
        folder = Path(json.loads(capsys.readouterr().out)["folder"])
        assert [f.file for f in Manifest.read(folder).artifacts] == ["spelling.json"]
        c.collections.clear()  # disaster: the artifacts collection is lost with the rest
        c.aliases.clear()
        c.points.clear()
        assert main(["snapshot", "restore", folder.name]) == 0
        with open_store(config) as store:
            restored = read_vocabulary(store, "products-20261129-120000-000")[1]
            assert restored.counts == shop_vocabulary().counts
            speller = SpellingSource(store, QueryConfig(collection="products")).get()
            assert speller.correct("quokaberri parasol").corrected == "quokkaberry parasol"


@insecure_key_ok
def test_server_snapshot_refuses_a_partial_node_list(env, capsys):
    with QdrantStub(nodes=3) as stub:
        stub.cluster.collections["products"] = 10
        server_env(env, stub, nodes=stub.urls[:1])  # only the first node listed
        assert main(["snapshot", "create"]) == 1
        err = capsys.readouterr().err
        assert "has 3 node(s) but 1 URL(s)" in err and "COINAGE_QDRANT_NODES" in err
        assert not stub.requests("POST", r".*/snapshots")
        assert main(["snapshot", "create", *sum((["--node", u] for u in stub.urls), [])]) == 0  # --node wins
        capsys.readouterr()


@insecure_key_ok
def test_server_restore_checks_node_count_version_and_points(env, tmp_path, capsys):
    with QdrantStub(nodes=3) as stub:
        c = stub.cluster
        c.collections["products-1"] = 50
        server_env(env, stub)
        assert main(["snapshot", "create", "--collection", "products-1", "--keep-on-nodes"]) == 0
        capsys.readouterr()
        assert all(len(node["products-1"]) == 1 for node in c.snapshots)  # kept on the nodes
        assert main(["snapshot", "list", "--on-nodes", "--collection", "products-1"]) == 0
        listed = capsys.readouterr().out
        assert "products-1-0-2026" in listed and "products-1-2-2026" in listed
        (folder, manifest), = list_snapshots(SnapshotConfig(dir=tmp_path / "data" / "snapshots"))

        server_env(env, stub, nodes=stub.urls[:2])
        assert main(["snapshot", "restore", str(folder), "--collection", "r1"]) == 1
        assert "3-node deployment, but 2 node URL(s)" in capsys.readouterr().err

        server_env(env, stub)
        c.version = "1.21.0"
        assert main(["snapshot", "restore", str(folder), "--collection", "r1"]) == 1
        assert "only within one minor version" in capsys.readouterr().err
        c.version = "1.20.3"

        manifest_path = folder / "manifest.json"  # the stub restores the 50 points the files hold; claim 51
        data = json.loads(manifest_path.read_text())
        data["points"] = 51
        manifest_path.write_text(json.dumps(data))
        c.aliases["products"] = "products-1"
        assert main(["snapshot", "restore", str(folder), "--collection", "r1", "--alias", "products"]) == 1
        assert "holds 50 points but the snapshot had 51" in capsys.readouterr().err
        assert c.aliases == {"products": "products-1"}  # not switched


@insecure_key_ok
def test_server_snapshot_with_a_wrong_api_key_names_the_variable(env, capsys):
    with QdrantStub(nodes=1) as stub:
        stub.cluster.collections["products"] = 1
        server_env(env, stub)
        stub.cluster.api_key = "another-key"
        assert main(["snapshot", "create"]) == 1
        assert "COINAGE_QDRANT_API_KEY" in capsys.readouterr().err


# --- the CLI against careless operators ----------------------------------------------------


def _one_snapshot(tmp_path) -> tuple[StoreConfig, Path]:
    config = StoreConfig(path=str(tmp_path / "data" / "store"))
    with open_store(config) as store:
        store.create_collection("c", DIM)
        store.upsert("c", points(10))
        store.set_alias("products", "c")
        folder, _ = create_snapshot(store, config, SnapshotConfig(dir=tmp_path / "data" / "snapshots"), "products")
    return config, folder


def test_one_damaged_manifest_does_not_break_list(env, tmp_path, capsys):
    _, folder = _one_snapshot(tmp_path)
    damaged = folder.parent / "zz-damaged"
    damaged.mkdir()
    (damaged / "manifest.json").write_text('{"backend": "embedded", "coll')
    assert main(["snapshot", "list"]) == 0
    out, err = capsys.readouterr()
    assert folder.name in out and "10 points" in out
    assert "damaged: zz-damaged: cannot read" in err and "the snapshot is damaged" in err
    assert main(["snapshot", "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [Path(s["folder"]).name for s in listed["snapshots"]] == [folder.name]
    assert [Path(d["folder"]).name for d in listed["damaged"]] == ["zz-damaged"]


@pytest.mark.parametrize("argv", [["--collection", "bad name!"], ["--collection", "ok", "--alias", "../x"]])
def test_bad_collection_or_alias_names_are_usage_errors_and_restore_nothing(env, tmp_path, capsys, argv):
    config, folder = _one_snapshot(tmp_path)
    with pytest.raises(SystemExit) as e:
        main(["snapshot", "restore", folder.name, *argv])
    assert e.value.code == 2
    assert "is invalid: use 1-128 letters, digits" in capsys.readouterr().err
    with open_store(config) as store:
        assert store.list_collections() == ["c"]


def test_the_alias_is_checked_before_restoring_so_no_orphan_is_left(env, tmp_path, capsys):
    config, folder = _one_snapshot(tmp_path)
    assert main(["snapshot", "restore", folder.name, "--collection", "c2", "--alias", "c"]) == 1
    assert "--alias 'c' names a collection, not an alias" in capsys.readouterr().err
    with open_store(config) as store:
        assert store.list_collections() == ["c"] and store.get_alias("products") == "c"


def test_orphan_collections_are_listed_and_dropped_only_when_orphans(env, tmp_path, capsys):
    config, _ = _one_snapshot(tmp_path)
    with open_store(config) as store:
        for name in ("products-20260101-000000-000", "old-build"):
            store.create_collection(name, DIM)
            store.upsert(name, points(3))
    assert main(["snapshot", "orphans", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["orphans"] == [
        {"collection": "old-build", "points": 3}, {"collection": "products-20260101-000000-000", "points": 3}]
    assert main(["snapshot", "orphans", "--drop", "c"]) == 1  # the alias 'products' points at it
    assert "'c' is not an orphan collection" in capsys.readouterr().err
    assert main(["snapshot", "orphans", "--drop", "old-build"]) == 0
    out = capsys.readouterr().out
    assert "dropped old-build" in out and "products-20260101-000000-000  3 points" in out
    with open_store(config) as store:
        assert store.list_collections() == ["c", "products-20260101-000000-000"]
