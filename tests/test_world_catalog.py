"""The demo world: vocabulary, renderer, captions, splits and the catalog writer."""
from __future__ import annotations

import csv
import json
import random
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from world import render as render_mod
from world.build import SplitConfig, World, make_world, sample_eval_pair, sample_training_pair
from world.captions import HELDOUT_TEMPLATES, TOKEN_PLACEHOLDER, caption, canonical_caption, query_caption
from world.catalog import CSV_COLUMNS, main, write_catalog
from world.errors import WorldError
from world.render import render, render_array
from world.silhouettes import GLYPHS, SILHOUETTES
from world.specs import PhotoSpec, ProductSpec, random_product
from world.vocab import (ATTRIBUTE_WORDS, CATEGORIES, CATEGORY_NOUNS, COLOURS, CONTEXTS, EMBLEMS, HIDDEN_WORDS,
                         PATTERNS, colour_distance)

SMALL = SplitConfig(heldout_products=8)


@pytest.fixture(scope="module")
def world() -> World:
    return make_world(0)


@pytest.fixture(scope="module")
def small_world() -> World:
    return make_world(7, n_products=40, photos_per_product=6, config=SMALL)


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+(?:-[a-z]+)*", text.lower()))


def _studio_photo(product: ProductSpec, context: str = "studio") -> PhotoSpec:
    return PhotoSpec(product, 0, context, 0.0, False, 1.0, (0.0, 0.0), 1.0, 1.0, (0.5, 0.5), False)


# ---- vocabulary -------------------------------------------------------------------------


def test_vocabulary_sizes_and_drawings_match():
    required = {"dress", "t-shirt", "trousers", "sneaker", "backpack", "mug", "teapot", "lamp"}
    assert required <= set(CATEGORIES) and set(SILHOUETTES) == set(CATEGORIES) == set(CATEGORY_NOUNS)
    assert len(COLOURS) >= 10 and len(PATTERNS) >= 5 and len(CONTEXTS) >= 6
    assert len(EMBLEMS) >= 12 and set(GLYPHS) == set(EMBLEMS)
    names = list(COLOURS)
    assert min(colour_distance(a, b) for a in names for b in names if a != b) > 120
    assert 90 <= len(ATTRIBUTE_WORDS) <= 120 and len(set(ATTRIBUTE_WORDS)) == len(ATTRIBUTE_WORDS)
    assert all(re.fullmatch(r"[a-z]+", w) for w in ATTRIBUTE_WORDS)
    assert {"bright", "dark", "pale", "shiny", "striped", "dotted", "checked"} <= set(ATTRIBUTE_WORDS)
    for phrases in CONTEXTS.values():  # context phrases must not leak colours or hidden words
        assert not any(_words(p) & (set(COLOURS) | HIDDEN_WORDS) for p in phrases)


# ---- world generation ---------------------------------------------------------------------


def test_default_world_counts_and_coverage(world):
    assert len(world.products) == 320 and len(world.photos) == 320 * 8
    assert {p.category for p in world.products} == set(CATEGORIES)
    assert {p.colour for p in world.products} == set(COLOURS)
    assert {p.pattern for p in world.products} == set(PATTERNS)
    assert {ph.context for ph in world.photos} == set(CONTEXTS)
    assert {p.emblem for p in world.products} == set(EMBLEMS)
    assert len({p.identity for p in world.products}) == len(world.products)
    assert len({ph.id for ph in world.photos}) == len(world.photos)
    for p in world.products[:40]:
        assert len({ph.context for ph in world.photos_of(p.id)}) >= 6


def test_world_has_look_alike_families(world):
    by_family: dict[str, list[ProductSpec]] = {}
    for p in world.products:
        by_family.setdefault(world.families[p.id], []).append(p)
    multi = [ps for ps in by_family.values() if len(ps) > 1]
    assert len(multi) >= 30
    for ps in multi:  # same visible looks, different hidden identity
        assert len({(p.category, p.colour, p.pattern, p.pattern_colour) for p in ps}) == 1
        assert len({(p.trim_colour, p.emblem) for p in ps}) == len(ps)


def test_same_seed_same_world_other_seed_other_world(world):
    again = make_world(0)
    assert again.products == world.products and again.photos == world.photos and again.splits == world.splits
    other = make_world(1)
    assert other.products != world.products
    assert [ph.context for ph in other.photos] != [ph.context for ph in world.photos]
    assert [p.emblem for p in other.products] != [p.emblem for p in world.products]


def test_splits_are_disjoint_and_complete(world):
    s = world.splits
    assert len(s.heldout) >= 40 and not set(s.train) & set(s.heldout)
    assert set(s.train) | set(s.heldout) == {p.id for p in world.products}
    assert {world.product(pid).category for pid in s.heldout} == set(CATEGORIES)
    for pid in s.heldout:
        concept, query = s.concept[pid], s.query[pid]
        assert len(concept) == 5 and len(query) >= 1 and not set(concept) & set(query)
        assert all(world.photo(x).product.id == pid for x in concept + query)
        assert len({world.photo(x).context for x in query}) == len(query)
    train_photos = world.train_photos()
    assert not {ph.product.id for ph in train_photos} & set(s.heldout)
    assert all(world.is_trainable(ph) for ph in train_photos)
    assert len(s.heldout_combos) == 48 and set(s.heldout_templates) == set(HELDOUT_TEMPLATES)


def test_bad_sizes_name_the_fix():
    with pytest.raises(WorldError, match="photos_per_product >= 6"):
        make_world(0, photos_per_product=4)
    with pytest.raises(WorldError, match="n_products >= heldout_products"):
        make_world(0, n_products=20)
    with pytest.raises(WorldError, match="pick one of"):
        random_product(random.Random(0), colour="mauve")


def test_training_sampler_avoids_heldout(world):
    rng = random.Random(3)
    held = world.splits.heldout_combos
    for _ in range(300):
        ph, text = sample_training_pair(world, rng)
        p = ph.product
        assert (p.category, p.colour, ph.context) not in held
        assert p.identity not in world.heldout_identities
        assert not any(text.startswith(t.split("{")[0]) and t.split("{")[0] for t in HELDOUT_TEMPLATES)
    for _ in range(50):
        ph, _ = sample_eval_pair(world, rng, heldout_templates=True)
        assert (ph.product.category, ph.product.colour, ph.context) in held


# ---- captions ------------------------------------------------------------------------------


def test_captions_describe_visible_attributes_only(world):
    rng = random.Random(0)
    for ph in world.photos[::3]:
        p = ph.product
        for text in (caption(ph, rng), caption(ph, rng, heldout=True), canonical_caption(ph)):
            words = _words(text)
            assert not words & HIDDEN_WORDS, text
            assert p.trim_colour not in words, text  # the trim colour is never a visible colour
            assert p.colour in words, text
            assert any(n in text for n in CATEGORY_NOUNS[p.category]), text
            assert any(c in text for c in CONTEXTS[ph.context]), text
    ph = world.photos[0]
    assert canonical_caption(ph).startswith("a photo of ")


def test_query_captions_carry_the_token_placeholder(world):
    for pid in world.splits.heldout[:10]:
        for x in world.splits.query[pid]:
            ph = world.photo(x)
            q = query_caption(ph)
            assert TOKEN_PLACEHOLDER in q and CATEGORY_NOUNS[ph.product.category][0] in q
            assert CONTEXTS[ph.context][0] in q
            assert query_caption(ph, token="<tok>") == q.replace(TOKEN_PLACEHOLDER, "<tok>")


# ---- rendering -----------------------------------------------------------------------------


def test_render_is_a_pure_function_of_the_spec(world):
    ph = world.photos[5]
    a = render(ph)
    assert a.size == (64, 64) and a.mode == "RGB"
    render_mod.product_layer.cache_clear()
    assert render(ph).tobytes() == a.tobytes()
    assert render(ph, 96).size == (96, 96)
    assert np.array_equal(render_array(ph), np.asarray(a))
    with pytest.raises(WorldError, match="size >= 32"):
        render(ph, 16)


def test_hidden_identity_and_context_are_visible():
    p = random_product(random.Random(1), category="mug", colour="blue", pattern="solid")
    base = np.asarray(render(_studio_photo(p)), np.int16)
    other_emblem = replace(p, emblem=next(e for e in EMBLEMS if e != p.emblem))
    other_trim = replace(p, trim_colour=next(c for c in ("yellow", "white") if c != p.trim_colour))
    other_slot = replace(p, emblem_pos=(p.emblem_pos + 1) % 3)
    for q in (other_emblem, other_trim, other_slot):
        diff = np.abs(np.asarray(render(_studio_photo(q)), np.int16) - base).sum(-1)
        assert (diff > 60).sum() >= 12, q  # at least a dozen clearly changed pixels
    means = [np.asarray(render(_studio_photo(p, c)), np.float32).mean((0, 1)) for c in CONTEXTS]
    for i in range(len(means)):
        for j in range(i + 1, len(means)):
            assert np.abs(means[i] - means[j]).sum() > 10, (list(CONTEXTS)[i], list(CONTEXTS)[j])


def test_every_category_draws_inside_the_frame():
    rng = random.Random(2)
    for cat in CATEGORIES:
        for _ in range(5):
            layer = np.asarray(render_mod.product_layer(random_product(rng, category=cat), 64))
            alpha = layer[..., 3]
            assert (alpha > 0).mean() > 0.12, cat
            assert alpha[0].max() == alpha[-1].max() == alpha[:, 0].max() == alpha[:, -1].max() == 0, cat


# ---- catalog writer ------------------------------------------------------------------------


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_written_catalog_parses_and_references_images(small_world, tmp_path):
    out = tmp_path / "cat"
    summary = write_catalog(small_world, out)
    assert summary.photos == len(small_world.photos) == 240
    rows = _read_jsonl(out / "catalog.jsonl")
    assert len(rows) == 240 and list(rows[0]) == list(CSV_COLUMNS)
    for r in rows:
        with Image.open(out / r["image"]) as img:
            assert img.size == (64, 64) and img.mode == "RGB"
        assert r["id"].startswith(r["product_id"] + "-") and isinstance(r["price"], float)
        assert set(r["attributes"]) == {"colour", "pattern", "pattern_colour", "context", "caption"}
        assert r["category"].title() in r["title"] and r["attributes"]["colour"].title() in r["title"]
    with open(out / "catalog.csv", newline="", encoding="utf-8") as f:
        csv_rows = list(csv.DictReader(f))
    assert [c["id"] for c in csv_rows] == [r["id"] for r in rows]
    assert json.loads(csv_rows[3]["attributes"]) == rows[3]["attributes"]
    assert float(csv_rows[3]["price"]) == rows[3]["price"]
    public = (out / "catalog.jsonl").read_text() + (out / "catalog.csv").read_text()
    assert "trim" not in public and "emblem" not in public

    ids = {r["id"] for r in rows}
    splits = json.loads((out / "splits.json").read_text())
    assert not set(splits["train"]) & set(splits["heldout"]) and len(splits["heldout"]) == 8
    for pid in splits["heldout"]:
        assert set(splits["concept"][pid]) | set(splits["query"][pid]) <= ids
    assert all(TOKEN_PLACEHOLDER in q["query"] and q["photo_id"] in ids for q in splits["queries"])
    meta = json.loads((out / "world.json").read_text())
    assert meta["seed"] == 7 and meta["counts"]["photos"] == 240 and meta["image_size"] == 64
    assert set(meta["vocab"]["colours"]) == set(COLOURS)
    truth = _read_jsonl(out / "truth.jsonl")
    assert len(truth) == 40 and {"trim_colour", "emblem", "emblem_pos", "family"} <= set(truth[0])
    rebuilt = ProductSpec.from_dict({"id": truth[0]["product_id"], **{
        k: truth[0][k] for k in ("category", "colour", "pattern", "pattern_colour", "trim_colour", "emblem",
                                 "emblem_pos", "shape")}})
    assert rebuilt == small_world.products[0]


def test_catalog_is_byte_identical_for_the_same_seed(small_world, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    write_catalog(small_world, a)
    write_catalog(make_world(7, n_products=40, photos_per_product=6, config=SMALL), b)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert len(files) == 240 + 5
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)


def test_writer_refuses_to_clobber(small_world, tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(WorldError, match="not empty"):
        write_catalog(small_world, foreign)
    with pytest.raises(WorldError, match="no world.json"):
        write_catalog(small_world, foreign, overwrite=True)
    out = tmp_path / "cat"
    write_catalog(small_world, out)
    write_catalog(small_world, out, overwrite=True)
    assert len(_read_jsonl(out / "catalog.jsonl")) == 240


def test_cli_main_in_process(tmp_path, capsys):
    out = tmp_path / "cli"
    args = ["--seed", "5", "--out", str(out), "--products", "30", "--photos", "6", "--heldout", "6"]
    assert main(args) == 0
    assert "wrote 180 photos of 30 products" in capsys.readouterr().out
    assert len(_read_jsonl(out / "catalog.jsonl")) == 180
    assert main(args) == 2 and "--overwrite" in capsys.readouterr().err
    assert main(["--out", str(tmp_path / "x"), "--products", "30", "--photos", "3", "--heldout", "6"]) == 2
    assert "photos_per_product" in capsys.readouterr().err
