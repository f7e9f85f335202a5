"""Real size: every deployment code path at Stable Diffusion 1.5 / CLIP ViT-L-14 shapes, timed, without weights.

    coinage bench realsize [--backbone DIR] [--device cpu|cuda] [--threads 2]   # -> bench/results/realsize.json

Runs on the sd15-shaped random backbone (`coinage backbone random sd15 DIR`; built into
var/bench/sd15-random when --backbone is not given: about 5 GB fp32, never committed), loaded through
the normal loader. Timings do not depend on the weights, outputs are meaningless. Stages:

- load: the full backbone (a worker) and the CLIP-only one (a web process), seconds.
- image encoder (indexing): ONNX export of the image tower (seconds, parity checked by the exporter),
  images/s for ONNX Runtime fp32 and int8 (with the CUDA provider: fp32 and fp16) against PyTorch eager
  on the device in the same run; then a few images indexed into an embedded store.
- text encoding (queries): ONNX text tower latency per prompt against PyTorch eager.
- search: QueryService.search end to end on those images (ONNX text tower).
- training: steps of ti+ce+proj (trainer.loop.TokenTrainer, batch 1 at 512 px: 64x64 latents), seconds
  and peak memory (CPU: the process's peak RSS above the RSS before, /proc; GPU: torch's peak allocation).
- generation: one UNet pass with classifier-free guidance (batch 2, 64x64 latents) and one VAE decode at
  512 px, measured; one preview at the backbone's default steps = steps x pass + decode (extrapolated,
  and checked against a measured 2-step generation); GAIR's grid (5 weights + the context image, one
  image each): measured end to end at --gair-steps (1 on CPU), extrapolated to the default steps with the
  measured per-image pass (CPU cost is linear in the batch; on a GPU run it is measured at full steps).
- memory: resident set size of a fresh web process (CLIP only, ONNX text tower) and of a fresh worker
  (full backbone), each in its own subprocess.

`--device cuda` runs the same stages on the GPU in fp16 (ONNX Runtime on its CUDA provider when
onnxruntime-gpu is installed, else on the CPU), at full steps for the preview and GAIR; it is meant to be
the first thing a GPU host runs (target: under 5 minutes). Not run here: these machines have no GPU.
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch

from bench.common import write_result

ROOT = Path(__file__).resolve().parent.parent

DEFAULT_DIR = ROOT / "var" / "bench" / "sd15-random"
PROMPT = "a photo of a red striped dress on a beach"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn: Callable[[], Any], repeats: int, device: torch.device, warmup: int = 1) -> list[float]:
    for _ in range(warmup):
        fn()
    sync(device)
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        sync(device)
        out.append(time.perf_counter() - t)
    return out


def med(xs: list[float]) -> float:
    return round(statistics.median(xs), 4)


def proc_status(key: str) -> int:
    """A /proc/self/status memory figure (VmRSS, VmHWM) in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {key} in /proc/self/status (Linux only)")


def reset_peak_rss() -> None:
    """Reset VmHWM to the current RSS (Linux: writing 5 to /proc/self/clear_refs)."""
    Path("/proc/self/clear_refs").write_text("5")


def gib(n: float) -> float:
    return round(n / 2 ** 30, 3)


def ensure_backbone(path: str | None) -> Path:
    if path:
        return Path(path)
    if not (DEFAULT_DIR / "coinage_backbone.json").is_file():
        from engine.loading import save_backbone
        from engine.random_backbone import build_random_backbone

        log(f"building the sd15-shaped random backbone into {DEFAULT_DIR}")
        save_backbone(build_random_backbone("sd15"), DEFAULT_DIR)
    return DEFAULT_DIR


# --- stages ----------------------------------------------------------------------------------------------------


def stage_image_encoder(bb, args, cache: Path, device: torch.device) -> tuple[dict, Any]:
    from engine.images import ImageEncoder
    from engine.onnx import ExportSettings, OnnxImageEncoder, export_backbone
    from engine.onnx.quantize import convert_fp16, quantize_int8
    from engine.onnx.runtime import select_providers

    t = time.perf_counter()
    export = export_backbone(bb, cache, ExportSettings(graphs=("image",)))
    export_s = time.perf_counter() - t
    providers = select_providers("auto")
    g = torch.Generator().manual_seed(0)
    pixels = torch.rand(args.batch, 3, bb.image_size, bb.image_size, generator=g)
    encoder = ImageEncoder(bb)
    norm = encoder.normalize(pixels)
    with torch.no_grad():
        eager = timed(lambda: bb.clip.encode_image(norm.to(bb.device, bb.dtype)), args.repeats, device)
    out: dict[str, Any] = {
        "onnx_export_s": round(export_s, 1), "export_cache_hit": export.cache_hit,
        "parity_max_rel_error": export.manifest["graphs"]["image"].get("parity_rel_error"),
        "batch": args.batch, "providers": providers,
        "torch_eager": {"images_per_s": round(args.batch / med(eager), 2), "batch_s": [round(x, 3) for x in eager],
                        "dtype": str(bb.dtype)},
    }
    variants = {"fp32": export.path("image")}
    if providers[0] == "CUDAExecutionProvider":
        variants["fp16"] = convert_fp16(export)  # the GPU indexer's variant; int8 (dynamic) is a CPU format
    else:
        t = time.perf_counter()
        variants["int8"] = quantize_int8(export)
        out["int8_quantize_s"] = round(time.perf_counter() - t, 1)
    pix = norm.numpy()
    onnx_fp32 = None
    for name, path in variants.items():
        model = OnnxImageEncoder(path, providers, threads=args.threads if device.type == "cpu" else None,
                                 spinning=False)
        times = timed(lambda: model.encode(pix), args.repeats, device)
        out[f"onnx_{name}"] = {"images_per_s": round(args.batch / med(times), 2),
                               "batch_s": [round(x, 3) for x in times],
                               "file_mb": round(path.stat().st_size / 1e6, 1)}
        if name == "fp32":
            onnx_fp32 = model
        log(f"  image encoder {name}: {out[f'onnx_{name}']}")
    base = out["torch_eager"]["images_per_s"]
    for name in variants:
        out[f"ratio_onnx_{name}_vs_eager"] = round(out[f"onnx_{name}"]["images_per_s"] / base, 2)
    return out, onnx_fp32


def stage_text(bb, args, cache: Path, device: torch.device) -> tuple[dict, Any]:
    from engine.onnx import ExportSettings, OnnxTextTower, export_backbone
    from engine.onnx.runtime import select_providers
    from engine.text import TextEncoder

    t = time.perf_counter()
    export = export_backbone(bb, cache, ExportSettings(graphs=("text_embeds",)))
    export_s = time.perf_counter() - t
    eager = TextEncoder(bb)
    tower = OnnxTextTower(export.path("text_embeds"), select_providers("auto"),
                          threads=args.threads if device.type == "cpu" else None)
    onnx = TextEncoder(bb)
    onnx.tower = tower
    with torch.no_grad():
        t_eager = timed(lambda: eager.encode([PROMPT]), args.repeats * 3, device)
        t_onnx = timed(lambda: onnx.encode([PROMPT]), args.repeats * 3, device)
    out = {"onnx_export_s": round(export_s, 1), "onnx_ms_p50": round(med(t_onnx) * 1000, 1),
           "torch_ms_p50": round(med(t_eager) * 1000, 1), "ratio_torch_vs_onnx": round(med(t_eager) / med(t_onnx), 2)}
    return out, tower


def stage_search(bb, args, onnx_images, tower, workdir: Path) -> dict:
    from engine.images import ImageEncoder
    from engine.query import QueryConfig, QueryService, SearchRequest
    from engine.store import Point, StoreConfig, open_store, point_id
    from engine.tokens import TokenSet

    store = open_store(StoreConfig(path=str(workdir / "store")))
    store.create_collection("products", dim=bb.embed_dim, payload_indexes={"category": "keyword"})
    g = torch.Generator().manual_seed(1)
    pixels = ImageEncoder(bb).normalize(torch.rand(args.index_images, 3, bb.image_size, bb.image_size, generator=g))
    t = time.perf_counter()
    vectors = onnx_images.encode(pixels.numpy())
    store.upsert("products", [Point(point_id(f"p{i}"), v, {"sku": f"p{i}", "category": "dress"})
                              for i, v in enumerate(vectors)])
    index_s = time.perf_counter() - t
    service = QueryService(bb, store, TokenSet([]), None, QueryConfig(text_runtime="onnx", gair=False),
                           text_tower=tower)
    lat = []
    for i in range(args.repeats * 3):
        t = time.perf_counter()
        response = service.search(SearchRequest(f"{PROMPT} {i}", limit=5))  # a new prompt: no text cache hit
        lat.append(time.perf_counter() - t)
    store.close()
    return {"images_indexed": args.index_images, "index_s": round(index_s, 2), "results": len(response.results),
            "search_ms_p50": round(med(lat) * 1000, 1), "search_ms_max": round(max(lat) * 1000, 1),
            "note": "QueryService.search, ONNX text tower, embedded store; a new prompt per call"}


def stage_training(bb, args, device: torch.device) -> dict:
    from bench.training import Ours

    targs = argparse.Namespace(images=args.train_images, num_vectors=2, batch_size=1)
    t = time.perf_counter()
    ours = Ours(bb, targs)  # encodes the training images to latents (VAE at 512 px) and their CLIP features
    setup_s = time.perf_counter() - t
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        reset_peak_rss()
        base = proc_status("VmRSS")
    steps = timed(ours.step, args.train_steps, device, warmup=1 if device.type == "cuda" else 0)
    peak = (torch.cuda.max_memory_allocated() if device.type == "cuda" else proc_status("VmHWM")) - base
    return {"method": "ti+ce+proj", "batch_size": 1, "latents": "64x64 (512 px)", "setup_s": round(setup_s, 1),
            "step_s": [round(x, 2) for x in steps], "step_s_median": med(steps),
            "peak_memory_above_loaded_gib": gib(peak),
            "peak_memory_kind": "torch.cuda.max_memory_allocated" if device.type == "cuda" else "VmHWM - VmRSS before"}


def stage_generation(bb, args, device: torch.device) -> dict:
    from engine.diffusion import SamplerConfig, decode, generate, latent_shape
    from engine.text import TextEncoder

    enc = TextEncoder(bb)
    with torch.no_grad():
        cond, uncond = enc.encode([PROMPT]).seq, enc.encode([""]).seq
    shape = latent_shape(bb)
    latents = torch.randn(2, *shape).to(bb.device, bb.dtype)
    context = torch.cat([uncond, cond]).to(bb.device, bb.dtype)
    t = torch.tensor([500, 500], device=bb.device)
    with torch.no_grad():
        unet = timed(lambda: bb.unet(latents, t, encoder_hidden_states=context), args.unet_repeats, device)
        dec = timed(lambda: decode(bb, latents[:1]), 1, device, warmup=0)
    steps = bb.config.steps
    unet_s, dec_s = med(unet), med(dec)
    measured_steps = min(2, steps) if device.type == "cpu" else steps
    cfg = SamplerConfig(steps=measured_steps, guidance_scale=bb.config.guidance_scale)
    gen = timed(lambda: generate(bb, cond, uncond, seed=0, config=cfg), 1, device, warmup=0)
    return {"latents": list(shape), "unet_cfg_pass_s": [round(x, 3) for x in unet], "unet_cfg_pass_s_median": unet_s,
            "vae_decode_512_s": dec_s, "default_steps": steps,
            f"generate_{measured_steps}_steps_measured_s": round(gen[0], 2),
            f"generate_{measured_steps}_steps_extrapolated_s": round(measured_steps * unet_s + dec_s, 2),
            "preview_default_steps_s": round(steps * unet_s + dec_s, 1) if measured_steps < steps else round(gen[0], 2),
            "preview_is": "extrapolated: steps x CFG pass + decode" if measured_steps < steps else "measured"}


def stage_gair(bb, args, device: torch.device, unet_s: float, workdir: Path) -> dict:
    from engine.query import QueryConfig, QueryService, SearchRequest
    from engine.store import StoreConfig, open_store
    from engine.tokens import CustomToken, TokenMeta, TokenSet

    gen = torch.Generator().manual_seed(0)
    meta = TokenMeta(parent="dress", backbone_id=bb.id, attributes=["red", "old", "dark"])
    token = CustomToken("<aurora>", torch.randn(2, bb.text_width, generator=gen) * 0.02, meta)
    steps = args.gair_steps or bb.config.steps
    config = QueryConfig(text_runtime="torch", steps=steps)
    store = open_store(StoreConfig(path=str(workdir / "gair-store")))
    features = {"<aurora>": torch.nn.functional.normalize(torch.randn(4, bb.embed_dim, generator=gen), dim=-1)}
    service = QueryService(bb, store, TokenSet([token]), features, config)
    images = len(config.weights) + 1  # the grid and the context image, images_per_weight=1
    t = time.perf_counter()
    outcome = service.choose_weight(SearchRequest("<aurora> dress on a beach"))
    sync(device)
    measured = time.perf_counter() - t
    store.close()
    full = bb.config.steps
    out = {"weights": list(config.weights), "images": images, "measured_steps": steps,
           "measured_s": round(measured, 1), "timings_ms": outcome.timings_ms, "w_star": outcome.w_star}
    if steps < full:
        out["default_steps"] = full
        out["extrapolated_default_steps_s"] = round(measured + (full - steps) * images * unet_s, 1)
        out["extrapolation"] = ("measured + (default - measured steps) x images x the measured CFG pass of one image "
                                "(CPU cost is linear in the batch)")
    return out


# --- memory of fresh processes -----------------------------------------------------------------------------------


def probe(kind: str, backbone: str, device: str, cache: str) -> None:
    """In a fresh process: load what a web process (CLIP only, ONNX text tower) or a worker (full) holds."""
    from engine.loading import load_backbone
    from engine.text import TextEncoder

    before = proc_status("VmRSS")
    bb = load_backbone(backbone, device=device, dtype="fp16" if device == "cuda" else "auto",
                       with_diffusion=kind == "worker")
    enc = TextEncoder(bb)
    if kind == "web":
        from engine.query.text_runtime import onnx_text_tower

        enc.tower = onnx_text_tower(bb, "onnx", cache)
    modules = [m for m in (bb.clip, bb.unet, bb.vae) if m is not None]
    with torch.no_grad():
        enc.encode([PROMPT])
        for m in modules:  # read every weight once: lazily mapped weights count as they will once serving
            for p in m.parameters():
                p.sum()
    gpu = torch.cuda.max_memory_allocated() if device == "cuda" else None
    weights = sum(p.numel() * p.element_size() for m in modules for p in m.parameters())
    print(json.dumps({"rss_gib": gib(proc_status("VmRSS")), "peak_rss_gib": gib(proc_status("VmHWM")),
                      "python_and_torch_gib": gib(before), "weights_gib": gib(weights),
                      "gpu_allocated_gib": gib(gpu) if gpu else None}))


def stage_memory(backbone: Path, device: torch.device, cache: Path) -> dict:
    out = {}
    for kind in ("web", "worker"):
        cmd = [sys.executable, "-m", "bench.realsize", "--probe", kind, "--backbone", str(backbone), "--device", device.type,
               "--onnx-cache", str(cache)]
        done = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT)
        out[kind] = json.loads(done.stdout.strip().splitlines()[-1])
        log(f"  memory {kind}: {out[kind]}")
    out["note"] = ("web: CLIP only (with_diffusion=False) + ONNX text tower; worker: the full backbone; after one text "
                   "encode and one read of every weight")
    return out


# --- main --------------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbone", help=f"backbone directory (default: built into {DEFAULT_DIR.relative_to(ROOT)})")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--threads", type=int, default=2, help="CPU threads (torch and ONNX Runtime)")
    p.add_argument("--batch", type=int, default=4, help="images per encoder batch")
    p.add_argument("--repeats", type=int, default=3, help="timed batches / calls per measurement")
    p.add_argument("--unet-repeats", type=int, default=2, help="timed UNet passes")
    p.add_argument("--index-images", type=int, default=8)
    p.add_argument("--train-images", type=int, default=2, help="positive (and as many negative) training images")
    p.add_argument("--train-steps", type=int, default=2)
    p.add_argument("--gair-steps", type=int, default=None,
                   help="sampler steps of the measured GAIR run (default: 1 on CPU, the backbone's on GPU)")
    p.add_argument("--onnx-cache", default=None, help="ONNX export cache (default: a temporary directory)")
    p.add_argument("--skip", default="", help="comma list of stages to skip: image,text,search,train,gen,gair,memory")
    p.add_argument("--out", default=None, help="JSON result file (default bench/results/realsize.json, with "
                                                 "--device cuda realsize-cuda.json)")
    p.add_argument("--probe", choices=["web", "worker"], help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.gair_steps is None and args.device == "cpu":
        args.gair_steps = 1
    return args


def _out(args: argparse.Namespace) -> Path:
    return Path(args.out) if args.out else ROOT / "bench" / "results" / (
        "realsize-cuda.json" if args.device == "cuda" else "realsize.json")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.probe:
        probe(args.probe, args.backbone, args.device, args.onnx_cache)
        return 0
    from engine.device import select_device
    from engine.loading import load_backbone

    device = select_device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    dtype = "fp16" if device.type == "cuda" else "fp32"
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    started = time.perf_counter()
    backbone_dir = ensure_backbone(args.backbone)
    workdir = Path(tempfile.mkdtemp(prefix="coinage-realsize-"))
    cache = Path(args.onnx_cache) if args.onnx_cache else workdir / "onnx"
    figures: dict[str, Any] = {"device": device.type, "dtype": dtype, "backbone_dir": backbone_dir.name}
    t = time.perf_counter()
    bb = load_backbone(str(backbone_dir), device=device.type, dtype=dtype)
    figures["backbone"] = bb.id
    figures["load_full_s"] = round(time.perf_counter() - t, 1)
    figures["parameters_millions"] = {name: round(sum(p.numel() for p in m.parameters()) / 1e6, 1)
                                      for name, m in (("clip", bb.clip), ("unet", bb.unet), ("vae", bb.vae))}
    log(f"loaded {bb.id} in {figures['load_full_s']} s: {figures['parameters_millions']}")

    def stage(name: str, key: str, fn: Callable[[], Any]) -> Any:
        if key in skip:
            figures[name] = "skipped (--skip)"
            return None
        log(f"{name} ...")
        t = time.perf_counter()
        value = fn()
        result = value[0] if isinstance(value, tuple) else value
        result["stage_s"] = round(time.perf_counter() - t, 1)
        figures[name] = result
        log(f"{name}: {result}")
        write_result("realsize", {**figures, "partial": True}, list(sys.argv[1:] if argv is None else argv),
                     _out(args))
        return value

    try:
        images = stage("image_encoder", "image", lambda: stage_image_encoder(bb, args, cache, device))
        text = stage("text_encoding", "text", lambda: stage_text(bb, args, cache, device))
        if images and text:
            stage("search", "search", lambda: stage_search(bb, args, images[1], text[1], workdir))
        stage("training_step", "train", lambda: stage_training(bb, args, device))
        gen = stage("generation", "gen", lambda: stage_generation(bb, args, device))
        unet_s = gen["unet_cfg_pass_s_median"] if gen else float("nan")
        stage("gair", "gair", lambda: stage_gair(bb, args, device, unet_s, workdir))
        del bb
        stage("process_memory", "memory", lambda: stage_memory(backbone_dir, device, cache))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    figures["total_s"] = round(time.perf_counter() - started, 1)
    path = write_result("realsize", figures, list(sys.argv[1:] if argv is None else argv), _out(args))
    log(f"wrote {path} ({figures['total_s']} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
