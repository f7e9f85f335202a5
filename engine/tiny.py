"""In-code builders: backbones of seeded random weights with the real architectures, for tests."""
from __future__ import annotations

import copy
from typing import Any

import torch

from .backbones import BackboneConfig


def build_clip(clip_cfg: dict[str, Any], seed: int) -> torch.nn.Module:
    from open_clip.model import CLIP

    cfg = copy.deepcopy(clip_cfg)
    torch.manual_seed(seed)
    return CLIP(embed_dim=cfg["embed_dim"], vision_cfg=cfg["vision_cfg"], text_cfg=cfg["text_cfg"],
                quick_gelu=cfg.get("quick_gelu", False))


def build_unet(cross_attention_dim: int, sample_size: int, seed: int,
               block_out_channels: tuple[int, ...] = (32, 64), layers_per_block: int = 1,
               attention_head_dim: int = 8, norm_num_groups: int = 8) -> torch.nn.Module:
    from diffusers import UNet2DConditionModel

    n = len(block_out_channels)
    torch.manual_seed(seed)
    return UNet2DConditionModel(
        sample_size=sample_size, in_channels=4, out_channels=4,
        block_out_channels=block_out_channels, layers_per_block=layers_per_block,
        down_block_types=("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (n - 1),
        up_block_types=("CrossAttnUpBlock2D",) * (n - 1) + ("UpBlock2D",),
        cross_attention_dim=cross_attention_dim, attention_head_dim=attention_head_dim,
        norm_num_groups=norm_num_groups,
    )


def build_vae(seed: int, block_out_channels: tuple[int, ...] = (32, 64), norm_num_groups: int = 8,
              sample_size: int = 32, scaling_factor: float = 1.0) -> torch.nn.Module:
    from diffusers import AutoencoderKL

    n = len(block_out_channels)
    torch.manual_seed(seed)
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=block_out_channels,
        down_block_types=("DownEncoderBlock2D",) * n, up_block_types=("UpDecoderBlock2D",) * n,
        layers_per_block=1, norm_num_groups=norm_num_groups, sample_size=sample_size,
        scaling_factor=scaling_factor,
    )


def build_scheduler() -> Any:
    """The noise schedule of Stable Diffusion 1.x/2.x (scaled linear betas, 1000 steps, epsilon)."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                         beta_schedule="scaled_linear", clip_sample=False, prediction_type="epsilon",
                         steps_offset=1)


def clip_preprocess(size: int) -> dict[str, Any]:
    """open_clip's preprocessing of OpenAI CLIP (also OpenCLIP's LAION models): mean/std, bicubic, shortest side."""
    return {"size": size, "mode": "RGB",
            "mean": (0.48145466, 0.4578275, 0.40821073), "std": (0.26862954, 0.26130258, 0.27577711),
            "interpolation": "bicubic", "resize_mode": "shortest", "fill_color": 0}


def build(config: BackboneConfig) -> tuple[torch.nn.Module, dict[str, Any], dict[str, Any], tuple | None]:
    """The parts of an in-code backbone, seeded: (clip, clip_cfg, preprocess_cfg, (unet, vae, scheduler) or None
    when the config has no diffusion stack); engine.loading assembles them into a Backbone."""
    if config.builder != "tiny-random" or config.clip_cfg is None:
        raise ValueError(f"no in-code builder {config.builder!r}; known: 'tiny-random' (needs clip_cfg)")
    clip = build_clip(config.clip_cfg, config.seed)
    preprocess = clip_preprocess(config.clip_cfg["vision_cfg"]["image_size"])
    diffusion = None
    if config.diffusion:
        width = config.clip_cfg["text_cfg"]["width"]
        vae = build_vae(config.seed + 2, sample_size=config.image_size)
        factor = 2 ** (len(vae.config.block_out_channels) - 1)
        diffusion = (build_unet(width, config.image_size // factor, config.seed + 1), vae, build_scheduler())
    return clip, copy.deepcopy(config.clip_cfg), preprocess, diffusion
