"""The quality benchmark's report: run it end to end, write the JSON and markdown, and its command line."""
from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import time
from pathlib import Path
from typing import Any

from .evaluation import (NORMS, RECOGNITION, Retrieval, diagnostics, evaluate_all, lambda_ablation,
                         summarise_fixed_w, summarise_retrieval, summarise_tokens, targets)
from .protocol import QUICK, QualityConfig, backbone_exposure, build_protocol, log
from .training import backbone_key, plan, train_all, workers

RESULTS = Path(__file__).resolve().parents[1] / "results"


@dataclasses.dataclass
class Setup:
    """What every evaluation of one world needs: its protocol, the backbone and the image features."""

    world: Any
    protocol: Any  # Protocol
    exposure: dict[str, Any]
    backbone: Any
    gallery: Any  # (G, D) numpy features of the gallery photos
    concept_features: dict[str, Any]  # "<pid>" -> (5, D) torch features of the concept's training photos
    gallery_seconds: float


def setup(qc: QualityConfig) -> Setup:
    """The world, its protocol, the backbone and the gallery and concept-photo features of `qc`."""
    import torch

    from engine.images import ImageEncoder
    from engine.loading import load_backbone
    from world.build import make_world
    from world.render import render

    torch.set_num_threads(qc.threads)
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
    return Setup(world, protocol, exposure, backbone, gallery, concept_features, time.perf_counter() - t)


def run(qc: QualityConfig) -> dict[str, Any]:
    t_start = time.perf_counter()
    s = setup(qc)
    world, protocol, exposure, backbone = s.world, s.protocol, s.exposure, s.backbone
    gallery, concept_features, gallery_seconds = s.gallery, s.concept_features, s.gallery_seconds

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
    import bench.quality

    p = argparse.ArgumentParser(prog="python -m bench.quality", description=bench.quality.__doc__.splitlines()[0])
    add_arguments(p)
    return run_command(p.parse_args(argv), "python -m bench.quality")
