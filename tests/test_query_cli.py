"""`coinage search`, run in-process through coinage.cli.main with the tiny backbone and an embedded store."""
import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

import coinage.cli
from engine.store import Point, StoreConfig, open_store, point_id
from engine.tokens import CustomToken, TokenMeta, save_token


@pytest.fixture(scope="module")
def world(tiny, tmp_path_factory):
    root = tmp_path_factory.mktemp("search-cli")
    meta = TokenMeta(parent="dress", backbone_id=tiny.id, attributes=["red", "old"])
    save_token(CustomToken("<aurora>", torch.randn(2, tiny.text_width, generator=torch.Generator().manual_seed(0)) * 0.02,
                           meta), root / "tokens" / "aurora.safetensors")
    rng = np.random.default_rng(0)
    (root / "aurora").mkdir()
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(root / "aurora" / f"{i}.png")
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(root / "photo.png")
    with open_store(StoreConfig(path=str(root / "store"))) as store:
        store.create_collection("products-1", dim=tiny.embed_dim, payload_indexes={"category": "keyword"})
        store.upsert("products-1", [
            Point(point_id(f"p{i}"), rng.standard_normal(tiny.embed_dim).astype(np.float32),
                  {"product_id": f"p{i}", "title": f"product {i}", "category": ["dress", "mug"][i % 2],
                   "price": float(10 + i)}) for i in range(20)])
        store.set_alias("products", "products-1")
    return root


@pytest.fixture
def run(world, tiny, monkeypatch, capsys):
    monkeypatch.setattr("engine.loading.load_backbone", lambda *args, **kwargs: tiny)

    def invoke(*args, source=("--tokens", str(world / "tokens"))):
        rc = coinage.cli.main(["search", *args, "--backbone", "tiny-random", "--store-path", str(world / "store"),
                               *source, "--steps", "1", "--text-runtime", "torch"])
        out = capsys.readouterr()
        return rc, out.out, out.err

    return invoke


def test_search_with_gair_writes_the_preview(run, world, tmp_path):
    rc, out, err = run("<aurora> on a beach", "--concept-images", f"<aurora>={world / 'aurora'}", "--category",
                       "dress", "--limit", "3", "--preview", str(tmp_path / "out.png"))
    assert rc == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["rank", "score", "id", "title", "category", "price", "photos"]
    rows = [ln for ln in lines[1:5] if not ln.startswith("-- related items")][:3]
    assert len([ln for ln in rows if ln.split()[-3:-2] == ["dress"] and ln.split()[-1] == "1"]) == 3
    # the first product scores far above the rest (the relevance floor's drop): the others follow as related items
    assert lines[2] == "-- related items (beyond what matches the query; not counted) --" and "dress (1)" in out
    assert "retrieval: dense   sort: relevance   per product" in out and "category: dress (" in out  # auto: a token
    assert "GAIR w* = " in out and "note: added the parent word 'dress' after <aurora>" in out
    with Image.open(tmp_path / "out.png") as preview:
        assert preview.size == (32, 32)
    assert "generating: step 2/2" in err


def test_search_json_without_gair(run):
    rc, out, err = run("<aurora> dress", "--no-gair", "--json", "--max-price", "15", "--limit", "4")
    assert rc == 0, err
    body = json.loads(out)
    assert body["weight"] == 1.0 and body["weight_source"] == "default" and len(body["results"]) == 4
    assert all(r["payload"]["price"] <= 15 for r in body["results"]) and body["next_offset"] == 4


def test_search_by_image(run, world):
    rc, out, err = run("--image", str(world / "photo.png"), "--limit", "2", "--filter", "category=mug")
    assert rc == 0, err
    rows = [ln for ln in out.split("\n\n")[0].splitlines()[1:] if not ln.startswith("-- related items")]
    assert "query: (image)" in out and len(rows) == 2 and all(" mug " in row for row in rows)


def test_errors_name_the_fix(run, world):
    rc, _, err = run("<auroa> dress", "--no-gair")
    assert rc == 1 and "Did you mean <aurora>" in err
    rc, _, err = run("<aurora> dress")  # GAIR is on by default but no training images were given
    assert rc == 1 and "--concept-images" in err and "--no-gair" in err
    rc, _, err = run("red dress", "--collection", "nope")
    assert rc == 1 and "coinage index" in err
    rc, _, err = run("")
    assert rc == 1 and "empty query" in err
    rc, _, err = run("dress", "--filter", "oops")
    assert rc == 1 and "FIELD=VALUE" in err


def test_tokens_come_from_the_concept_registry(run, world, tiny, tmp_path):
    from engine.concepts import ConceptRegistry

    registry = ConceptRegistry(tmp_path / "var")
    registry.import_token(world / "tokens" / "aurora.safetensors", parent="dress", backbone_id=tiny.id,
                          width=tiny.text_width)
    rc, out, err = run("<aurora> on a beach", "--no-gair", "--limit", "2", source=("--root", str(tmp_path / "var")))
    assert rc == 0, err
    assert "query: <aurora> dress on a beach" in out
    rc, _, err = run("<aurora> dress", source=("--root", str(tmp_path / "var")))  # GAIR: imported, no images
    assert rc == 1 and "without images" in err
    rc, _, err = run("<aurora> dress", "--no-gair", source=("--root", str(tmp_path / "empty")))
    assert rc == 1 and "none are registered yet" in err


def test_format_table_handles_unknown_payloads():
    from engine.query import ResultItem, SearchResponse
    from engine.search_cli import format_table

    response = SearchResponse("x", "x", [], ["a note"], "composed", None, "none",
                              [ResultItem(1, "0123456789", 0.5, {"other": 1})], 10, 0, None, "products", "tiny", {})
    text = format_table(response)
    assert "01234567" in text and "note: a note" in text and "w: -" in text
    assert io.StringIO(text).readline().startswith("rank")


def test_format_table_shows_a_correction_and_a_suggestion_apart():
    from engine.query import Correction, SearchResponse
    from engine.search_cli import format_table

    def table(correction):
        return format_table(SearchResponse("q", "q", [], [], "composed", None, "none", [], 10, 0, None, "products",
                                           "tiny", {}, correction=correction))

    applied = table(Correction("drsss", "dress", [("drsss", "dress")], "dress"))
    assert "showing results for 'dress'" in applied and "did you mean" not in applied
    suggested = table(Correction("sneekrs", "sneekrs", [], "sneekrs", "sneakers", [("sneekrs", "sneakers")]))
    assert "did you mean 'sneakers'?" in suggested and "showing results for" not in suggested
def test_search_prints_what_it_understood_and_can_leave_it_unread(run):
    rc, out, err = run("mug under 14", "--no-gair", "--json", "--limit", "20")
    assert rc == 0, err
    body = json.loads(out)
    assert body["results"] and all(r["payload"]["price"] <= 14 for r in body["results"])
    rc, out, err = run("mug under 14", "--no-gair", "--limit", "20")
    assert out.splitlines()[0] == "understood: price under 14 [price] -> searching 'mug' (drop one with --ignore KEY, " \
                                  "all with --no-understand)"
    for flags in (("--ignore", "price"), ("--no-understand",)):
        rc, out, err = run("mug under 14", "--no-gair", "--json", "--limit", "20", *flags)
        assert max(r["payload"]["price"] for r in json.loads(out)["results"]) > 14
