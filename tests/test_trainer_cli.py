"""`coinage concept ...` in-process on the tiny-random backbone, and the demo-world concept sets."""
import json

import pytest
from PIL import Image

from coinage.cli import main


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def folder(path, colour, n=3):
    path.mkdir(parents=True)
    for i in range(n):
        Image.new("RGB", (40, 36), tuple(min(255, c + 10 * i) for c in colour)).save(path / f"{i}.png")
    return path


def test_train_list_export_deactivate_activate_import_delete(tmp_path, capsys):
    shots = folder(tmp_path / "aurora", (200, 40, 40))
    catalog = folder(tmp_path / "catalog", (40, 40, 200), n=4)
    root = str(tmp_path / "root")
    common = ["--root", root]
    code = main(["concept", "train", str(shots), "--parent", "dress", "--attributes", "red,old,worn",
                 "--catalog", str(catalog), "--negatives", "catalog", "--steps", "2", "--batch-size", "1",
                 "--no-samples", "--backbone", "tiny-random", "--device", "cpu", *common])
    out = capsys.readouterr()
    assert code == 0, out.err
    report = json.loads(out.out)
    assert (report["placeholder"], report["version"], report["activated"]) == ("<aurora>", "v0001", True)
    assert report["metrics"]["negatives"] == {"generated": 0, "catalog": 4}

    assert main(["concept", "list", "--versions", *common]) == 0
    listing = capsys.readouterr().out
    assert "<aurora>" in listing and "v0001" in listing and "ready" in listing

    assert main(["concept", "export", "aurora", str(tmp_path / "named.safetensors"), *common]) == 0
    (tmp_path / "out").mkdir()
    assert main(["concept", "export", "aurora", str(tmp_path / "out"), "--version", "v0001", *common]) == 0
    exported = tmp_path / "out" / "aurora.safetensors"
    assert exported.read_bytes() == (tmp_path / "named.safetensors").read_bytes()

    assert main(["concept", "deactivate", "<aurora>", *common]) == 0
    assert main(["concept", "activate", "<aurora>", "v0009", *common]) == 1
    assert "no version 'v0009'" in capsys.readouterr().err
    assert main(["concept", "activate", "<aurora>", "v0001", *common]) == 0

    assert main(["concept", "import", str(exported), "--parent", "dress", "--placeholder", "<copy>",
                 "--backbone", "tiny-random", "--device", "cpu", *common]) == 0
    capsys.readouterr()
    assert main(["concept", "list", *common]) == 0
    assert "<copy>" in capsys.readouterr().out
    assert main(["concept", "delete", "copy", *common]) == 0
    assert main(["concept", "delete", "copy", *common]) == 1


def test_train_needs_a_source_and_a_parent(tmp_path, capsys):
    assert main(["concept", "train", "--root", str(tmp_path), "--backbone", "tiny-random"]) == 1
    assert "either a folder" in capsys.readouterr().err
    shots = folder(tmp_path / "shots", (10, 200, 10))
    assert main(["concept", "train", str(shots), "--root", str(tmp_path), "--backbone", "tiny-random",
                 "--device", "cpu"]) == 1
    assert "--parent is required" in capsys.readouterr().err


def test_train_refuses_its_own_parent_word_and_repeated_attributes_and_warns_about_an_unknown_parent(tmp_path,
                                                                                                        capsys):
    shots = folder(tmp_path / "dress", (200, 40, 40))
    common = ["--root", str(tmp_path / "root"), "--backbone", "tiny-random", "--device", "cpu"]
    assert main(["concept", "train", str(shots), "--parent", "Dress", *common]) == 1
    assert "is its own parent word 'Dress'" in capsys.readouterr().err
    assert main(["concept", "train", str(shots), "--placeholder", "frock", "--parent", "dress",
                 "--attributes", "red, Red,red", *common]) == 1
    assert "at least 2 distinct attribute words" in capsys.readouterr().err
    assert main(["concept", "list", "--root", str(tmp_path / "root")]) == 0
    assert "no concepts registered" in capsys.readouterr().out  # nothing registered by the refused runs
    assert main(["concept", "train", str(shots), "--placeholder", "frock", "--parent", "xqzvb", "--attributes",
                 "red,old", "--steps", "1", "--batch-size", "1", "--negatives", "generated",
                 "--generated-negatives", "1", "--no-samples", *common]) == 0
    assert "warning: the parent word 'xqzvb' is not in the backbone tokenizer's vocabulary" in capsys.readouterr().err


def test_world_concept_uses_the_world_splits():
    from trainer.config import TrainingError
    from trainer.world_concept import heldout_products, world_concept
    from world.build import make_world

    world = make_world(0)
    pid = heldout_products()[0]
    wc = world_concept(pid, extra_positives=2, max_catalog=3, max_parent=4, per_other_category=1)
    product = world.product(pid)
    assert wc.placeholder == f"<{pid}>" and wc.parent in product.category
    assert len(wc.images) == len(world.splits.concept[pid])
    assert len(wc.heldout.positives) == len(world.splits.query[pid]) + 2
    assert len(wc.catalog_negatives) == 3 and len(wc.heldout.parent) == 4 and len(wc.heldout.others) == 7
    assert wc.images[0].size == (64, 64) and product.colour in wc.caption
    with pytest.raises(TrainingError, match="training product"):
        world_concept(world.splits.train[0])


def test_a_full_disk_during_training_is_a_message_and_the_live_version_stays(tmp_path, capsys, monkeypatch):
    import errno

    import trainer.job

    shots = folder(tmp_path / "aurora", (200, 40, 40))
    common = ["--root", str(tmp_path / "root"), "--backbone", "tiny-random", "--device", "cpu", "--no-samples",
              "--steps", "2", "--batch-size", "1", "--attributes", "red,old,worn"]
    assert main(["concept", "train", str(shots), "--parent", "dress", *common]) == 0
    live = tmp_path / "root" / "concepts" / "aurora" / "versions" / "v0001" / "token.safetensors"
    before = live.read_bytes()
    capsys.readouterr()

    def full(trainer_, work, key):
        raise OSError(errno.ENOSPC, "No space left on device", str(work / "checkpoint.pt"))

    monkeypatch.setattr(trainer.job, "save_checkpoint", full)
    code = main(["concept", "train", str(shots), "--parent", "dress", "--no-resume", *common])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    assert "no space left on the device while training <aurora>" in err and "free space there" in err
    from engine.concepts import ConceptRegistry

    registry = ConceptRegistry(tmp_path / "root")
    assert registry.get("<aurora>").active_version == "v0001" and live.read_bytes() == before
    failed = registry.versions("<aurora>")[-1]
    assert failed.status == "failed" and "no space left" in failed.error
