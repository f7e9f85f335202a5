"""Composition of custom-token and attribute queries (docs/method.md, "Composition and GAIR").

q(w) = w * g([t, *, c]) + (1 - w) * mean_i g([t, a_i, c])

applied to the pooled feature (then renormalised, for retrieval) and to the hidden-state
sequence (for generation). The attribute prompts replace every placeholder by an attribute
word of its token; a token without attributes is simply dropped (leaving "t c").
"""
from __future__ import annotations

import re
from typing import Sequence

import torch
import torch.nn.functional as F

from .text import TextEncoder, TextFeatures
from .tokenizer import PLACEHOLDER_RE
from .tokens import TokenSet


def attribute_prompts(prompt: str, tokens: TokenSet) -> list[str]:
    """The prompts [t, a_i, c]: the i-th attribute of each token in place of its placeholder."""
    placeholders = PLACEHOLDER_RE.findall(prompt)
    if not placeholders:
        return [prompt]
    lists = {p: tokens.get(p).meta.attributes or [""] for p in placeholders}
    count = max(len(v) for v in lists.values())
    prompts = []
    for i in range(count):
        text = PLACEHOLDER_RE.sub(lambda m: lists[m.group(0)][i % len(lists[m.group(0)])], prompt)
        prompts.append(re.sub(r"\s+", " ", text).strip())
    return prompts


def mix(token: TextFeatures, attributes: TextFeatures, weights: Sequence[float]) -> TextFeatures:
    """Mix one token query (batch 1) with the mean of the attribute queries, for each w in `weights`."""
    w = torch.as_tensor(list(weights), dtype=token.pooled.dtype, device=token.pooled.device)
    if bool(((w < 0) | (w > 1)).any()):
        raise ValueError(f"weights must lie in [0, 1], got {list(weights)}")
    attr_pooled = F.normalize(attributes.pooled, dim=-1).mean(0, keepdim=True)
    pooled = w[:, None] * token.pooled[:1] + (1 - w[:, None]) * attr_pooled
    attr_seq = attributes.seq.mean(0, keepdim=True)
    seq = w[:, None, None] * token.seq[:1] + (1 - w[:, None, None]) * attr_seq
    return TextFeatures(F.normalize(pooled, dim=-1), seq)


def compose(encoder: TextEncoder, prompt: str, tokens: TokenSet, weights: Sequence[float]) -> TextFeatures:
    """q(w) for each weight, from one batched text pass (token prompt + attribute prompts)."""
    prompts = [prompt] + attribute_prompts(prompt, tokens)
    features = encoder.encode(prompts, tokens.vectors())
    token = TextFeatures(features.pooled[:1], features.seq[:1])
    attrs = TextFeatures(features.pooled[1:], features.seq[1:])
    return mix(token, attrs, weights)


def fuse(query: torch.Tensor, image: torch.Tensor, weight: float = 1.0) -> torch.Tensor:
    """normalize(normalize(query) + weight * normalize(image)): a query vector with an image feature added (the
    concept's photo prototype, a shopper's photo, a preview); weight 0 gives the query alone, normalised."""
    return F.normalize(F.normalize(query, dim=-1) + weight * F.normalize(image, dim=-1), dim=-1)


def prototype(features: Sequence[torch.Tensor]) -> torch.Tensor:
    """The concept prototype of one or more tokens: each token's mean training-photo feature (normalised first),
    then their mean, normalised, (D,)."""
    means = torch.stack([F.normalize(F.normalize(f.float(), dim=-1).mean(0), dim=-1) for f in features])
    return F.normalize(means.mean(0), dim=-1)
