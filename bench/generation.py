"""Preview generation speed on the demo backbone: one 64x64 image with the default sampler.

Baseline in the same run: one UNet forward pass (the unit of work of every sampler step), so
the figure is also reported as "UNet-pass equivalents" and comparable across loaded machines.
Also the per-image cost when the GAIR grid (5 weights) is generated in one batch.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from bench.common import write_result
from engine.backbones import DEFAULT_BACKBONE
from engine.diffusion import SamplerConfig, generate, latent_shape
from engine.loading import load_backbone
from engine.text import TextEncoder


def timed(fn, repeats: int) -> list[float]:
    fn()  # warm-up
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="coinage bench generation", description=__doc__.splitlines()[0])
    p.add_argument("--backbone", default=DEFAULT_BACKBONE)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    bb = load_backbone(args.backbone, device="cpu")
    enc = TextEncoder(bb)
    cfg = SamplerConfig(steps=bb.config.steps, guidance_scale=bb.config.guidance_scale)
    cond = enc.encode(["a photo of a red striped dress on a beach"]).seq
    grid = cond.repeat(5, 1, 1)
    uncond = enc.encode([""]).seq
    latents = torch.randn(2, *latent_shape(bb))
    t = torch.tensor([500, 500])
    with torch.no_grad():
        unet_pass = timed(lambda: bb.unet(latents, t, encoder_hidden_states=torch.cat([uncond, cond])), args.repeats * 4)
    single = timed(lambda: generate(bb, cond, uncond, seed=0, config=cfg), args.repeats)
    batched = timed(lambda: generate(bb, grid, uncond, seed=0, config=cfg), max(2, args.repeats // 2))
    s, b, u = statistics.median(single), statistics.median(batched), statistics.median(unet_pass)
    figures = {
        "backbone": bb.id, "sampler": cfg.sampler, "steps": cfg.steps, "guidance_scale": cfg.guidance_scale,
        "image_size": bb.config.image_size,
        "one_image_s_median": round(s, 4), "one_image_s_all": [round(x, 4) for x in single],
        "target_one_image_s": 1.0, "meets_target": s <= 1.0,
        "unet_cfg_pass_s_median": round(u, 5), "one_image_in_unet_passes": round(s / u, 1),
        "grid5_batched_s_median": round(b, 4), "grid5_per_image_s": round(b / 5, 4),
        "batched_vs_one_by_one_ratio": round((b / 5) / s, 3),
    }
    path = write_result("generation", figures, sys.argv[1:] if argv is None else argv)
    print(path.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
