"""Indexing throughput: the CLIP image encoder in PyTorch eager vs ONNX Runtime, and the whole pipeline.

    coinage bench indexing [--backbone world] [--backbone tiny-random] [--arch ViT-B-32] [--arch ViT-L-14]
                           [--batch 16] [--threads 2] [--out bench/results/indexing.json]
    coinage bench indexing --ray-workers 1 2 [--ray-rows 2000 20000] [--device cuda]   (bench/indexing_ray.py)

For each model:
- encoder: the same model, batch and thread count, PyTorch eager and ONNX Runtime fp32 timed
  alternately batch by batch in one run (warm-up batch first); images per second from the median
  batch time, and the ratio ORT / eager (target >= 1.4 at batch 16 on 2 threads). `ort_fp32` uses
  the indexer's session settings (no spin-waiting), `ort_fp32_spinning` onnxruntime's default. With
  --int8 the dynamically quantised encoder is checked (recall@10 vs fp32 on the demo catalog
  >= 0.99) and timed when kept.
- pipeline: `indexer.pipeline.ingest` (read, decode in worker threads, embed with ORT fp32, write
  to an embedded store) over demo-catalog rows, against the bare encoder on the same images,
  alternated (bare, pipeline, bare, ...), ratio of the medians: target >= 0.85 (decoding must not
  be the bottleneck).
Models: backbones by id (`world`, the demo backbone -- its architecture with random weights,
'world-arch', while it is not trained yet; a backbone directory; tiny-random) and
architecture-true random-weight open_clip models (--arch; timings do not depend on weights).
The demo catalog is rendered by world.catalog into a temporary directory, at its native 64 px for
models of <= 64 px input and at --image-px (256) for the 224-px models. Every
timing is wall-clock and process CPU time; the load average at start and end is recorded, since
the dev machines are shared.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from bench.common import header, write_json

log = logging.getLogger("bench.indexing")


def random_arch_backbone(arch: str):
    """An open_clip architecture with random weights (no download), wrapped as a Backbone."""
    import open_clip

    from engine.backbones import BackboneConfig
    from engine.loading import Backbone

    torch.manual_seed(0)
    clip = open_clip.create_model(arch, pretrained=None)
    config = BackboneConfig(name=f"random-{arch}", clip_model=arch, description="random weights (bench only)")
    preprocess = dict(getattr(clip.visual, "preprocess_cfg", {}) or {})
    return Backbone(config, clip.eval().requires_grad_(False), open_clip.get_model_config(arch), preprocess)


def world_arch_backbone():
    """The demo world's CLIP architecture (world/train.py) with seeded random weights: a stand-in while
    the trained `world` backbone does not exist yet (timings do not depend on weights)."""
    from engine.loading import Backbone
    from engine.tiny import build_clip
    from world.train import PREPROCESS, WORLD_CLIP_CFG, world_backbone_config

    config = world_backbone_config("world-arch-random")
    return Backbone(config, build_clip(WORLD_CLIP_CFG, 0).eval().requires_grad_(False), dict(WORLD_CLIP_CFG),
                    dict(PREPROCESS))


def load(identifier: str):
    if identifier.startswith("arch:"):
        return random_arch_backbone(identifier[5:])
    if identifier == "world-arch":
        return world_arch_backbone()
    from engine.loading import load_backbone

    return load_backbone(identifier, device="cpu", with_diffusion=False)


def demo_catalog(out: Path, products: int, photos: int, size: int) -> Path:
    from world.catalog import main as write_world

    if write_world(["--out", str(out), "--products", str(products), "--photos", str(photos),
                    "--size", str(size), "--heldout", "8"]) != 0:
        raise SystemExit("world.catalog failed")
    return out / "catalog.jsonl"


def subset(catalog: Path, n: int, out: Path) -> Path:
    lines = catalog.read_text().splitlines()[:n]
    out.write_text("\n".join(lines) + "\n")
    return out


def decoded(catalog: Path, n: int, size: int) -> tuple[np.ndarray, list[str]]:
    from indexer.decode import ImageLimits, decode_image, fit

    rows = [json.loads(line) for line in catalog.read_text().splitlines()[:n]]
    pixels = [fit(decode_image((catalog.parent / r["image"]).read_bytes(), ImageLimits()), size) for r in rows]
    return np.stack(pixels), [r["title"] for r in rows]


def timed(fn: Callable[[], Any]) -> tuple[float, float]:
    w, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w, time.process_time() - c


def bench_encoders(runners: dict[str, Callable[[np.ndarray], Any]], batches: list[np.ndarray]) -> dict[str, Any]:
    """Alternate the runners batch by batch (after one warm-up batch each); per runner: median batch time."""
    for run in runners.values():
        run(batches[0])
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in runners}
    for batch in batches:
        for name, run in runners.items():
            times[name].append(timed(lambda: run(batch)))
    size = len(batches[0])
    out = {}
    for name, samples in times.items():
        wall = statistics.median(s[0] for s in samples)
        cpu = statistics.median(s[1] for s in samples)
        out[name] = {"batches": len(samples), "batch_s_median": round(wall, 4), "img_per_s": round(size / wall, 2),
                     "cpu_s_per_img": round(cpu / size, 5), "batch_s_all": [round(s[0], 4) for s in samples]}
    return out


def bench_model(identifier: str, args, catalog_for: Callable[[int], Path], work: Path) -> dict[str, Any]:
    from engine.onnx import ExportSettings, OnnxImageEncoder, check_image_variant, export_backbone
    from indexer.embed import OnnxEmbedder, model_key, normalize, preprocess_stats

    large = identifier.startswith("arch:") and "L-14" in identifier
    n_batches = args.large_batches if large else args.batches
    result: dict[str, Any] = {"model": identifier}
    backbone = load(identifier)
    size = backbone.image_size
    catalog = catalog_for(size)
    result.update({"backbone_id": backbone.id, "image_size": size, "embed_dim": backbone.embed_dim,
                   "catalog_px": json.loads(catalog.with_name("world.json").read_text())["image_size"],
                   "params_visual_m": round(sum(p.numel() for p in backbone.clip.visual.parameters()) / 1e6, 1)})
    t0 = time.perf_counter()
    export = export_backbone(backbone, args.onnx_cache, ExportSettings(graphs=("image",)))
    result["export"] = {"seconds": round(time.perf_counter() - t0, 1), "cache_hit": export.cache_hit,
                        "parity_rel_error": export.manifest["graphs"]["image"]["parity_rel_error"]}
    need = args.batch * (n_batches + 1)
    pixels, titles = decoded(catalog, need, size)
    mean, std = preprocess_stats(backbone)
    norm = normalize(pixels, mean, std)
    batches = [norm[i:i + args.batch] for i in range(0, len(norm), args.batch)][: n_batches + 1]
    # the indexer's session settings (no spin-waiting); the ORT default (spinning) is timed as well
    ort32 = OnnxImageEncoder(export.path("image"), ["CPUExecutionProvider"], args.threads, spinning=False)
    ort32_spin = OnnxImageEncoder(export.path("image"), ["CPUExecutionProvider"], args.threads, spinning=True)

    def run_eager(x: np.ndarray) -> None:
        with torch.no_grad():
            torch.nn.functional.normalize(backbone.clip.encode_image(torch.from_numpy(x)), dim=-1)

    runners: dict[str, Callable] = {"eager": run_eager, "ort_fp32": ort32.encode}
    if not large:
        runners["ort_fp32_spinning"] = ort32_spin.encode
    if args.int8:
        check = check_image_variant(export, "int8", norm[: args.eval_images] if len(norm) >= 11 else norm,
                                    threads=args.threads)
        result["int8_check"] = {"recall_at_10": check.recall, "accepted": check.accepted, "gallery": check.gallery,
                                "queries": check.queries, "reason": check.reason}
        if check.accepted:
            runners["ort_int8"] = OnnxImageEncoder(export.path("image", "int8"), ["CPUExecutionProvider"],
                                                   args.threads, spinning=False).encode
    enc = bench_encoders(runners, batches[1:] if len(batches) > 1 else batches)
    enc["ratio_ort_fp32_vs_eager"] = round(enc["eager"]["batch_s_median"] / enc["ort_fp32"]["batch_s_median"], 3)
    enc["ratio_ort_fp32_vs_eager_cpu"] = round(enc["eager"]["cpu_s_per_img"] / enc["ort_fp32"]["cpu_s_per_img"], 3)
    if "ort_fp32_spinning" in enc:
        enc["ratio_ort_fp32_spinning_vs_eager"] = round(
            enc["eager"]["batch_s_median"] / enc["ort_fp32_spinning"]["batch_s_median"], 3)
    if "ort_int8" in enc:
        enc["ratio_ort_int8_vs_eager"] = round(enc["eager"]["batch_s_median"] / enc["ort_int8"]["batch_s_median"], 3)
    enc["target_ratio_ort_fp32"] = 1.4
    result["encoder"] = {"batch": args.batch, "threads": args.threads, **enc}
    # pipeline vs bare encoder, same embedder, same images
    n_e2e = args.large_e2e_images if large else args.e2e_images
    embedder = OnnxEmbedder(ort32, model_key(backbone, "bench", "fp32"), mean, std)
    bare_pixels = pixels[:n_e2e] if len(pixels) >= n_e2e else decoded(catalog, n_e2e, size)[0]
    n_e2e = len(bare_pixels)

    def bare() -> float:
        w = time.perf_counter()
        for i in range(0, n_e2e, args.batch):
            embedder.encode(bare_pixels[i:i + args.batch])
        return n_e2e / (time.perf_counter() - w)

    result["pipeline"] = pipeline_ratio(identifier, args, catalog, work, embedder, n_e2e, bare, 1 if large else 3)
    return result


def pipeline_ratio(identifier: str, args, catalog: Path, work: Path, embedder, n: int,
                   bare: Callable[[], float], passes: int) -> dict[str, Any]:
    """Bare encoder and pipeline alternated (bare, pipeline, bare, ...); ratio of the medians."""
    from engine.store import StoreConfig, open_store
    from indexer.config import IndexerConfig
    from indexer.pipeline import ingest

    safe = identifier.replace(":", "-").replace("/", "_")
    cat = subset(catalog, n, catalog.parent / f"bench-{safe}.jsonl")
    cfg = IndexerConfig(catalog=cat, backbone=identifier, store=StoreConfig(path=str(work / f"store-{safe}")),
                        batch_size=args.batch, workers=args.workers, progress_bar=False,
                        rejects_path=work / f"rejects-{safe}.jsonl", threads=args.threads)
    bare_rates, runs = [bare()], []
    with open_store(cfg.store) as store:
        for i in range(passes):
            store.create_collection(f"bench-{i}", dim=embedder.dim)  # fresh: nothing is skipped as unchanged
            w, c = time.perf_counter(), time.process_time()
            report = ingest(cfg, store, f"bench-{i}", embedder)
            runs.append((report, time.perf_counter() - w, time.process_time() - c))
            bare_rates.append(bare())
    rates = [r.accepted / wall for r, wall, _ in runs]
    report, wall, cpu = runs[rates.index(statistics.median_low(rates))]
    rate, bare_rate = statistics.median(rates), statistics.median(bare_rates)
    return {"images": report.accepted, "rejected": report.rejected, "workers": args.workers, "passes": passes,
            "rate_img_per_s": round(rate, 2), "rates_all": [round(r, 2) for r in rates],
            "cpu_s_per_img": round(cpu / max(report.accepted, 1), 5),
            "bare_encoder_img_per_s": round(bare_rate, 2), "bare_all": [round(r, 2) for r in bare_rates],
            "ratio_pipeline_vs_bare": round(rate / bare_rate, 3), "target_ratio": 0.85,
            "stage_seconds": {k: round(v, 3) for k, v in report.stage_seconds.items()},
            "wait_decode_seconds": round(report.wait_decode_seconds, 3)}


def machine_extra() -> dict[str, Any]:
    """What bench.common.machine() does not say and this benchmark's figures depend on: CPU model, onnxruntime."""
    import onnxruntime

    cpu = ""
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "onnxruntime": onnxruntime.__version__}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="coinage bench indexing", description=__doc__.splitlines()[0])
    ap.add_argument("--backbone", action="append", default=[],
                    help="backbone id or directory (repeat); 'world' is skipped with a note when not trained yet")
    ap.add_argument("--arch", action="append", default=[], help="open_clip architecture with random weights (repeat)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2, help="torch and onnxruntime intra-op threads")
    ap.add_argument("--workers", type=int, default=2, help="pipeline decoder threads")
    ap.add_argument("--batches", type=int, default=6, help="timed batches per runner")
    ap.add_argument("--large-batches", type=int, default=2, help="timed batches per runner for ViT-L models")
    ap.add_argument("--e2e-images", type=int, default=192, help="catalog rows through the pipeline")
    ap.add_argument("--large-e2e-images", type=int, default=32, help="pipeline rows for ViT-L models")
    ap.add_argument("--eval-images", type=int, default=96, help="images for the int8 acceptance check")
    ap.add_argument("--int8", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--image-px", type=int, default=256, help="demo catalog image side for 224-px models")
    ap.add_argument("--products", type=int, default=40, help="demo catalog products (x 6 photos)")
    ap.add_argument("--onnx-cache", default="var/onnx")
    ap.add_argument("--note", default="", help="free text stored in the results (e.g. machine load)")
    ap.add_argument("--ray-workers", type=int, nargs="*", default=[],
                    help="the Ray Data bulk path with these worker counts against the in-process path "
                         "(bench/indexing_ray.py); alone, it skips the model benchmarks")
    ap.add_argument("--ray-rows", type=int, nargs="+", default=[2000], help="generated catalog sizes for --ray-workers")
    ap.add_argument("--in-process-rows", type=int, nargs="*", default=[],
                    help="more generated catalog sizes for --ray-workers, run on the in-process path only (sizes the "
                         "Ray path would take longer than the machine allows)")
    ap.add_argument("--no-in-process", dest="in_process", action="store_false",
                    help="with --ray-workers: skip the in-process run beside each --ray-rows size (a long Ray run "
                         "whose in-process baseline was measured before)")
    ap.add_argument("--ray-backbone", default="tiny-random", help="backbone of the --ray-workers runs")
    ap.add_argument("--ray-store", default="embedded", choices=["embedded", "server-local"],
                    help="store of the --ray-workers runs: the embedded one, or the server backend's client code "
                         "(qdrant-client's upload_points) on qdrant-client's in-process engine, as no Qdrant server "
                         "runs here")
    ap.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"], help="embed device of the Ray runs")
    ap.add_argument("--out", type=Path, help="results file (default bench/results/indexing.json, with only "
                                             "--ray-workers bench/results/indexing-ray.json)")
    args = ap.parse_args(argv)
    only_ray = bool(args.ray_workers) and not (args.backbone or args.arch)
    if args.out is None:
        args.out = Path("bench/results/indexing-ray.json" if only_ray else "bench/results/indexing.json")
    args.only_ray = only_ray
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    models = [] if args.only_ray else (args.backbone or ["world", "tiny-random"]) + [f"arch:{a}" for a in args.arch]
    if "world" in models and not _world_trained():
        log.warning("the world backbone is not trained yet; benchmarking its architecture with random weights")
        models[models.index("world")] = "world-arch"
    doc: dict[str, Any] = {
        **header("indexing", sys.argv[1:] if argv is None else argv, **machine_extra()),
        "load_average_start": os.getloadavg(), "note": args.note,
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "results": [],
    }
    with tempfile.TemporaryDirectory(prefix="bench-indexing-") as tmp:
        work = Path(tmp)
        catalogs: dict[int, Path] = {}

        def catalog_for(model_px: int) -> Path:
            """The demo catalog at its native 64 px for small models, at --image-px for 224-px models."""
            px = 64 if model_px <= 64 else args.image_px
            if px not in catalogs:
                catalogs[px] = demo_catalog(work / f"world-{px}", args.products, 6, px)
            return catalogs[px]

        for identifier in models:
            log.info("benchmarking %s", identifier)
            try:
                doc["results"].append(bench_model(identifier, args, catalog_for, work))
            except Exception as e:  # noqa: BLE001 - a model that fails (world not trained yet) is recorded
                log.warning("skipped %s: %s", identifier, e)
                doc["results"].append({"model": identifier, "skipped": f"{type(e).__name__}: {e}"})
            doc["load_average_end"] = os.getloadavg()
            write_json(args.out, doc, indent=1)
        if args.ray_workers:
            from bench.indexing_ray import bench_ray

            def save(ray_result: dict[str, Any]) -> None:
                doc.update(ray=ray_result, load_average_end=os.getloadavg())
                write_json(args.out, doc, indent=1)

            bench_ray(args, work, demo_catalog(work / "world-ray", args.products, 6, 64), save)
    print(json.dumps([{k: r.get(k) for k in ("model", "skipped")} | _headline(r) for r in doc["results"]], indent=1))
    return 0


def _world_trained() -> bool:
    from engine.backbones import MANIFEST, WORLD_DIR

    return (WORLD_DIR / MANIFEST).is_file()


def _headline(result: dict[str, Any]) -> dict[str, Any]:
    enc, pipe = result.get("encoder", {}), result.get("pipeline", {})
    return {"ort_fp32_vs_eager": enc.get("ratio_ort_fp32_vs_eager"),
            "ort_int8_vs_eager": enc.get("ratio_ort_int8_vs_eager"),
            "int8_recall": result.get("int8_check", {}).get("recall_at_10"),
            "pipeline_vs_bare": pipe.get("ratio_pipeline_vs_bare")}


if __name__ == "__main__":
    raise SystemExit(main())
