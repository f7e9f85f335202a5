"""`coinage synonyms` and `coinage rules`: add, list, remove, and a CSV / JSON round trip through export and import
into another data directory, with errors that name the fix (exit status 1, no traceback)."""
import json

import pytest

from coinage.cli import main
from engine.concepts import DB_NAME
from engine.merch import MerchStore


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("COINAGE_DATA_DIR", str(tmp_path / "a"))
    monkeypatch.delenv("COINAGE_DATABASE_URL", raising=False)
    return tmp_path / "a"


def store(root):
    return MerchStore(root / "concepts" / DB_NAME)


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_synonyms_and_rules_round_trip_through_export_and_import(data_dir, tmp_path, monkeypatch, capsys, fmt):
    assert main(["synonyms", "add", "cup => mug, beaker"]) == 0
    assert main(["synonyms", "add", "trainers, sneakers"]) == 0
    assert main(["rules", "add", "cup pins", "--match", "contains", "--pattern", "cup", "--action", "pin",
                 "--products", "p0003", "p0001", "--position", "2", "--end", "2027-01-01T00:00"]) == 0
    assert main(["rules", "add", "cheap down", "--match", "always", "--action", "bury", "--max-price", "10",
                 "--amount", "0.5", "--disabled"]) == 0
    capsys.readouterr()
    assert main(["synonyms", "list"]) == 0 and "cup => mug, beaker" in capsys.readouterr().out
    assert main(["synonyms", "export", str(tmp_path / f"s.{fmt}")]) == 0
    assert main(["rules", "export", str(tmp_path / f"r.{fmt}")]) == 0
    before = store(data_dir)
    monkeypatch.setenv("COINAGE_DATA_DIR", str(tmp_path / "b"))
    assert main(["synonyms", "add", "old, gone"]) == 0
    assert main(["synonyms", "import", str(tmp_path / f"s.{fmt}"), "--replace"]) == 0
    assert main(["rules", "import", str(tmp_path / f"r.{fmt}")]) == 0
    after = store(tmp_path / "b")
    assert [s.text for s in after.synonyms()] == [s.text for s in before.synonyms()] == ["cup => mug, beaker",
                                                                                          "trainers, sneakers"]
    meta = ("id", "updated", "updated_by")
    assert [{k: v for k, v in r.to_json().items() if k not in meta} for r in after.rules()] == [
        {k: v for k, v in r.to_json().items() if k not in meta} for r in before.rules()]
    pin, bury = after.rules()
    assert (pin.products, pin.position, pin.end, bury.max_price, bury.enabled) == (("p0003", "p0001"), 2,
                                                                                   "2027-01-01T00:00", 10.0, False)
    assert {a["actor"] for a in after.audit()} == {f"cli:{__import__('getpass').getuser()}"}


def test_remove_and_errors_name_the_fix(data_dir, tmp_path, capsys):
    assert main(["synonyms", "add", "cup => mug"]) == 0
    sid = store(data_dir).synonyms()[0].id
    assert main(["synonyms", "remove", str(sid)]) == 0 and store(data_dir).synonyms() == []
    capsys.readouterr()
    assert main(["synonyms", "remove", str(sid)]) == 1 and "no synonym" in capsys.readouterr().err
    assert main(["rules", "add", "x", "--match", "contains", "--pattern", "cup", "--action", "pin"]) == 1
    assert "product ids to pin" in capsys.readouterr().err
    (tmp_path / "bad.txt").write_text("x")
    assert main(["rules", "import", str(tmp_path / "bad.txt")]) == 1 and "--format" in capsys.readouterr().err
    (tmp_path / "bad.csv").write_text("title\nfoo\n")
    assert main(["synonyms", "import", str(tmp_path / "bad.csv")]) == 1 and "'synonym' column" in capsys.readouterr().err
    (tmp_path / "bad.json").write_text(json.dumps({"text": "a, b"}))
    assert main(["synonyms", "import", str(tmp_path / "bad.json")]) == 1 and "JSON list" in capsys.readouterr().err
    assert main(["rules", "list", "--json"]) == 0 and json.loads(capsys.readouterr().out) == []


def test_a_concept_filter_needs_a_live_concept_and_round_trips(data_dir, tmp_path, monkeypatch, capsys):
    import torch

    from engine.concepts import ConceptRegistry
    from engine.tokens import CustomToken, TokenMeta, save_token

    add = ["rules", "add", "aurora up", "--match", "contains", "--pattern", "dress", "--action", "boost",
           "--concept", "<aurora>", "--amount", "2"]
    assert main(add) == 1 and "<aurora> has no live token" in capsys.readouterr().err
    assert store(data_dir).rules() == []
    token = save_token(CustomToken("<aurora>", torch.randn(1, 8), TokenMeta("dress", "tiny-random")),
                       tmp_path / "aurora.safetensors")
    ConceptRegistry(data_dir).import_token(token, parent="dress")
    assert main(add) == 0 and store(data_dir).rules()[0].concept == "<aurora>"
    capsys.readouterr()
    assert main(["rules", "list"]) == 0 and "concept=<aurora>" in capsys.readouterr().out
    assert main(["rules", "export", str(tmp_path / "r.csv")]) == 0
    assert "concept" in (tmp_path / "r.csv").read_text().splitlines()[0].split(",")
    monkeypatch.setenv("COINAGE_DATA_DIR", str(tmp_path / "b"))  # a shop without that concept
    assert main(["rules", "import", str(tmp_path / "r.csv")]) == 1 and "no live token" in capsys.readouterr().err
    assert store(tmp_path / "b").rules() == []  # refused whole: nothing half-imported
    ConceptRegistry(tmp_path / "b").import_token(token, parent="dress")
    assert main(["rules", "import", str(tmp_path / "r.csv")]) == 0
    assert store(tmp_path / "b").rules()[0].concept == "<aurora>"
