"""Latent diffusion sampling conditioned on the text tower's hidden states.

A small explicit loop over diffusers components (UNet, VAE, scheduler) instead of the pipeline,
so that many conditionings run as one batch (GAIR), progress is reported per step and a
cancelled generation stops between steps.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Callable

import torch
from PIL import Image


class GenerationCancelled(Exception):
    """Raised when the cancel event is set during sampling."""


@dataclass(frozen=True)
class SamplerConfig:
    steps: int = 20  # denoising steps
    guidance_scale: float = 5.0  # classifier-free guidance (1.0 disables the unconditional pass)
    sampler: str = "dpm"  # 'dpm' (DPM-Solver++ multistep, few steps) or 'ddim'
    images_per_prompt: int = 1  # images per conditioning; all conditionings share the same noise


def make_sampler(backbone, name: str):
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

    classes = {"dpm": DPMSolverMultistepScheduler, "ddim": DDIMScheduler}
    if name not in classes:
        raise ValueError(f"sampler {name!r} is not one of {sorted(classes)}")
    return classes[name].from_config(backbone.scheduler.config)


def latent_shape(backbone) -> tuple[int, int, int]:
    factor = 2 ** (len(backbone.vae.config.block_out_channels) - 1)
    size = backbone.config.image_size // factor
    return backbone.unet.config.in_channels, size, size


@torch.no_grad()
def generate(backbone, cond: torch.Tensor, uncond: torch.Tensor | None, seed: int,
             config: SamplerConfig = SamplerConfig(),
             progress: Callable[[int, int], None] | None = None,
             cancel: threading.Event | None = None) -> torch.Tensor:
    """Images (B * images_per_prompt, 3, H, W) in [0, 1] for conditionings `cond` (B, L, W).

    The same seed gives the same images; every conditioning sees the same initial noise.
    """
    if not backbone.has_diffusion:
        raise ValueError(f"backbone {backbone.id!r} has no diffusion stack, so it cannot generate previews")
    device, dtype = backbone.device, backbone.dtype
    k = config.images_per_prompt
    gen = torch.Generator("cpu").manual_seed(seed)
    noise = torch.randn((k, *latent_shape(backbone)), generator=gen, dtype=torch.float32)
    batch = cond.shape[0]
    latents = noise.repeat(batch, 1, 1, 1).to(device, dtype)
    cond = cond.to(device, dtype).repeat_interleave(k, dim=0)
    guided = uncond is not None and config.guidance_scale != 1.0
    if guided:
        context = torch.cat([uncond.to(device, dtype).expand(cond.shape[0], -1, -1), cond])
    else:
        context = cond
    sampler = make_sampler(backbone, config.sampler)
    sampler.set_timesteps(config.steps, device=device)
    latents = latents * sampler.init_noise_sigma
    for i, t in enumerate(sampler.timesteps):
        if cancel is not None and cancel.is_set():
            raise GenerationCancelled(f"generation cancelled at step {i} of {config.steps}")
        model_in = torch.cat([latents] * 2) if guided else latents
        model_in = sampler.scale_model_input(model_in, t)
        eps = backbone.unet(model_in, t, encoder_hidden_states=context).sample
        if guided:
            e_uncond, e_cond = eps.chunk(2)
            eps = e_uncond + config.guidance_scale * (e_cond - e_uncond)
        latents = sampler.step(eps, t, latents).prev_sample
        if progress is not None:
            progress(i + 1, config.steps)
    return decode(backbone, latents)


def decode(backbone, latents: torch.Tensor) -> torch.Tensor:
    images = backbone.vae.decode(latents / backbone.vae.config.scaling_factor).sample
    return ((images.float() + 1) / 2).clamp(0, 1)


def encode_latents(backbone, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Images in [0, 1] (B, 3, H, W) -> scaled latents, as the diffusion loss needs them."""
    dist = backbone.vae.encode(images.to(backbone.device, backbone.dtype) * 2 - 1).latent_dist
    return dist.sample(generator) * backbone.vae.config.scaling_factor


def to_pil(images: torch.Tensor):
    arrays = (images.permute(0, 2, 3, 1).cpu().numpy() * 255).round().astype("uint8")
    return [Image.fromarray(a) for a in arrays]
