"""`coinage backbone ...`: list, inspect and save backbones."""
from __future__ import annotations

import argparse
import json
import sys

from engine.backbones import DEFAULT_BACKBONE, get_backbone_config, list_backbones


def register(sub) -> list[str]:
    p = sub.add_parser("backbone", help="list, inspect and save backbones")
    bsub = p.add_subparsers(dest="action", metavar="ACTION")
    bsub.required = True
    ls = bsub.add_parser("list", help="registered backbone names")
    ls.set_defaults(func=_list)
    info = bsub.add_parser("info", help="load a backbone and print its dimensions")
    _backbone_args(info)
    info.set_defaults(func=_info)
    save = bsub.add_parser("save", help="write a backbone to a local directory (the layout `--backbone DIR` loads)")
    _backbone_args(save)
    save.add_argument("out", help="output directory")
    save.add_argument("--dtype", choices=["fp32", "fp16"], default="fp32")
    save.set_defaults(func=_save)
    rnd = bsub.add_parser("random",
                          help="write an architecture-true backbone of seeded random weights (no download)",
                          description="open_clip ViT-L-14-quickgelu + SD 1.5 UNet/VAE/scheduler (sd15) or ViT-H-14 + "
                                      "SD 2.1 (sd21), built from configs shipped in the package, with seeded random "
                                      "weights, in the layout `--backbone DIR` loads. Full size is about 5.5 GB (sd15, "
                                      "fp32); the options build reduced variants of the same architecture.")
    rnd.add_argument("name", choices=["sd15", "sd21"])
    rnd.add_argument("out", help="output directory")
    rnd.add_argument("--seed", type=int, default=0)
    rnd.add_argument("--clip-layers", type=int, help="transformer layers per CLIP tower (default: the real depth)")
    rnd.add_argument("--unet-layers-per-block", type=int, help="layers per UNet/VAE block (default: 2, as SD)")
    rnd.add_argument("--width-divisor", type=int, default=1, help="divide every width by this (default 1: real)")
    rnd.add_argument("--dtype", choices=["fp32", "fp16"], default="fp32")
    rnd.set_defaults(func=_random)
    return ["backbone"]


def _backbone_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backbone", default=DEFAULT_BACKBONE,
                   help=f"registry name, local directory or hf-hub:org/repo (default {DEFAULT_BACKBONE})")
    p.add_argument("--diffusion-dir", help="local diffusers directory for the diffusion stack (unet/, vae/, scheduler/)")
    p.add_argument("--clip-weights", help="local open_clip weights file instead of the pretrained tag")
    p.add_argument("--device", default="auto")


def _load(args):
    from engine.loading import load_backbone

    return load_backbone(args.backbone, device=args.device, diffusion_dir=args.diffusion_dir,
                         clip_weights=args.clip_weights)


def _list(_args) -> int:
    for name in list_backbones():
        mark = " (default)" if name == DEFAULT_BACKBONE else ""
        print(f"{name:12s} {get_backbone_config(name).description}{mark}")
    return 0


def _info(args) -> int:
    bb = _load(args)
    print(json.dumps({"id": bb.id, "embed_dim": bb.embed_dim, "text_width": bb.text_width,
                      "context_length": bb.context_length, "image_size": bb.image_size,
                      "diffusion": bb.has_diffusion, "cond_layer": bb.config.cond_layer, "pad": bb.config.pad,
                      "device": str(bb.device), "dtype": str(bb.dtype)}, indent=2))
    return 0


def _save(args) -> int:
    from engine.loading import save_backbone

    out = save_backbone(_load(args), args.out, dtype=args.dtype)
    print(f"saved backbone to {out}")
    return 0


def _random(args) -> int:
    from engine.loading import save_backbone
    from engine.random_backbone import Shrink, build_random_backbone

    try:
        shrink = Shrink(args.clip_layers, args.unet_layers_per_block, args.width_divisor)
        backbone = build_random_backbone(args.name, seed=args.seed, shrink=shrink)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = save_backbone(backbone, args.out, dtype=args.dtype)
    print(f"saved random backbone {backbone.id} to {out}")
    return 0
