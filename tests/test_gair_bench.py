"""`coinage bench gair`: the w selectors on hand-built GAIR terms, and a small run's report on the tiny backbone."""
import json

import numpy as np

from bench.gair import SELECTORS, UPPER, UPPER_SELECTORS


def test_selectors_on_hand_built_terms():
    # the object term is larger and steadier than the context term, so the paper's min follows the context term
    terms = {"context": np.array([0.9, 0.8, 0.5, 0.3, 0.2]), "object": np.array([0.2, 0.3, 0.4, 0.6, 0.62]),
             "object_gen": np.array([0.1, 0.2, 0.3, 0.7, 0.9])}
    pick = {name: select(terms) for name, select in SELECTORS.items()}
    assert pick["GAIR (paper): min(context, object)"] == 2  # min = .2 .3 .4 .3 .2
    assert pick["object term only"] == 4 and pick["context term only"] == 0
    assert pick["min of z-scored terms"] == 2
    assert pick["generated reference: min(context, object_gen)"] == 2  # min = .1 .2 .3 .3 .2: first best
    # ties go to the first w in grid order, as engine.query.gair.choose
    flat = {"context": np.ones(5), "object": np.ones(5), "object_gen": np.ones(5)}
    assert {select(flat) for select in SELECTORS.values()} == {0}
    assert UPPER == 0.75 and len(UPPER_SELECTORS) == 2


def test_a_small_run_writes_every_variant_against_plain_ours(tmp_path, capsys):
    from coinage.cli import main

    out = tmp_path / "gair.json"
    args = ["bench", "gair", "--backbone", "tiny-random", "--world-seed", "0", "--concepts", "2", "--seeds", "0",
            "--steps", "1", "--gair-steps", "2", "--gair-images", "1", "--reference-images", "1", "--jobs", "1",
            "--cache", str(tmp_path / "tokens"), "--out", str(out)]
    assert main(args) == 0
    doc = json.loads(out.read_text())
    assert doc["benchmark"] == "gair" and doc["command"].startswith("coinage bench gair --backbone tiny-random")
    variants, queries = doc["variants"], doc["protocol"]["queries"]
    assert variants["fixed w = 1"]["gain_over_ours"] == 0
    oracle = variants["per-query oracle w"]["mrr"]
    for name, row in variants.items():
        assert 0 < row["mrr"] <= 100
        if "w_counts" in row and not name.startswith("ours + "):  # w chosen from the grid: the oracle bounds it
            assert sum(row["w_counts"].values()) == queries and row["mrr"] <= oracle + 1e-9
    assert {"ours + prototype (beta = 1)", "text + avg image", "GAIR (paper): min(context, object)",
            f"GAIR (paper) over w >= {UPPER:g}", "concept prior w (training photos)"} <= set(variants)
    assert variants["GAIR (paper): min(context, object)"]["extra_ms_per_query"] > 0
    assert variants["ours + prototype (beta = 1)"]["extra_ms_per_query"] == 0
    assert "| ours + prototype (beta = 1) |" in out.with_suffix(".md").read_text()
    assert set(doc["terms"]) == {"context", "object", "object_gen"}
    assert list(doc["terms"]["object"]["mean_by_w"]) == ["0", "0.25", "0.5", "0.75", "1"]
    # the same settings again: every token from the cache
    assert main(args[:-1] + [str(tmp_path / "again.json")]) == 0
    assert json.loads((tmp_path / "again.json").read_text())["cached_tokens"] == 2
    capsys.readouterr()
    assert main(["bench", "gair", "--tables", str(out), str(tmp_path / "again.json")]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].startswith("| variant | world 0 | world 0 | mean gain over ours")
    assert next(line for line in table if line.startswith("| fixed w = 1 |")).endswith("| +0.0 | +0.0 | 0 |")
