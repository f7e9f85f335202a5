"""The concept registry: registration, versions, atomic activation, live tokens, features, cross-process use.

Every test that takes `reg` runs with the rows in SQLite and in PostgreSQL (`database_url`: tests/conftest.py)."""
import io
import json
import logging
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
from PIL import Image

from engine.concepts import FEATURES_FILE, TOKEN_FILE, ConceptError, ConceptRegistry, save_features
from engine.tokens import CustomToken, TokenMeta, save_token

WIDTH, EMBED = 32, 32


def png(colour=(200, 30, 40), size=16) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buf, format="PNG")
    return buf.getvalue()


def images(n=3):
    return [png((40 * i, 30, 200 - 40 * i)) for i in range(n)]


def finish_version(reg, placeholder, version, seed=0, backbone_id="tiny-random", width=WIDTH):
    """What the trainer does at the end of a run: write the files, then record the version."""
    g = torch.Generator().manual_seed(seed)
    folder = reg.version_dir(placeholder, version)
    token = CustomToken(placeholder, torch.randn(2, width, generator=g),
                        TokenMeta(parent="dress", backbone_id=backbone_id, attributes=["red", "old"]))
    save_token(token, folder / TOKEN_FILE)
    save_features(folder / FEATURES_FILE, torch.randn(3, EMBED, generator=g))
    reg.record_version(placeholder, version, {"auc_target_vs_parent": 0.9 + seed / 100})
    return token


@pytest.fixture
def reg(tmp_path, database_url):
    return ConceptRegistry(tmp_path / "root", database_url=database_url)


def test_register_stores_images_and_lists(reg, tmp_path):
    path = tmp_path / "a.jpg"
    Image.new("RGB", (20, 10), (1, 2, 3)).save(path)
    c = reg.register("<aurora>", "dress", [png(), png((0, 0, 0)), path], ["red", "worn"], "ti+ce+proj", 4)
    assert (c.placeholder, c.parent, c.status, c.active_version) == ("<aurora>", "dress", "registered", None)
    assert c.attributes == ["red", "worn"] and c.num_vectors == 4
    stored = reg.images("<aurora>")
    assert [p.name for p in stored] == ["000.png", "001.png", "002.png"]
    with Image.open(stored[2]) as im:
        assert im.size == (20, 10)
    assert [x.placeholder for x in reg.list()] == ["<aurora>"] and "<aurora>" in reg
    with pytest.raises(ConceptError, match="already registered"):
        reg.register("<aurora>", "dress", images())


def test_the_loser_of_a_registration_race_gets_concept_exists_and_leaves_the_winners_files(reg,
                                                                                         lose_registration_race):
    from engine.concepts import ConceptExists

    reg.register("<aurora>", "dress", images())
    winner = [p.read_bytes() for p in reg.images("<aurora>")]
    with pytest.raises(ConceptExists, match="already registered") as sequential:
        reg.register("<aurora>", "dress", images())
    lose_registration_race(reg)
    with pytest.raises(ConceptExists) as raced:  # the INSERT's unique violation, not a raw database error
        reg.register("<aurora>", "coat", [png((9, 9, 9))] * 4)
    assert str(raced.value) == str(sequential.value)
    assert reg.get("<aurora>").parent == "dress" and [p.read_bytes() for p in reg.images("<aurora>")] == winner


def test_registration_checks_its_inputs(reg):
    with pytest.raises(ConceptError, match="3 to 50"):
        reg.register("<a>", "dress", images(2))
    with pytest.raises(ConceptError, match="not an image"):
        reg.register("<a>", "dress", images(2) + [b"not an image"])
    with pytest.raises(ConceptError, match="parent"):
        reg.register("<a>", " ", images())
    with pytest.raises(Exception, match="malformed placeholder"):
        reg.register("a b", "dress", images())
    assert reg.list() == []
    with pytest.raises(ConceptError, match="no concept '<nope>'"):
        reg.get("<nope>")


def test_version_lifecycle_and_live_tokens(reg):
    reg.register("<aurora>", "dress", images())
    v1 = reg.start_version("<aurora>", "ti+ce+proj", "tiny-random")
    assert v1 == "v0001" and reg.get("<aurora>").status == "training"
    assert reg.work_dir("<aurora>", v1).is_dir()
    with pytest.raises(ConceptError, match="only a finished training run"):
        reg.activate("<aurora>", v1)
    assert len(reg.active_tokens("tiny-random", WIDTH)) == 0  # registered but not live
    token = finish_version(reg, "<aurora>", v1)
    assert reg.get("<aurora>").status == "ready" and reg.get("<aurora>").active_version is None
    reg.activate("<aurora>", v1)
    c = reg.get("<aurora>")
    assert c.active_version == v1 and c.metrics["auc_target_vs_parent"] == 0.9
    live = reg.active_tokens("tiny-random", WIDTH)
    assert live.names() == ["<aurora>"] and torch.equal(live.get("<aurora>").vectors, token.vectors)
    assert reg.features("<aurora>").shape == (3, EMBED)
    assert reg.token_path("<aurora>") == reg.version_dir("<aurora>", v1) / TOKEN_FILE
    reg.deactivate("<aurora>")
    assert len(reg.active_tokens("tiny-random", WIDTH)) == 0
    with pytest.raises(ConceptError, match="no active version"):
        reg.token_path("<aurora>")
    with pytest.raises(ConceptError, match="has no version 'v0009'"):
        reg.activate("<aurora>", "v0009")


def test_failed_and_cancelled_runs_leave_the_live_token(reg):
    reg.register("<aurora>", "dress", images())
    v1 = reg.start_version("<aurora>", "ti+ce+proj", "tiny-random")
    token = finish_version(reg, "<aurora>", v1)
    reg.activate("<aurora>", v1)
    v2 = reg.start_version("<aurora>", "ti+ce+proj", "tiny-random")
    reg.fail_version("<aurora>", v2, "RuntimeError: out of memory")
    v3 = reg.start_version("<aurora>", "ti+ce+proj", "tiny-random")
    reg.fail_version("<aurora>", v3, "cancelled at step 3", cancelled=True)
    c = reg.get("<aurora>")
    assert (c.status, c.active_version, c.error) == ("cancelled", v1, "cancelled at step 3")
    assert [v.status for v in reg.versions("<aurora>")] == ["ready", "failed", "cancelled"]
    assert [v.version for v in reg.unfinished_versions("<aurora>")] == [v3, v2]
    assert torch.equal(reg.active_tokens("tiny-random", WIDTH).get("<aurora>").vectors, token.vectors)
    with pytest.raises(ConceptError, match="failed, not ready"):
        reg.activate("<aurora>", v2)
    with pytest.raises(ConceptError, match="no features.safetensors|no token.safetensors"):
        reg.record_version("<aurora>", v2)


def test_activation_is_atomic_under_concurrent_readers(reg):
    reg.register("<aurora>", "dress", images())
    versions, tokens = [], {}
    for seed in range(2):
        v = reg.start_version("<aurora>", "ti+ce+proj", "tiny-random")
        tokens[v] = finish_version(reg, "<aurora>", v, seed=seed)
        versions.append(v)
    reg.activate("<aurora>", versions[0])
    stop, seen, errors = threading.Event(), set(), []

    def reader():
        while not stop.is_set():
            try:
                c = reg.get("<aurora>")
                live = reg.active_tokens("tiny-random", WIDTH, strict=True).get("<aurora>")
                assert c.active_version in versions
                assert any(torch.equal(live.vectors, t.vectors) for t in tokens.values())
                assert c.metrics["auc_target_vs_parent"] == 0.9 + versions.index(c.active_version) / 100
                seen.add(c.active_version)
            except Exception as e:  # noqa: BLE001 - collected and asserted below
                errors.append(e)

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    for i in range(40):
        reg.activate("<aurora>", versions[i % 2])
    stop.set()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
    assert reg.get("<aurora>").active_version == versions[1]


def test_active_tokens_skip_tokens_of_another_backbone(reg, caplog):
    for name, backbone in (("<good>", "tiny-random"), ("<other>", "sd15")):
        reg.register(name, "dress", images())
        v = reg.start_version(name, "ti+ce+proj", backbone)
        finish_version(reg, name, v, backbone_id=backbone)
        reg.activate(name, v)
    with caplog.at_level(logging.WARNING, logger="engine.concepts"):
        live = reg.active_tokens("tiny-random", WIDTH)
    assert live.names() == ["<good>"]
    assert "not serving <other>" in caplog.text and "sd15" in caplog.text
    with pytest.raises(Exception, match="trained on backbone 'sd15'"):
        reg.active_tokens("tiny-random", WIDTH, strict=True)


def test_delete_removes_rows_and_files(reg):
    reg.register("<aurora>", "dress", images())
    v = reg.start_version("<aurora>", "ti+ce+proj", "tiny-random")
    finish_version(reg, "<aurora>", v)
    reg.activate("<aurora>", v)
    folder = reg.concept_dir("<aurora>")
    reg.delete("<aurora>")
    assert not folder.exists() and reg.list() == [] and len(reg.active_tokens("tiny-random", WIDTH)) == 0
    with pytest.raises(ConceptError):
        reg.delete("<aurora>")
    reg.register("<aurora>", "mug", images())  # the name is free again; versions restart
    assert reg.start_version("<aurora>", "ti+ce", None) == "v0001"


def test_import_a_diffusers_textual_inversion_file(reg, tmp_path):
    from safetensors.torch import save_file

    save_file({"<cat-toy>": torch.randn(2, WIDTH)}, str(tmp_path / "learned_embeds.safetensors"))
    v = reg.import_token(tmp_path / "learned_embeds.safetensors", parent="toy", width=WIDTH)
    c = reg.get("<cat-toy>")
    assert (c.parent, c.active_version, v.status) == ("toy", v.version, "ready")
    assert reg.active_tokens("tiny-random", WIDTH).get("<cat-toy>").meta.parent == "toy"
    with pytest.raises(ConceptError, match="imported without images"):
        reg.features("<cat-toy>")
    v2 = reg.import_token(tmp_path / "learned_embeds.safetensors", parent="toy", placeholder="<toy2>", activate=False)
    assert reg.get("<toy2>").active_version is None and v2.version == "v0001"


def test_registry_is_shared_across_processes(reg, database_url):
    reg.register("<aurora>", "dress", images())
    v = reg.start_version("<aurora>", "ti+ce+proj", "tiny-random")
    finish_version(reg, "<aurora>", v)
    code = ("import sys, json; from engine.concepts import ConceptRegistry; "
            "r = ConceptRegistry(sys.argv[1], database_url=sys.argv[3] or None); "
            "r.activate('<aurora>', sys.argv[2]); print(json.dumps([c.active_version for c in r.list()]))")
    out = subprocess.run([sys.executable, "-c", code, str(reg.root), v, database_url or ""], capture_output=True,
                         text=True, cwd=Path(__file__).resolve().parent.parent, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == [v] and reg.get("<aurora>").active_version == v
    if database_url is not None:
        assert not reg.db_path.exists()  # the rows are in PostgreSQL; the files are under the root
        assert (reg.version_dir("<aurora>", v) / TOKEN_FILE).is_file()
        return
    import sqlite3

    conn = sqlite3.connect(reg.db_path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()
