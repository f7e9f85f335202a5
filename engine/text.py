"""One text tower for retrieval and generation.

`TextTower.forward` takes input *embeddings* (so custom tokens need no change to the model) and
returns, from one forward pass, the pooled CLIP feature (L2-normalised, for retrieval) and the
per-token hidden states the UNet cross-attends to: after the final layer norm of the last layer
(SD 1.x) or of the penultimate layer (SD 2.x). The pooled feature is read at the end-of-text
position given explicitly: open_clip's default argmax pooling would pick a custom token id.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from .tokenizer import PromptTokenizer, TokenLayout


@dataclass
class TextFeatures:
    pooled: torch.Tensor  # (B, embed_dim), L2-normalised CLIP text feature (g_pool)
    seq: torch.Tensor  # (B, context_length, width) conditioning hidden states (g_seq)


class TextTower(nn.Module):
    """The open_clip text transformer run from input embeddings (shares the CLIP model's weights)."""

    def __init__(self, clip: nn.Module, cond_layer: str = "last"):
        super().__init__()
        if not hasattr(clip, "token_embedding") or not hasattr(clip, "transformer"):
            raise TypeError(
                f"{type(clip).__name__} has no built-in text transformer (token_embedding/transformer); "
                "use an open_clip CLIP model, not a CustomTextCLIP with a Hugging Face text tower"
            )
        self.clip = clip
        self.cond_layer = cond_layer

    def forward(self, embeddings: torch.Tensor, eot_index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        clip = self.clip
        x = embeddings + clip.positional_embedding.to(embeddings.dtype)
        blocks = clip.transformer.resblocks
        batch_first = getattr(clip.transformer, "batch_first", True)
        if not batch_first:
            x = x.transpose(0, 1)
        penultimate = None
        for i, block in enumerate(blocks):
            if i == len(blocks) - 1:
                penultimate = x
            x = block(x, attn_mask=clip.attn_mask)
        if not batch_first:
            x, penultimate = x.transpose(0, 1), penultimate.transpose(0, 1)
        final = clip.ln_final(x)
        seq = final if self.cond_layer == "last" else clip.ln_final(penultimate)
        pooled = final[torch.arange(final.shape[0], device=final.device), eot_index]
        proj = clip.text_projection
        pooled = proj(pooled) if isinstance(proj, nn.Linear) else pooled @ proj
        return F.normalize(pooled, dim=-1), seq


class TextEncoder:
    """Prompts (with placeholders) -> TextFeatures, for a backbone and a set of custom-token vectors."""

    def __init__(self, backbone):
        self.backbone = backbone
        self.tokenizer = PromptTokenizer(backbone.context_length, backbone.config.pad)
        self.tower = TextTower(backbone.clip, backbone.config.cond_layer)

    def embed(self, ids: torch.Tensor, extra: torch.Tensor | None) -> torch.Tensor:
        """Input embeddings: base table rows for ordinary ids, `extra` rows for custom ids."""
        table = self.backbone.clip.token_embedding.weight
        vocab = table.shape[0]
        ids = ids.to(table.device)
        base = F.embedding(ids.clamp(max=vocab - 1), table)
        custom = ids >= vocab
        if not bool(custom.any()):
            return base
        if extra is None:
            raise ValueError("prompt has custom-token ids but no custom vectors were given")
        rows = F.embedding((ids - vocab).clamp(min=0), extra.to(table.device, table.dtype))
        return torch.where(custom.unsqueeze(-1), rows, base)

    def encode(self, prompts: list[str] | str, tokens: Mapping[str, torch.Tensor] | None = None) -> TextFeatures:
        """Encode prompts; `tokens` maps placeholder -> (n, width) vectors (trainable tensors keep their grad)."""
        if isinstance(prompts, str):
            prompts = [prompts]
        tokens = dict(tokens or {})
        layout = TokenLayout.from_sizes(self.backbone.vocab_size, {p: v.shape[0] for p, v in tokens.items()})
        batch = self.tokenizer(prompts, layout)
        extra = torch.cat([tokens[p] for p in layout.offsets]) if tokens else None
        x = self.embed(batch.ids, extra)
        pooled, seq = self.tower(x, batch.eot_index.to(x.device))
        return TextFeatures(pooled, seq)
