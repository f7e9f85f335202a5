"""Markdown tables of a quality report (bench/quality/): retrieval, targets, recognition, lambda_CE, norms,
diagnostics. Pure formatting of the JSON document, so the tables can be regenerated from a saved report:

    python -m bench.quality_tables bench/results/quality.json
    python -m bench.quality_tables bench/results/quality.json bench/results/quality-world1.json ...
        (several reports: a table across world seeds first, then each report's tables)
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

PAPER_RECOGNITION = {"auc_target_vs_parent": (100.0, 58.9, 98.9), "auc_target_vs_other": (100.0, 80.5, 100.0),
                     "auc_parent_vs_other": (58.9, 70.5, 85.5)}  # prompt tuning, textual inversion, ours
RECOGNITION_LABELS = {"auc_target_vs_parent": "target vs parent", "auc_target_vs_other": "target vs other classes",
                      "auc_parent_vs_other": "parent vs other classes (token for the parent)"}
METHOD_LABELS = {"prompt-tuning": "prompt tuning", "textual-inversion": "textual inversion", "ti+ce": "ti+ce",
                 "ti+ce+proj": "ti+ce+proj (ours)"}


def _ms(entry: dict | None, digits: int = 1) -> str:
    if not entry or entry.get("mean") is None:
        return "–"
    return f"{entry['mean']:.{digits}f} ({entry['std']:.{digits}f})"


def _num(value: Any, digits: int = 1) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def retrieval_table(doc: dict) -> list[str]:
    from bench.quality import PAPER_MRR

    seeds = len(doc["config"]["seeds"])
    lines = [f"| method | MRR % (std over {seeds} seeds) | R@1 | R@5 | R@10 | train s/token | paper MRR (DeepFashion2) |",
             "|---|---|---|---|---|---|---|"]
    for row, e in doc["retrieval"].items():
        train = e.get("train_seconds_per_token")
        extra = f" + {e['gair_seconds_per_query']:.2f} s/query" if "gair_seconds_per_query" in e else ""
        lines.append(f"| {row} | {_ms(e['mrr'])} | {_num(e['r@1']['mean'])} | {_num(e['r@5']['mean'])} | "
                     f"{_num(e['r@10']['mean'])} | {_num(train['mean']) if train else '–'}{extra} | "
                     f"{_num(PAPER_MRR.get(row))} |")
    return lines


def targets_lines(doc: dict) -> list[str]:
    t = doc["targets"]
    ok = lambda flag: "holds" if flag else "does not hold"  # noqa: E731
    mrr = {row: e["mrr"]["mean"] for row, e in doc["retrieval"].items()}
    chain = ["text only", "text + avg image", "prompt tuning", "ti+ce+proj (ours)"]
    broken = [f"{a} {mrr[a]:.1f} > {b} {mrr[b]:.1f}" if mrr[a] > mrr[b] else f"{a} = {b} = {mrr[a]:.1f}"
              for i, (a, b) in enumerate(zip(chain, chain[1:])) if not (mrr[a] < mrr[b] if i < 2 else mrr[a] <= mrr[b])]
    return [
        f"- ordering text only < text + avg image < prompt tuning <= ours: "
        f"**{ok(t['ordering_text_lt_textimage_lt_pt_le_ours'])}**" + (f" ({'; '.join(broken)})" if broken else ""),
        f"- ours - prompt tuning = **{t['ours_minus_prompt_tuning']:+.1f}** MRR points (target >= +5; paper +5.2)",
        f"- ours + GAIR - ours = **{t['gair_gain_over_ours']:+.1f}** MRR points (target >= +2; paper +2.2); "
        f"GAIR not worse than ours: **{ok(t['gair_not_worse_than_ours'])}**",
    ]


def recognition_table(doc: dict) -> list[str]:
    rec = doc["recognition_auc"]
    methods = list(rec)
    lines = ["| AUC-ROC % (std over concepts x seeds) | " + " | ".join(METHOD_LABELS.get(m, m) for m in methods)
             + " | paper: PT / TI / ours |", "|---|" + "---|" * (len(methods) + 1)]
    for key, label in RECOGNITION_LABELS.items():
        paper = " / ".join(f"{v:.1f}" for v in PAPER_RECOGNITION[key])
        lines.append(f"| {label} | " + " | ".join(_ms(rec[m][key]) for m in methods) + f" | {paper} |")
    return lines


def lambda_table(doc: dict) -> list[str]:
    rows = doc["lambda_ce_ablation"]
    if not rows:
        return ["(not run)"]
    lines = ["| (lambda_SD, lambda_CE) | method | AUC target vs parent | AUC parent vs other | classifier AUC "
             "target vs parent | MRR % | R@1 | norm ratio |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| ({r['lambda_sd']:g}, {r['lambda_ce']:g}) | {r['method']} | {_ms(r['auc_target_vs_parent'])} | "
                     f"{_ms(r['auc_parent_vs_other'])} | {_ms(r['clf_auc_target_vs_parent'])} | {r['mrr']:.1f} | "
                     f"{r['r@1']:.1f} | {_ms(r['norm_ratio'], 2)} |")
    return lines


def norms_table(doc: dict) -> list[str]:
    lines = ["| method | token norm | word norm mean (std) | norm ratio | within 1 std of word norms | "
             "cos to attribute words |", "|---|---|---|---|---|---|"]
    for m, n in doc["norms"].items():
        lines.append(f"| {METHOD_LABELS.get(m, m)} | {_num(n['token_norm'], 3)} | {_num(n['word_norm_mean'], 3)} "
                     f"({_num(n['word_norm_std'], 3)}) | {_num(n['norm_ratio'], 2)} | {100 * n['within_1std']:.0f} % | "
                     f"{_num(n['cos_attributes_mean'], 3)} |")
    return lines


def diagnostics_lines(doc: dict) -> list[str]:
    d, fw = doc["diagnostics"], doc["fixed_w"]
    lines = [f"- caption oracle (the target's full visible description, e.g. \"{d['caption_oracle_example']}\", "
             f"no token): MRR {d['caption_oracle']['mrr']:.1f}, R@1 {d['caption_oracle']['r@1']:.1f}",
             f"- image only (mean of the 5 training photos, no text): MRR {d['image_only']['mrr']:.1f}, "
             f"R@1 {d['image_only']['r@1']:.1f}",
             "- gallery photos per query (mean): " + ", ".join(f"{k.replace('_', ' ')} {v}"
                                                                for k, v in d["distractors_mean"].items()),
             ""]
    grid = None
    rows = []
    for m, e in fw.items():
        if "mrr_by_w" not in e:
            continue
        grid = list(e["mrr_by_w"])
        gair = e.get("gair_w_star_counts")
        rows.append(f"| {METHOD_LABELS.get(m, m)} | " + " | ".join(_num(e["mrr_by_w"][w]) for w in grid)
                    + f" | {e['best_fixed_w']} | {_ms(e['per_query_oracle_w_mrr'])} | "
                    + (", ".join(f"{w}: {n}" for w, n in gair.items()) if gair else "–") + " |")
    if grid:
        lines += ["| method (MRR % at fixed w) | " + " | ".join(f"w={w}" for w in grid)
                  + " | best fixed w | per-query oracle w | GAIR w* counts |",
                  "|---|" + "---|" * (len(grid) + 3)] + rows
    lines += kinds_lines(doc)
    lines += gair_lines(doc)
    return lines


def kinds_lines(doc: dict) -> list[str]:
    """What each method ranks first (% of queries, pooled over seeds)."""
    kinds = doc["diagnostics"].get("first_result_kinds")
    if not kinds:
        return []
    names = list(next(iter(kinds.values())))
    lines = ["", "First result of each query (% of queries over all seeds; a look-alike shares category, colour "
                 "and pattern, only hidden details differ):", "",
             "| method | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for row, k in kinds.items():
        lines.append(f"| {row} | " + " | ".join(f"{k[n]:.1f}" for n in names) + " |")
    return lines


def gair_lines(doc: dict) -> list[str]:
    """GAIR's scores per w (means over queries and seeds) and the MRR of choosing w by each term alone."""
    lines = []
    for method, e in doc["fixed_w"].items():
        g = e.get("gair")
        if not g:
            continue
        grid = list(g["mean_by_w"])
        chosen, versus = g["mrr_if_w_chosen_by"], g["queries_vs_w1"]
        lines += ["", f"GAIR with {METHOD_LABELS.get(method, method)} tokens: MRR if w is chosen by "
                      f"min(context, object) (GAIR) {chosen['score']:.1f}, by the object term alone "
                      f"{chosen['object']:.1f}, by the context term alone {chosen['context']:.1f}; against w = 1 "
                      f"GAIR's choice ranks the target better for {versus['better']} queries, the same for "
                      f"{versus['same']}, worse for {versus['worse']}.", "",
                  "| mean over queries | " + " | ".join(f"w={w}" for w in grid) + " |",
                  "|---|" + "---|" * len(grid)]
        for key, label in (("context", "context f(I_w).f(x_c)"), ("object", "object f(I_w).f(x)"),
                           ("score", "score = min")):
            lines.append(f"| {label} | " + " | ".join(f"{g['mean_by_w'][w][key]:.3f}" for w in grid) + " |")
    return lines


def markdown(doc: dict) -> str:
    p, cfg, secs = doc["protocol"], doc["config"], doc["seconds"]
    exposure = p["backbone_exposure"]
    if exposure.get("known"):
        seen = p["concepts_seen_in_backbone_training"]
        exposure_text = (f"backbone trained on world seed {exposure['backbone_world_seed']} "
                         f"({exposure['training_pairs']} pairs, replay verified: "
                         f"{exposure['replay_matches_cached_captions']}); held-out products of this world whose identity "
                         f"appears in those pairs: {exposure['heldout_products_seen']} of {exposure['heldout_products']}; "
                         f"among the concepts: {len(seen)}" + (f" ({', '.join(f'{k}: {v} pairs' for k, v in seen.items())})"
                                                              if seen else ""))
    else:
        exposure_text = f"unknown ({exposure.get('why')})"
    out = [
        f"### Quality benchmark, world seed {p['world_seed']} (backbone `{p['backbone']}`)",
        "",
        f"`{doc['command']}` — {doc['date']}, {doc['machine'].get('cpus')} CPUs, "
        f"load {_num(doc['machine'].get('load_average_1m_at_start'), 2)} at start; {secs['total'] / 60:.1f} min "
        f"(training {secs['training'] / 60:.1f}, evaluation {secs['evaluation'] / 60:.1f})"
        + (f"; {doc['cached_tokens']} tokens loaded from the cache (their training seconds are from the run that "
           "trained them)" if doc.get("cached_tokens") else "")
        + (f". Note: {doc['note']}" if doc.get("note") else ""),
        "",
        f"{len(p['concepts'])} concepts, {p['queries']} queries (e.g. \"{p['query_example']}\"), gallery of "
        f"{p['gallery']} photos; {cfg['steps']} steps per token, training seeds {cfg['seeds']}, GAIR grid "
        f"{cfg['gair_weights']} with {cfg['gair_images']} image(s) per w. Exposure: {exposure_text}.",
        "",
        "Retrieval (paper Table 4):",
        "",
        *retrieval_table(doc),
        "",
        *targets_lines(doc),
        "",
        "Recognition (paper Table 3):",
        "",
        *recognition_table(doc),
        "",
        f"lambda_CE ablation (paper Table 1; seed {cfg['seeds'][0]}, first {cfg['ablation_concepts']} concepts):",
        "",
        *lambda_table(doc),
        "",
        "Norm diagnostics (mean over tokens):",
        "",
        *norms_table(doc),
        "",
        "Diagnostics:",
        "",
        *diagnostics_lines(doc),
        "",
    ]
    return "\n".join(out)


def across_worlds(docs: list[dict]) -> str:
    """MRR of every method and the targets, one column per report (world seed), with the mean over them."""
    head = [f"world seed {d['protocol']['world_seed']} ({len(d['protocol']['concepts'])} concepts)" for d in docs]
    lines = ["| MRR % (std over training seeds) | " + " | ".join(head) + " | mean over worlds |",
             "|---|" + "---|" * (len(docs) + 1)]
    for row in docs[0]["retrieval"]:
        cells = [_ms(d["retrieval"].get(row, {}).get("mrr")) for d in docs]
        means = [d["retrieval"][row]["mrr"]["mean"] for d in docs if row in d["retrieval"]]
        lines.append(f"| {row} | " + " | ".join(cells) + f" | {sum(means) / len(means):.1f} |")
    ok = lambda flag: "holds" if flag else "fails"  # noqa: E731
    targets = [("ordering text < text+image < PT <= ours", "ordering_text_lt_textimage_lt_pt_le_ours", ok),
               ("ours - prompt tuning (>= +5)", "ours_minus_prompt_tuning", lambda v: f"{v:+.1f}"),
               ("ours + GAIR - ours (>= +2)", "gair_gain_over_ours", lambda v: f"{v:+.1f}"),
               ("GAIR not worse than ours", "gair_not_worse_than_ours", ok)]
    for label, key, fmt in targets:
        lines.append(f"| {label} | " + " | ".join(fmt(d["targets"][key]) for d in docs) + " | |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        print("usage: python -m bench.quality_tables REPORT.json [REPORT.json ...]", file=sys.stderr)
        return 2
    docs = [json.loads(Path(a).read_text()) for a in argv]
    if len(docs) > 1:
        print(across_worlds(docs) + "\n")
    print("\n".join(markdown(d) for d in docs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
