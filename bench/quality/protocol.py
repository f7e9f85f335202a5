"""The quality benchmark's protocol: its config, the methods and table rows, concepts, queries and gallery."""
from __future__ import annotations

import json
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.backbones import DEFAULT_BACKBONE

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

    backbone: str = DEFAULT_BACKBONE  # backbone identifier (registry name, directory, hf-hub:...)
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


def log(message: str) -> None:
    print(f"[bench/quality {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)
