"""CLIP image features f(image): from PIL images (catalog, uploads; prepared by engine.preprocess) or [0, 1]
tensors (generations)."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from engine.preprocess import model_pixels

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


class ImageEncoder:
    def __init__(self, backbone):
        self.backbone = backbone
        cfg = backbone.preprocess_cfg or {}
        self.size = backbone.image_size
        self.mean = torch.tensor(cfg.get("mean", OPENAI_MEAN)).view(1, 3, 1, 1)
        self.std = torch.tensor(cfg.get("std", OPENAI_STD)).view(1, 3, 1, 1)

    def pil_to_tensor(self, images: Sequence) -> torch.Tensor:
        """PIL images -> (B, 3, S, S) in [0, 1], prepared by engine.preprocess (upright RGB, alpha on white,
        shortest side resized to S (bicubic), centre-cropped), exactly as the indexer prepares catalog photos."""
        pixels = np.stack([model_pixels(image, self.size) for image in images])
        return torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous().float() / 255

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """[0, 1] images of any size -> the normalised input of the vision tower (differentiable)."""
        if images.shape[-1] != self.size or images.shape[-2] != self.size:
            images = F.interpolate(images, size=(self.size, self.size), mode="bicubic", align_corners=False)
        return (images - self.mean.to(images)) / self.std.to(images)

    def encode_tensor(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] -> L2-normalised CLIP image features (keeps the graph if grads are on)."""
        bb = self.backbone
        x = self.normalize(images.to(bb.device, bb.dtype))
        return F.normalize(bb.clip.encode_image(x), dim=-1)

    @torch.no_grad()
    def encode_pil(self, images: Sequence, batch_size: int = 64) -> torch.Tensor:
        feats = [self.encode_tensor(self.pil_to_tensor(images[i:i + batch_size]))
                 for i in range(0, len(images), batch_size)]
        return torch.cat(feats) if feats else torch.empty(0, self.backbone.embed_dim)
