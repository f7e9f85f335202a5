"""The quality benchmark's evaluation: rankings, the per-seed table rows, error kinds, diagnostics and summaries."""
from __future__ import annotations

import math
import statistics
import time
from typing import Any, NamedTuple, Sequence

from .protocol import (GAIR_ROWS, OURS, RECALL_AT, ROW_METHOD, ROWS, TRAINED, Protocol, QualityConfig, Query,
                       log)
from .training import _WORKER, Run, Task, run_jobs


class Ranking(NamedTuple):
    ranks: list[int]  # 1-based rank of each query's target
    top1: list[int]  # gallery row ranked first for each query


def ranks_of(queries, gallery, targets) -> list[int]:
    """1-based rank of each query's target among the gallery by cosine similarity (ties count against it)."""
    return ranking(queries, gallery, targets).ranks


def ranking(queries, gallery, targets) -> Ranking:
    import numpy as np

    q = _unit(np.asarray(queries, dtype=np.float64))
    g = _unit(np.asarray(gallery, dtype=np.float64))
    scores = q @ g.T
    own = scores[np.arange(len(q)), np.asarray(targets)]
    return Ranking([int(r) for r in (scores >= own[:, None]).sum(axis=1)], [int(i) for i in scores.argmax(axis=1)])


def _unit(x):
    import numpy as np

    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def retrieval_metrics(ranks: Sequence[int]) -> dict[str, float]:
    """MRR and recall@k in percent."""
    n = len(ranks)
    out = {"mrr": 100.0 * sum(1.0 / r for r in ranks) / n}
    out.update({f"r@{k}": 100.0 * sum(r <= k for r in ranks) / n for k in RECALL_AT})
    return {k: round(v, 2) for k, v in out.items()}


class Retrieval:
    """Query vectors from the engine's QueryService, ranked against the gallery features."""

    def __init__(self, backbone, protocol: Protocol, gallery_features, concept_features: dict, qc: QualityConfig):
        self.backbone, self.protocol, self.qc = backbone, protocol, qc
        self.gallery = gallery_features
        self.targets = protocol.target_index
        self.concept_features = concept_features  # placeholder -> (5, D) training-image features

    def service(self, tokens, seed: int, **hooks):
        """A QueryService on `tokens`, GAIR as configured; `hooks`: QueryService's keyword hooks (image_features)."""
        from engine.query import QueryConfig, QueryService
        from engine.tokens import TokenSet

        config = QueryConfig(weights=tuple(self.qc.gair_weights), images_per_weight=self.qc.gair_images,
                             steps=self.qc.gair_steps, seed=seed, text_runtime="torch")
        # the store is never searched: ranking is exact, in memory (see ranks_of)
        return QueryService(self.backbone, None, TokenSet(list(tokens)), self.concept_features, config, **hooks)

    def rank(self, vectors, queries: Sequence[Query] | None = None) -> Ranking:
        queries = self.protocol.queries if queries is None else queries
        row = {q.photo_id: i for q, i in zip(self.protocol.queries, self.targets)}
        return ranking(vectors, self.gallery, [row[q.photo_id] for q in queries])

    def baselines(self, service) -> dict[str, Ranking]:
        import numpy as np

        qs = self.protocol.queries
        return {"text only": self.rank(np.stack([service.text_only_vector(q.text).numpy() for q in qs])),
                "text + avg image": self.rank(np.stack([service.text_image_vector(q.text).numpy() for q in qs]))}

    def fixed_w(self, service, queries: Sequence[Query] | None = None) -> dict[float, Ranking]:
        """Ranks of q_pool(w) for every w of the grid (w = 1: the token prompt alone)."""
        import numpy as np

        queries = self.protocol.queries if queries is None else queries
        grid = list(self.qc.gair_weights) + ([] if 1.0 in self.qc.gair_weights else [1.0])
        vecs = np.stack([service.composed_vectors(q.text, grid).numpy() for q in queries])  # (Q, W, D)
        return {w: self.rank(vecs[:, i], queries) for i, w in enumerate(grid)}

    def gair(self, service, seed: int) -> tuple[Ranking, list[float], list[list[dict]]]:
        """Ranks at GAIR's w* (paper Algorithm 1 via QueryService.choose_weight), the chosen w*, and every
        query's scores per w (score = min(context, object))."""
        import numpy as np

        from engine.query import SearchRequest

        outcomes = [service.choose_weight(SearchRequest(q.text, seed=seed)) for q in self.protocol.queries]
        chosen = [o.w_star for o in outcomes]
        vecs = np.stack([service.composed_vectors(q.text, [w]).numpy()[0]
                         for q, w in zip(self.protocol.queries, chosen)])
        scores = [[{"w": s.w, "score": s.score, "context": s.context_score, "object": s.object_score}
                   for s in o.scores] for o in outcomes]
        return self.rank(vecs), chosen, scores


def _evaluate_part(qc: QualityConfig, protocol: Protocol, gallery, concept_features: dict, tokens: list,
                   seed: int, part: str) -> tuple[int, str, dict[str, Any]]:
    """One seed's share of the main table: part 'baselines' (text only, text + avg image, with that seed's
    tokens of ours for parsing), or a trained method: its fixed-w curve (w = 1 is its row) and, for prompt
    tuning and ours, GAIR."""
    t0 = time.perf_counter()
    retrieval = Retrieval(_WORKER["backbone"], protocol, gallery, concept_features, qc)
    service = retrieval.service(tokens, seed)
    out: dict[str, Any] = {key: {} for key in PER_SEED_KEYS}
    rows: dict[str, Ranking] = {}
    if part == "baselines":
        rows = retrieval.baselines(service)
    else:
        curve = retrieval.fixed_w(service)
        out["fixed_w"][part] = {w: r.ranks for w, r in curve.items()}
        rows[next(r for r, m in ROW_METHOD.items() if m == part and r not in GAIR_ROWS)] = curve[1.0]
        for row, method in GAIR_ROWS.items():
            if method == part:
                t = time.perf_counter()
                rows[row], out["gair_w"][part], out["gair_scores"][part] = retrieval.gair(service, seed)
                out["gair_seconds_per_query"][row] = round((time.perf_counter() - t) / len(protocol.queries), 3)
    out["ranks"] = {row: r.ranks for row, r in rows.items()}
    out["top1"] = {row: r.top1 for row, r in rows.items()}
    log(f"seed {seed}: {part} evaluated in {time.perf_counter() - t0:.1f} s")
    return seed, part, out


PER_SEED_KEYS = ("ranks", "top1", "fixed_w", "gair_w", "gair_scores", "gair_seconds_per_query")


def evaluate_all(qc: QualityConfig, protocol: Protocol, gallery, concept_features: dict, runs: dict[Task, Run],
                 pool) -> dict[int, dict[str, Any]]:
    """Per training seed: ranks of every row of the main table, the fixed-w curves and GAIR's choices."""
    def tokens(seed: int, method: str) -> list:
        return [runs[Task(seed, pid, method)].token for pid in protocol.concepts]

    parts = [p for p in GAIR_ROWS.values()] + [m for m in TRAINED if m not in GAIR_ROWS.values()] + ["baselines"]
    jobs = [(qc, protocol, gallery, concept_features, tokens(s, OURS if p == "baselines" else p), s, p)
            for p in parts for s in qc.seeds]  # the slow GAIR parts first, so the pool ends evenly
    per_seed: dict[int, dict[str, Any]] = {s: {key: {} for key in PER_SEED_KEYS} for s in qc.seeds}

    def done(result) -> None:
        seed, _part, out = result
        for key, values in out.items():
            per_seed[seed][key].update(values)

    run_jobs(pool, _evaluate_part, jobs, done)
    return per_seed


def _look(photo) -> tuple:
    """What a caption can say about a product: category, colour, pattern and pattern colour."""
    p = photo.product
    return (p.category, p.colour, p.pattern, p.pattern_colour)


ERROR_KINDS = ("hit", "same product, other context", "look-alike, same context", "look-alike, other context",
               "same category, other look", "other category")


def error_kind(target, first) -> str:
    """What a query ranked first, relative to its target photo (ERROR_KINDS). A look-alike shares the target's
    category, colour and pattern: only hidden details (trim, emblem, shape) tell them apart."""
    if first.id == target.id:
        return "hit"
    if first.product.id == target.product.id:
        return "same product, other context"
    if _look(first) == _look(target):
        return "look-alike, same context" if first.context == target.context else "look-alike, other context"
    return "same category, other look" if first.product.category == target.product.category else "other category"


def error_table(world, protocol: Protocol, top1: dict[str, list[list[int]]]) -> dict[str, dict[str, float]]:
    """Per row, % of queries (pooled over seeds) whose first result is of each ERROR_KINDS kind."""
    out = {}
    for row, lists in top1.items():
        counts = dict.fromkeys(ERROR_KINDS, 0)
        for firsts in lists:
            for q, top in zip(protocol.queries, firsts):
                counts[error_kind(world.photo(q.photo_id), world.photo(protocol.gallery[top]))] += 1
        total = sum(counts.values())
        out[row] = {k: round(100 * v / total, 1) for k, v in counts.items()}
    return out


def diagnostics(retrieval: Retrieval, world, protocol: Protocol, image_features,
                per_seed: dict[int, dict]) -> dict[str, Any]:
    """How hard is the world? What the visible description alone gets (caption oracle), what the concept's
    images alone get (no text), how many gallery photos each query must beat, and what each method ranks
    first when it misses."""
    import numpy as np
    import torch

    from engine.text import TextEncoder
    from world.captions import canonical_caption

    texts = [canonical_caption(world.photo(q.photo_id)) for q in protocol.queries]
    with torch.no_grad():
        oracle = retrieval.rank(TextEncoder(retrieval.backbone).encode(texts).pooled.float().numpy())
    image_only = retrieval.rank(np.stack([image_features[q.product_id].mean(0) for q in protocol.queries]))
    gallery = [world.photo(p) for p in protocol.gallery]
    counts: dict[str, list[int]] = {"same_category": [], "same_category_and_context": [], "same_look": [],
                                    "same_look_and_context": [], "same_product_other_contexts": []}
    for q in protocol.queries:
        target = world.photo(q.photo_id)
        others = [ph for ph in gallery if ph.id != target.id]
        cat, ctx = target.product.category, target.context
        other_products = [ph for ph in others if ph.product.id != q.product_id]
        counts["same_category"].append(sum(ph.product.category == cat for ph in others))
        counts["same_category_and_context"].append(sum(ph.product.category == cat and ph.context == ctx for ph in others))
        counts["same_look"].append(sum(_look(ph) == _look(target) for ph in other_products))
        counts["same_look_and_context"].append(sum(_look(ph) == _look(target) and ph.context == ctx
                                                   for ph in other_products))
        counts["same_product_other_contexts"].append(len(others) - len(other_products))
    top1 = {row: [per_seed[s]["top1"][row] for s in per_seed] for row in ROWS}
    top1.update({"caption oracle": [oracle.top1], "image only": [image_only.top1]})
    return {
        "caption_oracle": retrieval_metrics(oracle.ranks),
        "caption_oracle_example": texts[0],
        "image_only": retrieval_metrics(image_only.ranks),
        "distractors_mean": {k: round(statistics.mean(v), 2) for k, v in counts.items()},
        "queries_with_a_same_look_same_context_distractor": sum(1 for v in counts["same_look_and_context"] if v),
        "first_result_kinds": error_table(world, protocol, top1),
    }


# ---------------------------------------------------------------- aggregation

def _mean_std(values: Sequence[float], digits: int = 2) -> dict[str, float]:
    """Mean and sample standard deviation (0 for a single value), NaN and None left out."""
    values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not values:
        return {"mean": None, "std": None, "n": 0}
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": round(statistics.mean(values), digits), "std": round(std, digits), "n": len(values)}


def summarise_retrieval(per_seed: dict[int, dict], runs: dict[Task, Run], qc: QualityConfig) -> dict[str, Any]:
    """Per row: MRR / recall@k mean and std over seeds, each seed's figures, and training seconds per token."""
    table = {}
    for row in ROWS:
        seeds = {s: retrieval_metrics(per_seed[s]["ranks"][row]) for s in per_seed}
        entry = {k: _mean_std([m[k] for m in seeds.values()]) for k in ("mrr", *(f"r@{k}" for k in RECALL_AT))}
        entry["per_seed"] = {str(s): m for s, m in seeds.items()}
        method = ROW_METHOD.get(row)
        if method is not None:
            mine = [r.metrics for t, r in runs.items() if t.method == method and t.lambda_ce is None]
            entry["train_seconds_per_token"] = _mean_std([m["train_seconds"] for m in mine])
            entry["seconds_per_step"] = _mean_std([m["seconds_per_step"] for m in mine], 4)
        if row in GAIR_ROWS:
            entry["gair_seconds_per_query"] = round(statistics.mean(
                per_seed[s]["gair_seconds_per_query"][row] for s in per_seed), 3)
        table[row] = entry
    return table


def targets(table: dict[str, Any]) -> dict[str, Any]:
    """The issue's targets, checked on the mean MRR over seeds."""
    m = {row: table[row]["mrr"]["mean"] for row in table}
    order = ["text only", "text + avg image", "prompt tuning", "ti+ce+proj (ours)"]
    return {
        "ordering_text_lt_textimage_lt_pt_le_ours": bool(m[order[0]] < m[order[1]] < m[order[2]] <= m[order[3]]),
        "gair_not_worse_than_ours": bool(m["ours + GAIR"] >= m["ti+ce+proj (ours)"]),
        "ours_minus_prompt_tuning": round(m["ti+ce+proj (ours)"] - m["prompt tuning"], 2),
        "ours_minus_prompt_tuning_target": 5.0,
        "gair_gain_over_ours": round(m["ours + GAIR"] - m["ti+ce+proj (ours)"], 2),
        "gair_gain_target": 2.0,
        "paper": {"ours_minus_prompt_tuning": 5.2, "gair_gain_over_ours": 2.2},
    }


def summarise_fixed_w(per_seed: dict[int, dict]) -> dict[str, Any]:
    """MRR per fixed w (mean over seeds), the best fixed w, and the per-query oracle w (an upper bound for GAIR)."""
    out = {}
    for method in TRAINED:
        curves = [per_seed[s]["fixed_w"].get(method) for s in per_seed]
        if not all(curves):
            continue
        grid = list(curves[0])
        mrr = {str(w): _mean_std([retrieval_metrics(c[w])["mrr"] for c in curves])["mean"] for w in grid}
        oracle = [retrieval_metrics([min(c[w][i] for w in grid) for i in range(len(c[grid[0]]))])["mrr"]
                  for c in curves]
        out[method] = {"mrr_by_w": mrr, "best_fixed_w": max(mrr, key=lambda w: mrr[w]),
                       "per_query_oracle_w_mrr": _mean_std(oracle)}
    for method in GAIR_ROWS.values():
        chosen = [w for s in per_seed for w in per_seed[s]["gair_w"].get(method, [])]
        if chosen:
            out.setdefault(method, {})["gair_w_star_counts"] = {str(w): chosen.count(w) for w in sorted(set(chosen))}
            out[method]["gair"] = gair_diagnostics(per_seed, method)
    return out


def gair_diagnostics(per_seed: dict[int, dict], method: str) -> dict[str, Any]:
    """Why GAIR picks what it picks: mean scores per w, and the MRR w would give if chosen by each term alone
    (score = min(context, object) is GAIR; 'object' and 'context' are one term each), against w = 1."""
    by_w: dict[float, dict[str, list[float]]] = {}
    rules = {"score": [], "object": [], "context": []}
    versus = {"better": 0, "same": 0, "worse": 0}
    for s in per_seed:
        curve, scores = per_seed[s]["fixed_w"][method], per_seed[s]["gair_scores"][method]
        for qi, per_w in enumerate(scores):
            for entry in per_w:
                for key in ("score", "context", "object"):
                    by_w.setdefault(entry["w"], {"score": [], "context": [], "object": []})[key].append(entry[key])
            for key, ranks in rules.items():
                best = max(per_w, key=lambda e: e[key])  # first best in grid order, as engine.query.gair.choose
                ranks.append(curve[best["w"]][qi])
            r_star, r_one = curve[max(per_w, key=lambda e: e["score"])["w"]][qi], curve[1.0][qi]
            versus["better" if r_star < r_one else "same" if r_star == r_one else "worse"] += 1
    return {"mean_by_w": {str(w): {k: round(statistics.mean(v), 4) for k, v in terms.items()}
                          for w, terms in sorted(by_w.items())},
            "mrr_if_w_chosen_by": {k: retrieval_metrics(v)["mrr"] for k, v in rules.items()},
            "queries_vs_w1": versus}


RECOGNITION = ("auc_target_vs_parent", "auc_target_vs_other", "auc_parent_vs_other")
NORMS = ("token_norm", "word_norm_mean", "word_norm_std", "norm_ratio", "cos_attributes_mean")


def summarise_tokens(runs: dict[Task, Run]) -> tuple[dict, dict]:
    """Recognition AUCs (x100, mean and std over concepts x seeds) and norm diagnostics per trained method."""
    recognition, norms = {}, {}
    for method in TRAINED:
        mine = [r.metrics for t, r in runs.items() if t.method == method and t.lambda_ce is None]
        recognition[method] = {k: _mean_std([100 * m[k] for m in mine if m.get(k) is not None]) for k in RECOGNITION}
        norms[method] = {k: _mean_std([m[k] for m in mine], 4)["mean"] for k in NORMS}
        norms[method]["within_1std"] = round(sum(bool(m.get("norm_within_1std")) for m in mine) / len(mine), 3)
    return recognition, norms


def lambda_ablation(retrieval: Retrieval, runs: dict[Task, Run], qc: QualityConfig, protocol: Protocol) -> list[dict]:
    """Paper Table 1 in the demo world: (lambda_SD, lambda_CE) from prompt tuning (0, 1) to textual inversion
    (1, 0), ours in between; first training seed, the first `ablation_concepts` concepts."""
    from trainer.config import TrainConfig

    if qc.ablation_concepts == 0:
        return []
    seed, concepts = qc.seeds[0], protocol.concepts[:qc.ablation_concepts]
    queries = [q for q in protocol.queries if q.product_id in concepts]
    settings = [("prompt-tuning", None, (0, 1))]
    lambdas = sorted(set(qc.lambda_ce) | {TrainConfig.lambda_ce}, reverse=True)
    settings += [(OURS, None if lam == TrainConfig.lambda_ce else lam, (1, lam)) for lam in lambdas]
    settings += [("textual-inversion", None, (1, 0))]
    rows = []
    for method, lam, (w_sd, w_ce) in settings:
        mine = [runs[Task(seed, pid, method, lam)] for pid in concepts]
        service = retrieval.service([r.token for r in mine], seed)
        ranks = retrieval.fixed_w(service, queries)[1.0].ranks
        row = {"method": method, "lambda_sd": w_sd, "lambda_ce": w_ce, **retrieval_metrics(ranks)}
        for k in ("auc_target_vs_parent", "auc_parent_vs_other", "clf_auc_target_vs_parent", "norm_ratio"):
            row[k] = _mean_std([(100 if "auc" in k else 1) * r.metrics[k] for r in mine if r.metrics.get(k) is not None],
                               2 if "auc" in k else 3)
        rows.append(row)
    return rows


# ---------------------------------------------------------------- the run
