"""`coinage serve / worker / demo` in-process: the demo prepares catalog, index and concept photos offline
(and falls back loudly without the world backbone), serve prints the production command, the worker
explains the embedded store's one-process limit."""
import pytest

from coinage.cli import build_parser, main


def test_web_commands_are_registered():
    parser = build_parser()
    choices = parser._subparsers._group_actions[0].choices
    for name in ("serve", "worker", "demo"):
        assert "not built yet" not in (choices[name].description or "") and choices[name].get_default("func")


def test_serve_prints_the_gunicorn_and_worker_commands(capsys, tmp_path):
    assert main(["serve", "--gunicorn", "--data-dir", str(tmp_path), "--port", "9000", "--workers", "3"]) == 0
    out = capsys.readouterr().out
    assert "gunicorn --workers 3" in out and "--bind 127.0.0.1:9000" in out and "'web.wsgi:app'" in out
    assert "coinage worker" in out and "COINAGE_STORE_BACKEND=server" in out


def test_demo_no_serve_builds_catalog_index_and_concept_photos(tmp_path, capsys):
    argv = ["demo", "--no-serve", "--data-dir", str(tmp_path), "--backbone", "tiny-random", "--no-onnx",
            "--products", "24", "--photos", "6", "--heldout", "4"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "indexing 144 catalog images" in out and "ready (--no-serve)" in out
    assert (tmp_path / "world" / "catalog.jsonl").is_file()
    folders = sorted((tmp_path / "demo-concepts").iterdir())
    assert len(folders) == 3 and all(len(list(f.glob("*.png"))) == 5 for f in folders)
    from engine.store import StoreConfig, open_store

    with open_store(StoreConfig(path=str(tmp_path / "store"))) as store:
        assert store.count("products") == 144
    assert main(argv) == 0  # a second run finds everything in place
    again = capsys.readouterr().out
    assert "already written" in again and "already built" in again and "indexing" not in again
    (tmp_path / "indexer" / "demo-index.json").write_text('{"backbone": "an-older-backbone"}')
    assert main(argv) == 0  # the backbone changed: the index is rebuilt (blue/green) with the current one
    assert "rebuilding it with tiny-random" in capsys.readouterr().out
    with open_store(StoreConfig(path=str(tmp_path / "store"))) as store:
        assert store.count("products") == 144


def test_demo_falls_back_to_tiny_random_loudly_without_the_world_backbone(tmp_path, monkeypatch, capsys):
    import engine.backbones
    from web.settings import AppSettings
    from web.demo import choose_backbone

    monkeypatch.setattr(engine.backbones, "WORLD_DIR", tmp_path / "nowhere")
    settings = AppSettings(data_dir=tmp_path)
    choose_backbone(settings)
    assert settings.backbone == "tiny-random"
    err = capsys.readouterr().err
    assert "WARNING" in err and "MEANINGLESS" in err and "coinage world train" in err


def test_worker_explains_the_embedded_store_limit(tmp_path, capsys):
    from engine.store import StoreConfig, open_store

    with open_store(StoreConfig(path=str(tmp_path / "store"))):  # the web process holds the store
        code = main(["worker", "--data-dir", str(tmp_path), "--backbone", "tiny-random", "--no-onnx"])
    assert code == 1
    assert "COINAGE_WORKER=thread" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["serve", "--port", "not-a-port"], ["demo", "--photos"]])
def test_bad_arguments_exit_with_usage(argv):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
