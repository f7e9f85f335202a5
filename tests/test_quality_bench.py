"""The quality benchmark (bench/quality/): metrics, protocol, and a tiny end-to-end run of `coinage bench quality`."""
from __future__ import annotations

import json

import numpy as np
import pytest


def test_ranks_and_metrics_on_hand_built_features():
    from bench.quality import ranks_of, retrieval_metrics

    gallery = np.eye(4)
    queries = np.array([[1.0, 0.1, 0, 0],  # target 0 is the best match: rank 1
                        [0.9, 0.5, 0, 0],  # target 1 comes after photo 0: rank 2
                        [0.3, 0.2, 0.1, 1.0]])  # target 2 is the last of 4
    ranks = ranks_of(queries, gallery, [0, 1, 2])
    assert ranks == [1, 2, 4]
    m = retrieval_metrics(ranks)
    assert m["mrr"] == pytest.approx(100 * (1 + 1 / 2 + 1 / 4) / 3, abs=0.01)
    assert (m["r@1"], m["r@5"]) == (pytest.approx(33.33, abs=0.01), 100.0)
    assert ranks_of(np.array([[1.0, 0.0]]), np.array([[1.0, 0.0], [2.0, 0.0]]), [0]) == [2]  # ties count against


def test_protocol_follows_the_world_splits():
    from bench.quality import build_protocol, pick_concepts
    from world.build import make_world
    from world.vocab import CATEGORIES, CATEGORY_NOUNS

    world = make_world(0)
    protocol = build_protocol(world, 20)
    assert len(protocol.concepts) == 20 and set(protocol.concepts) <= set(world.splits.heldout)
    assert {world.product(p).category for p in protocol.concepts} == set(CATEGORIES)  # round-robin
    assert len(protocol.gallery) >= 1000 and len(set(protocol.gallery)) == len(protocol.gallery)
    training = {ph for pid in world.splits.heldout for ph in world.splits.concept[pid]}
    assert not training & set(protocol.gallery)  # no training photo is searchable
    for query, target in zip(protocol.queries, protocol.target_index):
        product = world.product(query.product_id)
        assert protocol.gallery[target] == query.photo_id
        assert f" <{query.product_id}> {CATEGORY_NOUNS[product.category][0]} " in query.text  # token, then parent
        assert product.colour not in query.text.split()  # the caption does not describe the product
    # products the backbone trained on are picked last
    first = pick_concepts(world, 3)
    assert pick_concepts(world, 3, avoid={first[0]})[0] != first[0]


def test_first_results_are_classified_against_the_target():
    from bench.quality import error_kind
    from world.build import make_world

    world = make_world(0)
    pid = world.splits.heldout[0]
    target, own = (world.photo(p) for p in world.splits.query[pid][:2])
    family = [p for p, f in world.families.items() if f == world.families[pid] and p != pid]
    other_category = next(p for p in world.products if p.category != target.product.category)
    assert error_kind(target, target) == "hit"
    assert error_kind(target, own) == "same product, other context"
    assert error_kind(target, world.photos_of(other_category.id)[0]) == "other category"
    for relative in family:  # look-alikes: same category, colour and pattern
        kinds = {error_kind(target, ph) for ph in world.photos_of(relative)}
        assert kinds <= {"look-alike, same context", "look-alike, other context"} and kinds


def test_replayed_backbone_pairs_never_show_a_heldout_product():
    from bench.quality import replay_training_pairs
    from world.build import make_world

    identities, captions = replay_training_pairs(0, 400, 0.3)
    assert len(captions) == 400 and not set(identities) & make_world(0).heldout_identities


def test_quick_run_writes_a_well_formed_report(tmp_path):
    from bench.quality import ROWS
    from coinage.cli import main

    out = tmp_path / "quality.json"
    args = ["bench", "quality", "--quick", "--backbone", "tiny-random", "--concepts", "2", "--seeds", "0", "1",
            "--steps", "1", "--ablation-concepts", "1", "--gair-steps", "2", "--cache", str(tmp_path / "tokens")]
    assert main(args + ["--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["command"].startswith("coinage bench quality --backbone tiny-random")
    assert {"date", "machine", "config", "protocol", "targets", "seconds"} <= set(doc)
    assert list(doc["retrieval"]) == list(ROWS)
    for row in ROWS:
        entry = doc["retrieval"][row]
        assert 0 < entry["mrr"]["mean"] <= 100 and entry["mrr"]["n"] == 2
        assert entry["r@1"]["mean"] <= entry["r@5"]["mean"] <= entry["r@10"]["mean"]
    assert doc["protocol"]["gallery"] >= 1000 and doc["protocol"]["queries"] == 6
    assert set(doc["recognition_auc"]) == {"prompt-tuning", "textual-inversion", "ti+ce", "ti+ce+proj"}
    assert [(r["lambda_sd"], r["lambda_ce"]) for r in doc["lambda_ce_ablation"]] == [(0, 1), (1, 0.1), (1, 0.001), (1, 0)]
    assert len(doc["tokens"]) == 2 * 2 * 4 + 1
    md = out.with_suffix(".md").read_text()
    assert "| ours + GAIR |" in md and "target vs parent" in md and "(1, 0.001)" in md
    # a rerun with the same settings loads every token from the cache and ranks exactly alike
    assert main(args + ["--out", str(tmp_path / "again.json")]) == 0
    again = json.loads((tmp_path / "again.json").read_text())
    assert (doc["cached_tokens"], again["cached_tokens"]) == (0, len(doc["tokens"]))
    assert again["ranks"] == doc["ranks"] and again["recognition_auc"] == doc["recognition_auc"]
    # several reports: one MRR column per world, then each report's own tables
    from bench.quality_tables import across_worlds

    table = across_worlds([doc, again]).splitlines()
    ours = next(line for line in table if line.startswith("| ti+ce+proj (ours) |")).split(" | ")
    assert len(ours) == 4 and ours[1] == ours[2] and float(ours[3].rstrip(" |")) == round(
        doc["retrieval"]["ti+ce+proj (ours)"]["mrr"]["mean"], 1)
    assert sum(line.startswith("| ours + GAIR - ours") for line in table) == 1


@pytest.mark.slow
def test_quick_mode_on_the_world_backbone_fits_the_ci_budget(tmp_path):
    """`coinage bench quality --quick` as CI would run it on the shipped world backbone: under 10 minutes."""
    import time

    from coinage.cli import main
    from engine.backbones import MANIFEST, WORLD_DIR

    if not (WORLD_DIR / MANIFEST).is_file():
        pytest.skip("the world backbone is not trained (world/backbone/)")
    t0 = time.perf_counter()
    assert main(["bench", "quality", "--quick", "--out", str(tmp_path / "quality.json")]) == 0
    assert time.perf_counter() - t0 < 600
    doc = json.loads((tmp_path / "quality.json").read_text())
    assert doc["protocol"]["backbone_exposure"]["heldout_products_seen"] == 0  # world seed 0: never trained on
