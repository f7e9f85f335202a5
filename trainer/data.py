"""Training data: images in any accepted form -> tensors, latent distributions, CLIP features, negatives."""
from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from engine.diffusion import SamplerConfig, generate
from engine.errors import ImageError
from engine.image_files import pil_error, pil_open_errors
from engine.preprocess import fit, open_upright, upright_rgb

from .config import ImageInput, TrainingError


def to_pil(image: ImageInput, label: str = "image") -> Image.Image:
    """A path, bytes, PIL image or (3, H, W) [0, 1] tensor -> RGB PIL image, prepared by engine.preprocess (EXIF
    orientation applied, transparency on white) as catalog photos and search photos are."""
    if isinstance(image, torch.Tensor):
        if image.ndim != 3 or image.shape[0] != 3:
            raise TrainingError(f"{label}: tensor images must be (3, H, W) in [0, 1], got {tuple(image.shape)}")
        array = (image.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).round().astype("uint8")
        return Image.fromarray(array)
    if not isinstance(image, (Image.Image, str, Path, bytes, bytearray)):
        raise TrainingError(f"{label}: give a path, bytes, a PIL image or a tensor, not {type(image).__name__}")
    try:
        return upright_rgb(image) if isinstance(image, Image.Image) else open_upright(image)
    except pil_open_errors() as e:
        raise TrainingError(f"{label} ({image if isinstance(image, (str, Path)) else 'bytes'}) is not a readable "
                            f"image: {pil_error(e)}") from e
    except ImageError as e:
        raise TrainingError(f"{label}: {e}") from e


def pil_batch(images: Sequence[Image.Image], size: int) -> torch.Tensor:
    """RGB PIL images (to_pil) -> (B, 3, size, size) in [0, 1]: engine.preprocess.fit (shortest side resized
    (bicubic), centre-cropped), as the image encoder crops them."""
    pixels = np.stack([fit(image, size) for image in images])
    return torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous().float() / 255


def load_images(images: Sequence[ImageInput], what: str = "image") -> list:
    """Any accepted image inputs -> RGB PIL images (errors name the input's position)."""
    return [to_pil(image, f"{what} #{i}") for i, image in enumerate(images)]


def image_digest(images: Sequence) -> str:
    """Content hash of PIL images (checkpoints resume only for the same images)."""
    h = hashlib.sha256()
    for image in images:
        h.update(f"{image.size}".encode())
        h.update(image.tobytes())
    return h.hexdigest()[:16]


@dataclass
class LatentBank:
    """VAE posterior (mean, std) of each training image (and its mirror image), sampled per step.

    Encoding once instead of every step is the same objective (a fresh posterior sample each
    time) at a fraction of the cost.
    """

    mean: torch.Tensor  # (m, C, h, w), unscaled
    std: torch.Tensor  # (m, C, h, w)
    scaling_factor: float

    @classmethod
    @torch.no_grad()
    def encode(cls, backbone, pixels: torch.Tensor, flip: bool, batch: int = 16) -> "LatentBank":
        if flip:
            pixels = torch.cat([pixels, pixels.flip(-1)])
        means, stds = [], []
        for i in range(0, len(pixels), batch):
            x = pixels[i:i + batch].to(backbone.device, backbone.dtype) * 2 - 1
            dist = backbone.vae.encode(x).latent_dist
            means.append(dist.mean.float().cpu())
            stds.append(dist.std.float().cpu())
        return cls(torch.cat(means), torch.cat(stds), float(backbone.vae.config.scaling_factor))

    def __len__(self) -> int:
        return int(self.mean.shape[0])

    def sample(self, idx: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        eps = torch.randn(self.mean[idx].shape, generator=generator)
        return (self.mean[idx] + self.std[idx] * eps) * self.scaling_factor


@torch.no_grad()
def generate_negatives(backbone, encoder, parent: str, prompt: str, count: int, seed: int,
                       cancel: threading.Event | None = None) -> torch.Tensor:
    """`count` images of the parent class generated from `prompt` ('image of a <parent>'), in [0, 1]."""
    if not backbone.has_diffusion:
        raise TrainingError(f"backbone {backbone.id!r} has no diffusion model to generate negatives; "
                            "pass catalog images of the parent category and use negatives='catalog'")
    feats = encoder.encode([prompt.format(parent), ""])
    config = SamplerConfig(steps=backbone.config.steps, guidance_scale=backbone.config.guidance_scale,
                           images_per_prompt=count)
    return generate(backbone, feats.seq[:1], feats.seq[1:], seed=seed, config=config, cancel=cancel).cpu()
