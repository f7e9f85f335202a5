"""Method ablation on the demo world: the figures of docs/method.md "What training should show".

For each held-out product and each method, train a token (same seed, same settings otherwise)
and collect: token norm vs attribute-word norms, cosine similarity to the attribute words, and
the three recognition AUCs (paper Table 3 protocol on world splits). Prints a table of means
and writes every run's metrics as JSON.

    python -m trainer.ablation --products p0010 p0011 p0012 --out var/trainer-ablation.json
"""
from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from engine.backbones import DEFAULT_BACKBONE
from engine.loading import load_backbone

from .config import METHODS, TrainConfig, TrainRequest
from .job import train_concept
from .world_concept import world_concept

COLUMNS = ("auc_target_vs_parent", "auc_target_vs_other", "auc_parent_vs_other", "clf_auc_target_vs_parent",
           "clf_auc_target_vs_other", "token_norm", "word_norm_mean",
           "word_norm_std", "norm_ratio", "cos_attributes_mean", "train_seconds", "total_seconds")


def train_world_token(backbone, wc, config: TrainConfig, out_dir: Path):
    """Train one token for a demo-world concept (trainer.world_concept.WorldConcept): its photos, catalog
    negatives and held-out AUC sets; init 'caption' means the product's visible description, spread over the vectors."""
    init = wc.caption if config.init == "caption" else config.init
    request = TrainRequest(wc.placeholder, wc.parent, wc.images, backbone=backbone, config=replace(config, init=init),
                           catalog_negatives=wc.catalog_negatives, heldout=wc.heldout, out_dir=out_dir, resume=False)
    return train_concept(request)


def run(products: list[str], methods: list[str], config: TrainConfig, backbone_id: str, work: Path,
        world_seed: int = 0) -> list[dict]:
    backbone = load_backbone(backbone_id)
    rows = []
    for pid in products:
        wc = world_concept(pid, seed=world_seed)
        for method in methods:
            t0 = time.perf_counter()
            result = train_world_token(backbone, wc, replace(config, method=method), work / pid / method)
            metrics = dict(result.metrics, total_seconds=round(time.perf_counter() - t0, 1))
            rows.append({"product": pid, "method": method, "attributes": result.token.meta.attributes,
                         "metrics": metrics})
            print(f"{pid} {method:18s} " + " ".join(f"{k}={metrics.get(k)}" for k in COLUMNS), flush=True)
    return rows


def summary(rows: list[dict]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for method in dict.fromkeys(r["method"] for r in rows):
        mine = [r["metrics"] for r in rows if r["method"] == method]
        out[method] = {k: round(statistics.mean(m[k] for m in mine if m.get(k) is not None), 4)
                       for k in COLUMNS if any(m.get(k) is not None for m in mine)}
        out[method]["norm_within_1std"] = sum(bool(m.get("norm_within_1std")) for m in mine) / len(mine)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m trainer.ablation", description=__doc__.splitlines()[0])
    p.add_argument("--products", nargs="+", required=True, help="held-out product ids of the demo world")
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--backbone", default=DEFAULT_BACKBONE)
    p.add_argument("--world-seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=TrainConfig.steps)
    p.add_argument("--lr", type=float, default=TrainConfig.lr)
    p.add_argument("--lambda-ce", type=float, default=TrainConfig.lambda_ce)
    p.add_argument("--num-vectors", type=int, default=TrainConfig.num_vectors)
    p.add_argument("--negatives", default=TrainConfig.negatives)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", nargs="+", default=[], metavar="FIELD=JSON",
                   help="other TrainConfig fields, e.g. --set ce_bias=true rank=8")
    p.add_argument("--threads", type=int)
    p.add_argument("--work", help="where the runs are written (default: a temporary directory)")
    p.add_argument("--out", help="JSON file for every run's metrics and the summary")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    extra = {}
    for item in args.set:
        name, _, value = item.partition("=")
        extra[name] = json.loads(value)
    config = TrainConfig.from_json({**TrainConfig().to_json(), "steps": args.steps, "lr": args.lr,
                                    "lambda_ce": args.lambda_ce, "num_vectors": args.num_vectors,
                                    "negatives": args.negatives, "seed": args.seed, "samples": False,
                                    "checkpoint_every": 0, **extra})
    with tempfile.TemporaryDirectory() as tmp:
        rows = run(args.products, args.methods, config, args.backbone, Path(args.work or tmp), args.world_seed)
    table = summary(rows)
    print(json.dumps(table, indent=2))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"command": "python -m trainer.ablation " + shlex.join(
            argv if argv is not None else sys.argv[1:]), "config": config.to_json(), "summary": table,
            "runs": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
