"""Architecture-true backbones of seeded random weights: real model shapes without downloading weights.

`build_random_backbone("sd15")` is open_clip ViT-L-14-quickgelu plus the Stable Diffusion 1.5 UNet, VAE and
scheduler; `"sd21"` is ViT-H-14 plus SD 2.1's. The CLIP architecture comes from open_clip's own model configs
(its BPE vocabulary ships inside open_clip), the diffusion stack from the diffusers configs the two hub
repositories publish (unet/config.json, vae/config.json, scheduler/scheduler_config.json), copied to
engine/configs/<name>/. Nothing is fetched. Saved with `save_backbone`, the result loads through the normal
loader (`--backbone DIR`), so exporter, indexer, trainer, query service and benchmarks run at real shapes;
outputs are meaningless. `Shrink` gives reduced variants of the same architecture for tests.
"""
from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from .backbones import get_backbone_config
from .loading import Backbone
from .tiny import build_clip, clip_preprocess

CONFIGS = Path(__file__).resolve().parent / "configs"
RANDOM_BACKBONES = ("sd15", "sd21")  # registry backbones with shipped diffusion configs


@dataclass(frozen=True)
class Shrink:
    """Reductions of the real architecture (all None/1: the real sizes)."""

    clip_layers: int | None = None  # transformer layers in each CLIP tower (ViT-L-14: 24 vision, 12 text)
    unet_layers_per_block: int | None = None  # resnet (+ attention) layers per UNet and VAE block (SD: 2)
    width_divisor: int = 1  # divides every width: CLIP towers and embedding, UNet and VAE channels

    def __post_init__(self) -> None:
        for name in ("clip_layers", "unet_layers_per_block"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1 (or None for the real depth), got {value}")
        if self.width_divisor < 1:
            raise ValueError(f"width_divisor must be at least 1, got {self.width_divisor}")

    @property
    def is_full(self) -> bool:
        return self == Shrink()

    def suffix(self) -> str:
        """'' for the real size, else e.g. '-l1-b1-w8' (a shrunk backbone gets its own identity)."""
        parts = [f"l{self.clip_layers}" if self.clip_layers else "",
                 f"b{self.unet_layers_per_block}" if self.unet_layers_per_block else "",
                 f"w{self.width_divisor}" if self.width_divisor != 1 else ""]
        return "".join(f"-{p}" for p in parts if p)


def diffusion_configs(name: str) -> dict[str, dict[str, Any]]:
    """The shipped diffusers configs of `name`: {'unet': ..., 'vae': ..., 'scheduler': ...}."""
    if name not in RANDOM_BACKBONES:
        raise ValueError(f"no shipped architecture for {name!r}; random backbones: {', '.join(RANDOM_BACKBONES)}")
    return {part: json.loads((CONFIGS / name / f"{part}.json").read_text()) for part in ("unet", "vae", "scheduler")}


def _div(value: int, divisor: int, what: str) -> int:
    if value % divisor:
        raise ValueError(f"width_divisor {divisor} does not divide {what} ({value}); "
                         "use a divisor of it, e.g. 2, 4 or 8")
    return value // divisor


def shrink_clip_cfg(cfg: dict[str, Any], shrink: Shrink) -> dict[str, Any]:
    cfg = copy.deepcopy(cfg)
    d = shrink.width_divisor
    cfg["embed_dim"] = _div(cfg["embed_dim"], d, "the CLIP embedding width")
    for tower in ("vision_cfg", "text_cfg"):
        sub = cfg[tower]
        sub["width"] = _div(sub["width"], d, f"the CLIP {tower[:-4]} width")
        if shrink.clip_layers is not None:
            sub["layers"] = shrink.clip_layers
    vision, text = cfg["vision_cfg"], cfg["text_cfg"]
    _div(vision["width"], vision.get("head_width", 64), "the vision width by its head width")
    _div(text["width"], text.get("heads", 8), "the text width by its head count")
    return cfg


def shrink_diffusion_cfgs(configs: dict[str, dict[str, Any]], shrink: Shrink) -> dict[str, dict[str, Any]]:
    configs = copy.deepcopy(configs)
    d = shrink.width_divisor
    unet, vae = configs["unet"], configs["vae"]
    unet["cross_attention_dim"] = _div(unet["cross_attention_dim"], d, "the UNet cross-attention width")
    for part, cfg in (("UNet", unet), ("VAE", vae)):
        cfg["block_out_channels"] = [_div(c, d, f"the {part} channels") for c in cfg["block_out_channels"]]
        cfg["norm_num_groups"] = math.gcd(cfg["norm_num_groups"], *cfg["block_out_channels"])
        if shrink.unet_layers_per_block is not None:
            cfg["layers_per_block"] = shrink.unet_layers_per_block
    heads = unet["attention_head_dim"]  # diffusers' legacy name: the number of attention heads per block
    for channels, n in zip(unet["block_out_channels"], heads if isinstance(heads, list) else [heads] * 4):
        _div(channels, n, "the UNet channels by the attention head count")
    return configs


def build_random_backbone(name: str = "sd15", seed: int = 0, shrink: Shrink = Shrink()):
    """The backbone `name` (sd15 or sd21) with seeded random weights; see the module docstring."""
    import diffusers
    import open_clip
    from diffusers import AutoencoderKL, UNet2DConditionModel

    base = get_backbone_config(name)
    clip_cfg = shrink_clip_cfg(open_clip.get_model_config(base.clip_model), shrink)
    configs = shrink_diffusion_cfgs(diffusion_configs(name), shrink)
    config = replace(base, name=f"{name}-random{shrink.suffix()}-seed{seed}", clip_pretrained=None,
                     diffusion_revision=None, seed=seed,
                     description=f"{base.description}; seeded random weights (outputs are meaningless)")
    clip = build_clip(clip_cfg, seed)
    backbone = Backbone(config, clip, clip_cfg, clip_preprocess(clip_cfg["vision_cfg"]["image_size"]))
    torch.manual_seed(seed + 1)
    backbone.unet = UNet2DConditionModel.from_config(configs["unet"])
    torch.manual_seed(seed + 2)
    backbone.vae = AutoencoderKL.from_config(configs["vae"])
    backbone.scheduler = getattr(diffusers, configs["scheduler"]["_class_name"]).from_config(configs["scheduler"])
    return backbone.eval()

