"""Diagnostics saved with every token: norms, attribute similarities, recognition AUCs, sample grid.

Recognition follows the paper's Table 3 protocol: each held-out image is scored by its CLIP
similarity to the token prompt ('image of a * c'); AUC-ROC of target vs parent, target vs
other categories, and parent vs other categories (the token standing in for its parent).
The classifier variants (`clf_auc_*`) score by the two-way classifier's log-odds instead.
"""
from __future__ import annotations

import math
import threading
from typing import Sequence

import torch
import torch.nn.functional as F
from PIL import Image

from engine.diffusion import SamplerConfig, generate, to_pil


def auc_roc(positive: torch.Tensor, negative: torch.Tensor) -> float:
    """Area under the ROC curve: P(score of a positive > score of a negative), ties counted half."""
    pos, neg = positive.double().flatten(), negative.double().flatten()
    if pos.numel() == 0 or neg.numel() == 0:
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).double().sum()
    ties = (pos[:, None] == neg[None, :]).double().sum()
    return float((greater + 0.5 * ties) / (pos.numel() * neg.numel()))


def recognition_aucs(token_text: torch.Tensor, positives: torch.Tensor, parent: torch.Tensor,
                     others: torch.Tensor | None, parent_text: torch.Tensor | None = None) -> dict[str, float]:
    """AUCs from image features (rows, L2-normalised).

    `auc_*`: score = f(x) . g('image of a * c'), the similarity retrieval ranks by. With
    `parent_text` also `clf_auc_*`: score = f(x) . (tau_* - tau_c), the log-odds of the two-way
    classifier the classification loss trains (p(* | x) is monotone in it).
    """
    out: dict[str, float] = {}
    scorers = {"auc": token_text}
    if parent_text is not None:
        scorers["clf_auc"] = token_text - parent_text
    for name, text in scorers.items():
        s_pos, s_par = positives @ text, parent @ text
        out[f"{name}_target_vs_parent"] = auc_roc(s_pos, s_par)
        if others is not None and others.numel():
            s_oth = others @ text
            out[f"{name}_target_vs_other"] = auc_roc(s_pos, s_oth)
            if name == "auc":  # the token standing in for its parent: only the similarity makes sense
                out["auc_parent_vs_other"] = auc_roc(s_par, s_oth)
    return {k: round(v, 4) for k, v in out.items()}


def embedding_stats(vectors: torch.Tensor, words: Sequence[str], word_vectors: torch.Tensor) -> dict:
    """The token's norm against the attribute words' norms, and its cosine similarity to each word.

    `token_norm` is the mean row norm; `mean_vector_norm` the norm of the mean row (the paper's
    "average learned embedding"); similarities use the mean row too.
    """
    vectors, word_vectors = vectors.float(), word_vectors.float()
    norms = word_vectors.norm(dim=-1)
    mean_n, std_n = float(norms.mean()), float(norms.std()) if len(norms) > 1 else 0.0
    token_norm = float(vectors.norm(dim=-1).mean())
    centre = vectors.mean(0)
    cos = F.normalize(word_vectors, dim=-1) @ F.normalize(centre, dim=0)
    return {
        "token_norm": round(token_norm, 4),
        "mean_vector_norm": round(float(centre.norm()), 4),
        "word_norm_mean": round(mean_n, 4),
        "word_norm_std": round(std_n, 4),
        "norm_ratio": round(token_norm / mean_n, 3) if mean_n else math.inf,
        "norm_within_1std": bool(abs(token_norm - mean_n) <= std_n),
        "cos_attributes_mean": round(float(cos.mean()), 4),
        "cos_attributes_max": round(float(cos.max()), 4),
        "cos_attributes": {w: round(float(c), 4) for w, c in zip(words, cos, strict=True)},
    }


def sample_prompts(placeholder: str, parent: str, contexts: Sequence[str]) -> list[str]:
    return [f"a photo of a {placeholder} {parent} {c}".strip() for c in contexts]


@torch.no_grad()
def sample_grid(backbone, encoder, placeholder: str, vectors: torch.Tensor, parent: str,
                contexts: Sequence[str], seed: int, per_prompt: int = 2,
                cancel: threading.Event | None = None):
    """A PIL grid: one row per context ('a photo of a <token> <parent> <context>'), `per_prompt` columns."""
    prompts = sample_prompts(placeholder, parent, contexts)
    feats = encoder.encode(prompts + [""], {placeholder: vectors.to(backbone.device)})
    config = SamplerConfig(steps=backbone.config.steps, guidance_scale=backbone.config.guidance_scale,
                           images_per_prompt=per_prompt)
    images = to_pil(generate(backbone, feats.seq[:-1], feats.seq[-1:], seed=seed, config=config, cancel=cancel))
    w, h = images[0].size
    grid = Image.new("RGB", (w * per_prompt, h * len(prompts)), "white")
    for i, image in enumerate(images):
        grid.paste(image, ((i % per_prompt) * w, (i // per_prompt) * h))
    return grid, prompts


def loss_curves(history: Sequence[dict], max_points: int = 400) -> dict[str, list]:
    """Loss terms per step, thinned to at most `max_points` evenly spaced steps."""
    if not history:
        return {}
    stride = max(1, math.ceil(len(history) / max_points))
    kept = list(history[::stride])
    if kept[-1] is not history[-1]:
        kept.append(history[-1])
    keys = [k for k in kept[-1] if k != "step"]
    return {"step": [r["step"] for r in kept], **{k: [r.get(k) for r in kept] for k in keys}}
