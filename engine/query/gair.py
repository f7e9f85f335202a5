"""Generation Aided Image Retrieval (paper Algorithm 1), the scoring part.

For each w in the grid W an image I_w = d(q_seq(w)) is generated; the context images
x_c = d(mean_i g_seq([t, a_i, c])) show the query with the token replaced by attributes, and x
are the concept's training images. Then

    score(w) = min(mean f(I_w)·f(x_c), mean f(I_w)·f(x))

(means over all image pairs) and w* = argmax score; ties go to the first w in grid order.
With several tokens in one query, the object term is the lowest over the tokens of the mean
similarity to that token's training images: every concept has to show (ours).

Generation and image encoding are the service's (engine/query/service.py); this module only
scores features, so the choice of w* is testable on hand-built features.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from .previews import Preview


@dataclass(frozen=True)
class WeightScore:
    w: float  # the composition weight
    score: float  # min(context_score, object_score): what GAIR maximises
    context_score: float  # mean f(I_w)·f(x_c)
    object_score: float  # mean f(I_w)·f(x) (lowest over the query's tokens)
    preview_key: str | None = None  # key of I_w's preview PNG

    def to_json(self) -> dict[str, Any]:
        return {"w": self.w, "score": self.score, "context_score": self.context_score,
                "object_score": self.object_score, "preview_key": self.preview_key}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "WeightScore":
        return cls(float(data["w"]), float(data["score"]), float(data["context_score"]),
                   float(data["object_score"]), data.get("preview_key"))


@dataclass
class GairOutcome:
    w_star: float  # the chosen weight
    scores: list[WeightScore]  # one per w of the grid, in grid order
    seed: int  # diffusion seed used
    cached: bool  # True when nothing was generated (the outcome and previews came from the cache)
    previews: dict[float, Preview] = field(default_factory=dict)  # w -> preview of I_w
    timings_ms: dict[str, float] = field(default_factory=dict)  # text, context_generation, generation, scoring

    @property
    def preview(self) -> Preview | None:
        """The preview of I_w*."""
        return self.previews.get(self.w_star)

    def to_json(self) -> dict[str, Any]:
        return {"w_star": self.w_star, "scores": [s.to_json() for s in self.scores], "seed": self.seed,
                "cached": self.cached, "preview_key": self.preview.key if self.preview else None,
                "timings_ms": dict(self.timings_ms)}


def score_weights(candidates: torch.Tensor, context: torch.Tensor,
                  objects: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(score, context_score, object_score), each (W,), from image features.

    candidates: (W, k, D) features of the k images of each w; context: (m, D) features of x_c;
    objects: one (n_j, D) tensor of training-image features per token. Features are L2-normalised here.
    """
    if candidates.ndim != 3:
        raise ValueError(f"candidate features must be (weights, images, dim), got shape {tuple(candidates.shape)}")
    if not objects:
        raise ValueError("GAIR needs the training-image features of at least one token")
    cand = F.normalize(candidates.float(), dim=-1)
    ctx = F.normalize(context.float(), dim=-1)
    context_score = torch.einsum("wkd,md->wkm", cand, ctx).mean(dim=(1, 2))
    per_token = [torch.einsum("wkd,nd->wkn", cand, F.normalize(x.float(), dim=-1)).mean(dim=(1, 2))
                 for x in objects]
    object_score = torch.stack(per_token).min(dim=0).values
    return torch.minimum(context_score, object_score), context_score, object_score


def choose(scores: torch.Tensor) -> int:
    """Index of the best score; the first one on ties (grid order), so the choice is deterministic."""
    best = scores.max()
    return int(torch.nonzero(scores == best)[0, 0])
