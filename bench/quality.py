"""Quality benchmark: the paper's retrieval, recognition, lambda_CE and norm tables in the demo world.

    coinage bench quality [--world-seed 0] [--concepts 20] [--seeds 0 1 2] [--steps 300] [--jobs 2]
    coinage bench quality --quick            # CI smoke run: small sizes, same code path, same output format

Protocol (docs/method.md "Retrieval evaluation", PerVL-like), from a world seed:
- concepts: held-out products of the world (round-robin over the categories), 5 training photos each
  (the world's concept split), trained as custom tokens by every method for each training seed;
- queries: one caption per query photo of a concept, "a photo of a <p0042> dress on a brick wall"
  (world.captions.query_caption: the context is named, the product only by "<token> <parent>");
- gallery: every photo of the world except the held-out products' training photos (2,320 photos for
  the default world), so each query's target sits among its own product in other contexts, look-alike
  products of its family, the rest of its category and every other category;
- ranking: exact cosine similarity in memory (numpy) against the features the vector store holds
  (engine.images.ImageEncoder, the PyTorch twin of the indexer's fp32 ONNX encoder); full ranks, so
  MRR is exact (a store search returns at most a page of results).

Query vectors come from the engine's QueryService (the same code that serves search): text only and
text + average image are its baselines (`text_only_vector`, `text_image_vector`), a trained token is
`composed_vectors(query, [1.0])`, and GAIR is `choose_weight` (paper Algorithm 1) then q_pool(w*).
Training goes through trainer.ablation.train_world_token (train_concept on a world concept), which also
yields the recognition AUCs (paper Table 3 protocol) and the norm diagnostics of every token.

The report (JSON + markdown) holds: MRR mean and std over training seeds with recall@1/5/10 and training
time per method; recognition AUCs; the lambda_CE ablation (paper Table 1); norms; and diagnostics that say
how hard the world is (caption oracle, image-only query, fixed-w curves, GAIR's choices, distractor counts,
whether the backbone saw the concepts during its own training).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import random
import shlex
import statistics
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, NamedTuple, Sequence

RESULTS = Path(__file__).resolve().parent / "results"

#: Trained methods (trainer.config.METHODS) and the retrieval rows built on them, in table order.
TRAINED = ("prompt-tuning", "textual-inversion", "ti+ce", "ti+ce+proj")
OURS = "ti+ce+proj"
ROWS = ("text only", "text + avg image", "prompt tuning", "prompt tuning + GAIR", "textual inversion", "ti+ce",
        "ti+ce+proj (ours)", "ours + GAIR")
ROW_METHOD = {"prompt tuning": "prompt-tuning", "prompt tuning + GAIR": "prompt-tuning",
              "textual inversion": "textual-inversion", "ti+ce": "ti+ce", "ti+ce+proj (ours)": OURS,
              "ours + GAIR": OURS}
GAIR_ROWS = {"prompt tuning + GAIR": "prompt-tuning", "ours + GAIR": OURS}
#: Paper Table 4 (MRR %, DeepFashion2, 50 concepts), for the markdown table.
PAPER_MRR = {"text only": 17.6, "text + avg image": 21.7, "prompt tuning": 51.4, "prompt tuning + GAIR": 45.2,
             "ti+ce+proj (ours)": 56.6, "ours + GAIR": 58.8}
RECALL_AT = (1, 5, 10)


@dataclass(frozen=True)
class QualityConfig:
    """One benchmark run; `--quick` swaps in QUICK's values for the fields the command line leaves unset."""

    backbone: str = "world"  # backbone identifier (registry name, directory, hf-hub:...)
    world_seed: int = 0  # world whose held-out products become the concepts
    concepts: int = 20  # concepts (held-out products), round-robin over the 8 categories; the issue asks >= 20
    seeds: tuple[int, ...] = (0, 1, 2)  # training seeds (TrainConfig.seed; also GAIR's diffusion seed)
    steps: int = 300  # optimizer steps per token (TrainConfig default)
    lambda_ce: tuple[float, ...] = (1.0, 1e-3, 1e-5)  # extra lambda_CE values of the ablation (ours, first seed)
    ablation_concepts: int = 6  # concepts of the lambda_CE ablation (the first ones of the pick)
    gair_weights: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)  # GAIR's grid W (QueryConfig default)
    gair_images: int = 2  # images generated per w and for x_c (QueryConfig.images_per_weight)
    gair_steps: int | None = 10  # denoising steps of GAIR (DPM-Solver++); None: the backbone's default (20)
    jobs: int = 2  # worker processes for training and evaluation (each with `threads` torch threads)
    threads: int = 1  # torch threads per process (on a shared 2-core CPU 1 is fastest)
    avoid_seen: bool = True  # pick concepts whose identity the backbone never trained on, when there are enough
    cache: str | None = None  # directory of trained tokens to reuse (keyed by backbone weights, world, product and
    # training config; a rerun then only evaluates); None: train every token

    def __post_init__(self) -> None:
        if self.concepts < 1 or not self.seeds or self.steps < 1 or self.jobs < 1 or self.threads < 1:
            raise ValueError("concepts, steps, jobs and threads must be >= 1 and seeds non-empty")
        if self.gair_images < 1 or not self.gair_weights:
            raise ValueError("gair_images must be >= 1 and gair_weights non-empty")
        if self.ablation_concepts < 0 or self.ablation_concepts > self.concepts:
            raise ValueError(f"ablation_concepts must lie in [0, concepts={self.concepts}]")


QUICK: dict[str, Any] = {"concepts": 8, "seeds": (0, 1), "steps": 30, "lambda_ce": (1e-3,), "ablation_concepts": 4,
                         "gair_images": 1, "gair_steps": 8, "gair_weights": (0.0, 0.5, 1.0)}


# ---------------------------------------------------------------- protocol

@dataclass(frozen=True)
class Query:
    photo_id: str  # the one correct gallery photo
    product_id: str  # the concept it shows
    text: str  # 'a photo of a <p0042> dress on a brick wall'
    context: str  # the scene context (world.vocab.CONTEXTS key)


@dataclass
class Protocol:
    world_seed: int
    concepts: list[str]  # product ids, in pick order
    queries: list[Query]
    gallery: list[str]  # photo ids
    seen: dict[str, int]  # concept -> backbone training pairs showing its identity (empty when unknown)
    exposure: dict[str, Any]  # how `seen` was established

    @property
    def target_index(self) -> list[int]:
        row = {pid: i for i, pid in enumerate(self.gallery)}
        return [row[q.photo_id] for q in self.queries]


def pick_concepts(world, n: int, avoid: set[str] = frozenset()) -> list[str]:
    """`n` held-out products, round-robin over categories in vocabulary order, products in id order;
    products in `avoid` only when the others run out."""
    from world.vocab import CATEGORIES

    held = world.splits.heldout
    if n > len(held):
        raise ValueError(f"--concepts {n} exceeds the world's {len(held)} held-out products")
    by_cat = {c: [p for p in held if world.product(p).category == c and p not in avoid] +
              [p for p in held if world.product(p).category == c and p in avoid] for c in CATEGORIES}
    picked: list[str] = []
    while len(picked) < n:
        for c in CATEGORIES:
            if by_cat[c] and len(picked) < n:
                picked.append(by_cat[c].pop(0))
    return picked


def build_protocol(world, n_concepts: int, seen: dict[str, int] | None = None, exposure: dict | None = None,
                   avoid_seen: bool = True) -> Protocol:
    """Concepts, their caption queries and the gallery (see the module docstring)."""
    from world.captions import query_caption

    seen = seen or {}
    concepts = pick_concepts(world, n_concepts, {p for p, k in seen.items() if k} if avoid_seen else set())
    training = {ph for pid in world.splits.heldout for ph in world.splits.concept[pid]}
    queries = []
    for pid in concepts:
        for photo_id in world.splits.query[pid]:
            photo = world.photo(photo_id)
            queries.append(Query(photo_id, pid, query_caption(photo, f"<{pid}>"), photo.context))
    targets = {q.photo_id for q in queries}
    # a photo of the same product in the same context as a query would be a second correct answer: leave it out
    twins = {(q.product_id, q.context) for q in queries}
    gallery = [ph.id for ph in world.photos if ph.id not in training and (
        ph.id in targets or (ph.product.id, ph.context) not in twins)]
    return Protocol(world.seed, concepts, queries, gallery, {p: seen.get(p, 0) for p in concepts} if seen else {},
                    exposure or {})


def replay_training_pairs(seed: int, pairs: int, detail_prob: float) -> tuple[list[tuple], list[str]]:
    """(product identity, caption) of every pair world.train.build_dataset draws for these settings, without
    rendering: the same rng, seeded the same way, consumed by the same calls in the same order."""
    from world.build import make_world, sample_training_pair
    from world.train import detail_phrase

    train_world = make_world(seed)
    rng = random.Random(f"world-train-{seed}")
    identities, captions = [], []
    for _ in range(pairs):
        photo, text = sample_training_pair(train_world, rng)
        if rng.random() < detail_prob:
            text += detail_phrase(photo.product, rng)
        identities.append(photo.product.identity)
        captions.append(text)
    return identities, captions


def backbone_exposure(backbone_id: str, world) -> tuple[dict[str, int], dict[str, Any]]:
    """How many of the backbone's training pairs show each held-out product's identity.

    Replays world.train.build_dataset's sampling (same rng, same calls) from the backbone's
    train_report.json; checks the replay against the cached captions when the cache is there.
    """
    from engine.backbones import resolve_backbone

    try:
        _config, local = resolve_backbone(backbone_id)
    except Exception as e:  # noqa: BLE001 - reported, not fatal: the benchmark loads the backbone itself later
        return {}, {"known": False, "why": f"{type(e).__name__}: {e}"}
    report = Path(local) / "train_report.json" if local is not None else None
    if report is None or not report.is_file():
        return {}, {"known": False, "why": f"backbone {backbone_id!r} has no train_report.json (not a world backbone)"}
    cfg = json.loads(report.read_text())["config"]
    identities, captions = replay_training_pairs(cfg["seed"], cfg["pairs"], cfg["detail_prob"])
    cache = Path(cfg.get("work", "")) / f"pairs-seed{cfg['seed']}-n{cfg['pairs']}.npz"
    replay_checked = None
    if cache.is_file():
        import numpy as np

        replay_checked = json.loads(str(np.load(cache, allow_pickle=False)["captions"])) == captions
    counts: dict[tuple, int] = {}
    for ident in identities:
        counts[ident] = counts.get(ident, 0) + 1
    seen = {pid: counts.get(world.product(pid).identity, 0) for pid in world.splits.heldout}
    return seen, {"known": True, "backbone_world_seed": cfg["seed"], "training_pairs": cfg["pairs"],
                  "replay_matches_cached_captions": replay_checked,
                  "heldout_products_seen": sum(1 for k in seen.values() if k),
                  "heldout_products": len(seen)}


# ---------------------------------------------------------------- training

@dataclass(frozen=True)
class Task:
    seed: int
    product_id: str
    method: str
    lambda_ce: float | None = None  # None: TrainConfig's default


@dataclass
class Run:
    task: Task
    token: Any  # engine.tokens.CustomToken
    metrics: dict[str, Any]


def plan(qc: QualityConfig, protocol: Protocol) -> list[Task]:
    from trainer.config import TrainConfig

    tasks = [Task(s, pid, m) for s in qc.seeds for pid in protocol.concepts for m in TRAINED]
    tasks += [Task(qc.seeds[0], pid, OURS, lam) for lam in qc.lambda_ce if lam != TrainConfig.lambda_ce
              for pid in protocol.concepts[:qc.ablation_concepts]]
    return tasks


def train_config(qc: QualityConfig, task: Task):
    from trainer.config import TrainConfig

    extra = {} if task.lambda_ce is None else {"lambda_ce": task.lambda_ce}
    return TrainConfig(method=task.method, steps=qc.steps, seed=task.seed, samples=False, checkpoint_every=0, **extra)


_WORKER: dict[str, Any] = {"concepts": {}}  # per process: the loaded backbone and the world concepts built so far


def _init_worker(backbone_id: str, threads: int) -> None:
    import torch

    from engine.loading import load_backbone

    torch.set_num_threads(threads)
    _WORKER["backbone"] = load_backbone(backbone_id, device="cpu")


def _train(qc: QualityConfig, task: Task, backbone_key: str) -> Run:
    from engine.tokens import load_token, save_token
    from trainer.ablation import train_world_token
    from trainer.config import fingerprint
    from trainer.world_concept import world_concept

    config = train_config(qc, task)
    path = None
    if qc.cache is not None:
        key = fingerprint({"backbone": backbone_key, "world_seed": qc.world_seed, "product": task.product_id,
                           "config": config.result_fields()})
        path = Path(qc.cache) / f"world{qc.world_seed}-{task.product_id}-{task.method}-{key}.safetensors"
        if path.is_file():
            token = load_token(path)
            return Run(task, token, dict(token.meta.metrics, cached=True))
    concept_key = (qc.world_seed, task.product_id)
    if concept_key not in _WORKER["concepts"]:
        _WORKER["concepts"][concept_key] = world_concept(task.product_id, seed=qc.world_seed)
    with tempfile.TemporaryDirectory(prefix="coinage-quality-") as tmp:
        result = train_world_token(_WORKER["backbone"], _WORKER["concepts"][concept_key], config, Path(tmp))
    if path is not None:
        save_token(result.token, path)  # its metadata carries the metrics (AUCs, norms, seconds)
    return Run(task, result.token, result.metrics)


def backbone_key(backbone) -> str:
    """Content hash of the backbone's weights (the cache must not serve tokens of a retrained backbone)."""
    from engine.onnx.export import weights_hash

    parts = [weights_hash(m) for m in (backbone.clip, backbone.unet, backbone.vae) if m is not None]
    return f"{backbone.id}:" + ":".join(h[:16] for h in parts)


@contextmanager
def workers(qc: QualityConfig, backbone) -> Iterator[Any]:
    """A pool of `qc.jobs` spawned processes that each load the backbone once, or None to work in-process."""
    _WORKER["backbone"] = backbone
    if qc.jobs == 1:
        yield None
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(qc.jobs, mp_context=multiprocessing.get_context("spawn"), initializer=_init_worker,
                             initargs=(qc.backbone, qc.threads)) as pool:
        yield pool


def run_jobs(pool, fn: Callable, jobs: Sequence[tuple], done: Callable[[Any], None]) -> None:
    """fn(*job) for every job, in the pool (completion order) or in-process (job order); `done` sees each result."""
    if pool is None:
        for job in jobs:
            done(fn(*job))
        return
    from concurrent.futures import as_completed

    for future in as_completed([pool.submit(fn, *job) for job in jobs]):
        done(future.result())


def train_all(qc: QualityConfig, tasks: Sequence[Task], pool, key: str) -> dict[Task, Run]:
    """Every task's token and metrics, in task order."""
    runs: dict[Task, Run] = {}
    t0 = time.perf_counter()

    def done(run: Run) -> None:
        runs[run.task] = run
        elapsed = time.perf_counter() - t0
        eta = elapsed / len(runs) * (len(tasks) - len(runs))
        t = run.task
        how = "loaded from the cache" if run.metrics.get("cached") else "trained"
        log(f"{how} {len(runs)}/{len(tasks)}: seed {t.seed} {t.product_id} {t.method}"
            f"{'' if t.lambda_ce is None else f' lambda_ce={t.lambda_ce:g}'} in {run.metrics['train_seconds']:.1f} s "
            f"(elapsed {elapsed / 60:.1f} min, eta {eta / 60:.1f} min)")

    run_jobs(pool, _train, [(qc, task, key) for task in tasks], done)
    return {task: runs[task] for task in tasks}


# ---------------------------------------------------------------- retrieval

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

    def service(self, tokens, seed: int):
        from engine.query import QueryConfig, QueryService
        from engine.tokens import TokenSet

        config = QueryConfig(weights=tuple(self.qc.gair_weights), images_per_weight=self.qc.gair_images,
                             steps=self.qc.gair_steps, seed=seed, text_runtime="torch")
        # the store is never searched: ranking is exact, in memory (see ranks_of)
        return QueryService(self.backbone, None, TokenSet(list(tokens)), self.concept_features, config)

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

def log(message: str) -> None:
    print(f"[bench/quality {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run(qc: QualityConfig) -> dict[str, Any]:
    import torch

    from engine.images import ImageEncoder
    from engine.loading import load_backbone
    from world.build import make_world
    from world.render import render

    torch.set_num_threads(qc.threads)
    t_start = time.perf_counter()
    world = make_world(qc.world_seed)
    seen, exposure = backbone_exposure(qc.backbone, world)
    protocol = build_protocol(world, qc.concepts, seen, exposure, qc.avoid_seen)
    backbone = load_backbone(qc.backbone, device="cpu")
    log(f"world seed {qc.world_seed}: {len(protocol.concepts)} concepts, {len(protocol.queries)} queries, "
        f"gallery {len(protocol.gallery)} photos; backbone {backbone.id}")

    t = time.perf_counter()
    images = ImageEncoder(backbone)
    gallery = images.encode_pil([render(world.photo(p), 64) for p in protocol.gallery]).float().numpy()
    concept_images = {pid: [render(world.photo(p), 64) for p in world.splits.concept[pid]] for pid in protocol.concepts}
    concept_features = {f"<{pid}>": images.encode_pil(ims).float() for pid, ims in concept_images.items()}
    gallery_seconds = time.perf_counter() - t

    tasks = plan(qc, protocol)
    log(f"training {len(tasks)} tokens ({qc.steps} steps each, {qc.jobs} process(es))")
    with workers(qc, backbone) as pool:
        t = time.perf_counter()
        runs = train_all(qc, tasks, pool, backbone_key(backbone) if qc.cache else "")
        train_seconds = time.perf_counter() - t
        t = time.perf_counter()
        per_seed = evaluate_all(qc, protocol, gallery, concept_features, runs, pool)
    table = summarise_retrieval(per_seed, runs, qc)
    retrieval = Retrieval(backbone, protocol, gallery, concept_features, qc)
    ablation = lambda_ablation(retrieval, runs, qc, protocol)
    recognition, norms = summarise_tokens(runs)
    diag = diagnostics(retrieval, world, protocol,
                       {pid: concept_features[f"<{pid}>"].numpy() for pid in protocol.concepts}, per_seed)
    eval_seconds = time.perf_counter() - t
    return {
        "config": _jsonable(dataclasses.asdict(qc)),
        "protocol": {"world_seed": qc.world_seed, "concepts": protocol.concepts, "queries": len(protocol.queries),
                     "gallery": len(protocol.gallery), "training_photos_per_concept": 5,
                     "query_example": protocol.queries[0].text, "ranking": "exact cosine, in memory (numpy), "
                     "on ImageEncoder features (what the indexer stores, fp32)",
                     "backbone": backbone.id, "backbone_exposure": exposure,
                     "concepts_seen_in_backbone_training": {p: k for p, k in protocol.seen.items() if k}},
        "retrieval": table,
        "targets": targets(table),
        "fixed_w": summarise_fixed_w(per_seed),
        "recognition_auc": recognition,
        "norms": norms,
        "lambda_ce_ablation": ablation,
        "diagnostics": diag,
        "cached_tokens": sum(1 for r in runs.values() if r.metrics.get("cached")),
        "seconds": {"gallery_features": round(gallery_seconds, 1), "training": round(train_seconds, 1),
                    "evaluation": round(eval_seconds, 1), "total": round(time.perf_counter() - t_start, 1)},
        "tokens": [{"seed": t.seed, "product": t.product_id, "method": t.method, "lambda_ce": t.lambda_ce,
                    "attributes": r.token.meta.attributes[:6],
                    **{k: r.metrics.get(k) for k in (*RECOGNITION, *NORMS, "train_seconds", "seconds_per_step")}}
                   for t, r in runs.items()],
        "ranks": {str(s): per_seed[s]["ranks"] for s in per_seed},
        "queries": [dataclasses.asdict(q) for q in protocol.queries],
    }


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


# ---------------------------------------------------------------- command line

def add_arguments(p: argparse.ArgumentParser) -> None:
    d = QualityConfig()
    p.add_argument("--quick", action="store_true",
                   help=f"CI smoke sizes (unless given explicitly): {', '.join(f'{k}={v}' for k, v in QUICK.items())}")
    p.add_argument("--backbone", default=None, help=f"backbone identifier (default {d.backbone!r})")
    p.add_argument("--world-seed", type=int, default=None, help=f"world seed (default {d.world_seed})")
    p.add_argument("--concepts", type=int, default=None, help=f"held-out products used as concepts (default {d.concepts})")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help=f"training seeds (default {' '.join(map(str, d.seeds))})")
    p.add_argument("--steps", type=int, default=None, help=f"optimizer steps per token (default {d.steps})")
    p.add_argument("--lambda-ce", type=float, nargs="*", default=None,
                   help=f"extra lambda_CE values of the ablation (default {' '.join(f'{x:g}' for x in d.lambda_ce)})")
    p.add_argument("--ablation-concepts", type=int, default=None, help=f"concepts of the ablation (default {d.ablation_concepts})")
    p.add_argument("--gair-weights", type=float, nargs="+", default=None, help="GAIR's grid W (default 0 .25 .5 .75 1)")
    p.add_argument("--gair-images", type=int, default=None, help=f"images per w (default {d.gair_images})")
    p.add_argument("--gair-steps", type=int, default=None, help=f"GAIR denoising steps (default {d.gair_steps}; 0: the backbone's own default)")
    p.add_argument("--jobs", type=int, default=None, help=f"training processes (default {d.jobs})")
    p.add_argument("--threads", type=int, default=None, help=f"torch threads per process (default {d.threads})")
    p.add_argument("--allow-seen", action="store_true",
                   help="pick concepts in plain order even if the backbone trained on their identity")
    p.add_argument("--cache", help="directory of trained tokens reused by reruns with the same backbone weights, "
                                   "world and training settings (e.g. var/bench-quality); default: train all")
    p.add_argument("--out", help="JSON report (default bench/results/quality.json, quality-world<N>.json for "
                                 "world seed N != 0; the markdown tables go next to it as .md)")
    p.add_argument("--note", default="", help="free text stored in the report (machine load, ...)")


def config_from_args(args: argparse.Namespace) -> QualityConfig:
    values: dict[str, Any] = dict(QUICK) if args.quick else {}
    given = {"backbone": args.backbone, "world_seed": args.world_seed, "concepts": args.concepts,
             "seeds": tuple(args.seeds) if args.seeds else None, "steps": args.steps,
             "lambda_ce": tuple(args.lambda_ce) if args.lambda_ce is not None else None,
             "ablation_concepts": args.ablation_concepts,
             "gair_weights": tuple(args.gair_weights) if args.gair_weights else None,
             "gair_images": args.gair_images, "gair_steps": args.gair_steps, "jobs": args.jobs,
             "threads": args.threads, "cache": args.cache}
    values.update({k: v for k, v in given.items() if v is not None})
    if values.get("gair_steps") == 0:
        values["gair_steps"] = None
    values["avoid_seen"] = not args.allow_seen
    return QualityConfig(**values)


def command_line(qc: QualityConfig, prog: str = "coinage bench quality", out: str | None = None) -> str:
    """The command that reruns `qc` exactly (every setting spelled out, so --quick's sizes are visible)."""
    def nums(values) -> list[str]:
        return [f"{v:g}" for v in values]

    parts = ["--backbone", qc.backbone, "--world-seed", str(qc.world_seed), "--concepts", str(qc.concepts),
             "--seeds", *map(str, qc.seeds), "--steps", str(qc.steps), "--lambda-ce", *nums(qc.lambda_ce),
             "--ablation-concepts", str(qc.ablation_concepts), "--gair-weights", *nums(qc.gair_weights),
             "--gair-images", str(qc.gair_images)]
    parts += ["--gair-steps", str(qc.gair_steps) if qc.gair_steps is not None else "0"]
    parts += ["--jobs", str(qc.jobs), "--threads", str(qc.threads)]
    parts += [] if qc.avoid_seen else ["--allow-seen"]
    parts += ["--cache", qc.cache] if qc.cache else []
    parts += ["--out", out] if out else []
    return f"{prog} {shlex.join(parts)}"


def run_command(args: argparse.Namespace, prog: str = "coinage bench quality") -> int:
    from bench.common import machine
    from bench.quality_tables import markdown

    qc = config_from_args(args)
    out = Path(args.out) if args.out else RESULTS / (
        "quality.json" if qc.world_seed == 0 else f"quality-world{qc.world_seed}.json")
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    host = machine()
    report = run(qc)
    doc = {"benchmark": "quality", "command": command_line(qc, prog, args.out), "date": started,
           "machine": host, "note": args.note, **report}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1) + "\n")
    md = markdown(doc)
    out.with_suffix(".md").write_text(md)
    print(md)
    log(f"wrote {out} and {out.with_suffix('.md')} ({doc['seconds']['total'] / 60:.1f} min)")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.quality", description=__doc__.splitlines()[0])
    add_arguments(p)
    return run_command(p.parse_args(argv), "python -m bench.quality")


if __name__ == "__main__":
    sys.exit(main())
