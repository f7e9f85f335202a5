"""Word embeddings, automatic attribute selection, the attribute subspace and token initialisation.

Subspace projection (docs/method.md, "Training losses" 4): the input embeddings of the attribute
words (multi-piece words averaged) form a matrix E; with mean mu and the top-r principal
directions P (r x width, orthonormal rows), the token rows e are used as P^T P (e - mu) + mu.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

from engine.tokenizer import bpe_tokenizer

from .config import TrainingError

MAX_DEFAULT_RANK = 32


def word_embedding(backbone, word: str) -> torch.Tensor:
    """The input embedding of a word: the mean of its BPE pieces' rows (float32, (width,))."""
    ids = bpe_tokenizer().encode(word)
    if not ids:
        raise TrainingError(f"the word {word!r} has no tokens; use a non-empty word")
    table = backbone.clip.token_embedding.weight
    return table[torch.tensor(ids, device=table.device)].detach().float().mean(0).cpu()


def word_embeddings(backbone, words: Sequence[str]) -> torch.Tensor:
    return torch.stack([word_embedding(backbone, w) for w in words])


@torch.no_grad()
def select_attributes(encoder, image_features: torch.Tensor, parent: str, vocabulary: Sequence[str],
                      k: int) -> list[str]:
    """The k vocabulary words whose text features ('a photo of a <word> <parent>') best match the images.

    Score: cosine similarity to the mean image feature (CLIP space), highest first.
    """
    if k > len(vocabulary):
        raise TrainingError(f"num_attributes={k} exceeds the vocabulary's {len(vocabulary)} words")
    text = encoder.encode([f"a photo of a {w} {parent}" for w in vocabulary]).pooled.float().cpu()
    centre = F.normalize(image_features.float().mean(0), dim=-1)
    scores = text @ centre
    order = torch.argsort(scores, descending=True, stable=True)[:k]
    return [vocabulary[int(i)] for i in order]


@dataclass
class Subspace:
    """mu + span(P): where projected token rows live."""

    mean: torch.Tensor  # (width,)
    basis: torch.Tensor  # (rank, width), orthonormal rows
    words: list[str]  # the attribute words it was built from
    basis_id: str  # content id stored in the token's metadata

    @property
    def rank(self) -> int:
        return int(self.basis.shape[0])

    def project(self, e: torch.Tensor) -> torch.Tensor:
        mu = self.mean.to(e)
        p = self.basis.to(e)
        return (e - mu) @ p.T @ p + mu

    def distance(self, v: torch.Tensor) -> torch.Tensor:
        """Norm of each row's component outside mu + span(P) (0 for projected rows)."""
        return (v - self.project(v)).norm(dim=-1)

    @classmethod
    def from_words(cls, backbone, words: Sequence[str], rank: int | None) -> "Subspace":
        if len(words) < 2:
            raise TrainingError(f"the projection needs at least 2 attribute words, got {list(words)}")
        emb = word_embeddings(backbone, words).double()
        mu = emb.mean(0)
        _, s, vh = torch.linalg.svd(emb - mu, full_matrices=False)
        available = int((s > s[0] * 1e-6).sum()) if s.numel() else 0
        r = min(len(words) - 1, MAX_DEFAULT_RANK) if rank is None else rank
        if r > available:
            raise TrainingError(f"projection rank {r} exceeds the {available} independent directions of the "
                                f"{len(words)} attribute words; lower rank or add attributes")
        h = hashlib.sha256(f"{backbone.id}|{r}|{'|'.join(words)}".encode()).hexdigest()[:12]
        return cls(mu.float(), vh[:r].float().contiguous(), list(words), f"attr-{h}")


def initial_vectors(backbone, init: str, num_vectors: int) -> torch.Tensor:
    """(num_vectors, width) starting rows.

    One word: every row starts at that word's embedding (diffusers' initializer_token). Several
    words (e.g. a caption of the images): the caption's BPE pieces are spread over the rows in order,
    cycling when there are fewer pieces than rows and averaging neighbours when there are more.
    """
    words = init.split()
    if not words:
        raise TrainingError("init must name at least one word")
    if len(words) == 1:
        return word_embedding(backbone, words[0]).expand(num_vectors, -1).clone()
    ids = bpe_tokenizer().encode(" ".join(words))
    table = backbone.clip.token_embedding.weight.detach().float().cpu()
    pieces = table[torch.tensor(ids)]
    if len(pieces) >= num_vectors:
        chunks = torch.tensor_split(torch.arange(len(pieces)), num_vectors)
        return torch.stack([pieces[c].mean(0) for c in chunks])
    return pieces[torch.arange(num_vectors) % len(pieces)].clone()


def anchor_targets(vectors: torch.Tensor, anchors: torch.Tensor, top: int) -> torch.Tensor:
    """Sparse attractors for the anchor loss: for each row, the indices of its `top` most similar anchors."""
    sims = F.normalize(vectors.float(), dim=-1) @ F.normalize(anchors.float(), dim=-1).T
    return sims.topk(min(top, anchors.shape[0]), dim=-1).indices


def anchor_loss(vectors: torch.Tensor, anchors: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
    """Mean squared distance of each row to its active anchors, relative to the anchors' mean squared norm."""
    chosen = anchors.to(vectors)[active]  # (n, top, width)
    dist = ((vectors.unsqueeze(1) - chosen) ** 2).sum(-1).mean()
    return dist / anchors.pow(2).sum(-1).mean().to(vectors)
