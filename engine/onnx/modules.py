"""The torch modules that are exported: each is the exact computation the engine runs in PyTorch.

- `ImageFeatures`: normalised pixels (B, 3, S, S) -> L2-normalised CLIP image features (B, D).
- `engine.text.TextTower` itself (no wrapper): input embeddings (B, L, W) + end-of-text index (B,)
  -> (pooled, seq); custom tokens only change the embeddings, so the export never goes stale.
- `TextIds`: token ids (B, L) + end-of-text index (B,) -> (pooled, seq), the embedding table
  included, for callers that tokenise elsewhere and use no custom tokens.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from engine.text import TextTower


class ImageFeatures(nn.Module):
    """`F.normalize(clip.encode_image(pixels))`, what `engine.images.ImageEncoder.encode_tensor` computes."""

    def __init__(self, clip: nn.Module):
        super().__init__()
        self.clip = clip

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.clip.encode_image(pixels), dim=-1)


class TextIds(nn.Module):
    """Token ids -> (pooled, seq) through the base embedding table and the shared `TextTower`."""

    def __init__(self, tower: TextTower):
        super().__init__()
        self.tower = tower

    def forward(self, ids: torch.Tensor, eot_index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.tower(self.tower.clip.token_embedding(ids), eot_index)
