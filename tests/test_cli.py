import pytest

from coinage.cli import main
from engine.backbones import DEFAULT_BACKBONE, resolve_backbone


def test_backbone_list_and_info(capsys):
    assert main(["backbone", "list"]) == 0
    assert "sd15" in capsys.readouterr().out
    assert main(["backbone", "info", "--backbone", "tiny-random", "--device", "cpu"]) == 0
    assert '"text_width": 32' in capsys.readouterr().out


def test_backbone_list_shows_the_default_as_a_registry_entry(capsys):
    assert main(["backbone", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    marked = [line.split()[0] for line in lines if line.endswith("(default)")]
    assert marked == [DEFAULT_BACKBONE] == ["world"]
    assert any(line.split()[0] == "tiny-random" for line in lines)


def test_world_resolves_to_the_shipped_directory_not_the_registry_placeholder():
    from engine.backbones import MANIFEST, WORLD_DIR

    if not (WORLD_DIR / MANIFEST).is_file():
        pytest.skip("world/backbone/ is not trained in this checkout")
    config, local = resolve_backbone("world")
    assert local == WORLD_DIR and config.clip_model == f"local-dir:{WORLD_DIR}"


def test_backbone_save_then_load(tmp_path, capsys):
    assert main(["backbone", "save", "--backbone", "tiny-random", "--device", "cpu", str(tmp_path / "bb")]) == 0
    assert main(["backbone", "info", "--backbone", str(tmp_path / "bb"), "--device", "cpu"]) == 0
    assert '"diffusion": true' in capsys.readouterr().out


def test_errors_are_reported_not_raised(capsys):
    assert main(["backbone", "info", "--backbone", "no-such-backbone"]) == 1
    assert "registered backbones" in capsys.readouterr().err


def test_store_and_world_errors_are_reported_like_every_user_error(monkeypatch, capsys):
    import world.catalog
    from engine.store import StoreError
    from world.errors import WorldError

    for error in (StoreError("the vector store is closed; open a new one"), WorldError("size=8 is too small; use 32")):
        def fail(argv, error=error):
            raise error

        monkeypatch.setattr(world.catalog, "main", fail)  # `coinage world catalog` runs world.catalog.main
        assert main(["world", "catalog"]) == 1
        assert capsys.readouterr().err == f"error: {error}\n"


def test_pending_commands_name_the_missing_capability(capsys):
    from coinage.cli import PENDING, build_parser

    parser = build_parser()
    choices = parser._subparsers._group_actions[0].choices
    pending = [c for c in PENDING if getattr(choices[c].get_default("func"), "pending", False)]
    built = [c for c in choices if c not in pending]
    assert {"backbone", "world", "index", "concept", "search", "serve", "demo"} <= set(built)
    for command in pending:
        assert main([command]) == 2
        assert "missing capability" in capsys.readouterr().err


def test_every_benchmark_runs_as_coinage_bench_and_writes_the_common_header(tmp_path, capsys):
    import importlib
    import json
    import os
    import sys

    from bench.cli import SCRIPTS

    for name in SCRIPTS:  # importing a benchmark edits neither sys.path nor the environment
        path, env = list(sys.path), dict(os.environ)
        importlib.reload(importlib.import_module(f"bench.{name}"))
        assert (sys.path, dict(os.environ)) == (path, env), name
    with pytest.raises(SystemExit):
        main(["bench", "--help"])
    listed = capsys.readouterr().out
    assert all(name in listed for name in [*SCRIPTS, "quality"])
    out = tmp_path / "store.json"
    argv = ["--n", "1000", "--dim", "8", "--queries", "5", "--candidates", "chosen", "--out", str(out)]
    assert main(["bench", "store", *argv]) == 0
    doc = json.loads(out.read_text())
    assert doc["benchmark"] == "store" and doc["command"] == "coinage bench store " + " ".join(argv)
    assert {"date", "machine"} <= set(doc) and doc["machine"]["cpus"] == os.cpu_count()
    assert doc["chosen"]
