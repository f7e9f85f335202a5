"""Measure the demo backbone: zero-shot CLIP accuracy, retrieval, and generation judged by CLIP.

Everything is measured on what the backbone never trained on: photos of the held-out
products (zero-shot, retrieval) and held-out (category, colour, context) combinations with
held-out caption templates (generation). Writes a JSON report and a PNG grid of generations.
"""
from __future__ import annotations

import argparse
import json
import platform
import random
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from engine.backbones import DEFAULT_BACKBONE
from engine.diffusion import SamplerConfig, generate
from engine.images import ImageEncoder
from engine.loading import load_backbone
from engine.text import TextEncoder

from .build import World, make_world, sample_eval_pair
from .captions import caption
from .render import render_array
from .vocab import CATEGORIES, CATEGORY_NOUNS, COLOURS, CONTEXTS, PATTERN_WORDS, PATTERNS


def describe_text(category: str, colour: str, pattern: str, context: str) -> str:
    """The canonical caption for an attribute combination ("a photo of a red striped dress on a beach")."""
    noun = CATEGORY_NOUNS[category][0]
    words = [colour] + ([] if pattern == "solid" else [PATTERN_WORDS[pattern][0][0]]) + [noun]
    desc = " ".join(words)
    article = "an" if desc[0] in "aeiou" else "a"
    return f"a photo of {article} {desc} {CONTEXTS[context][0]}"


CHOICES = {"category": CATEGORIES, "colour": tuple(COLOURS), "pattern": PATTERNS, "context": tuple(CONTEXTS)}


class Judge:
    """Zero-shot classification of images by the backbone's CLIP, one attribute at a time.

    For attribute A the candidates are the canonical captions with A replaced by each of its
    values and the other attributes at their true values (the usual CLIP prompt protocol).
    """

    def __init__(self, backbone):
        self.text = TextEncoder(backbone)
        self.image = ImageEncoder(backbone)
        self._cache: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def text_features(self, texts: list[str]) -> torch.Tensor:
        missing = [t for t in dict.fromkeys(texts) if t not in self._cache]
        for i in range(0, len(missing), 256):
            chunk = missing[i:i + 256]
            for t, f in zip(chunk, self.text.encode(chunk).pooled):
                self._cache[t] = f
        return torch.stack([self._cache[t] for t in texts])

    def classify(self, feats: torch.Tensor, truth: list[dict], attribute: str) -> list[str]:
        options = CHOICES[attribute]
        texts = [describe_text(**{**true, attribute: o}) for true in truth for o in options]
        text_feats = self.text_features(texts).view(len(truth), len(options), -1)
        scores = torch.einsum("nod,nd->no", text_feats, feats)
        return [options[int(i)] for i in scores.argmax(dim=1)]


def _truth(photo) -> dict:
    p = photo.product
    return {"category": p.category, "colour": p.colour, "pattern": p.pattern, "context": photo.context}


def accuracy(judge: Judge, feats: torch.Tensor, truth: list[dict], attributes=tuple(CHOICES)) -> dict:
    return {a: float(np.mean([p == t[a] for p, t in zip(judge.classify(feats, truth, a), truth)])) for a in attributes}


def heldout_photos(world: World) -> tuple[list, torch.Tensor, list[dict]]:
    """The photos of the held-out products, as images in [0, 1] (N, 3, 64, 64), and their true attributes."""
    photos = [ph for pid in world.splits.heldout for ph in world.photos_of(pid)]
    images = torch.from_numpy(np.stack([render_array(ph, 64) for ph in photos])).permute(0, 3, 1, 2).float() / 255
    return photos, images, [_truth(ph) for ph in photos]


@torch.no_grad()
def zero_shot(backbone, world: World, judge: Judge, heldout=None) -> dict:
    photos, images, truth = heldout or heldout_photos(world)
    feats = judge.image.encode_tensor(images)
    acc = accuracy(judge, feats, truth)
    # text -> image retrieval with held-out templates: is the photo in the top 10 of 384?
    rng = random.Random(0)
    queries = [caption(ph, rng, heldout=True) for ph in photos]
    q = judge.text.encode(queries).pooled
    ranks = (q @ feats.T).argsort(dim=1, descending=True)
    hits = [(i in ranks[i, :10].tolist()) for i in range(len(photos))]
    # a description fits several photos (look-alike families, same context); count those too
    same = [[j for j, t in enumerate(truth) if t == truth[i]] for i in range(len(photos))]
    any_hits = [bool(set(ranks[i, :10].tolist()) & set(same[i])) for i in range(len(photos))]
    return {"photos": len(photos), "accuracy": acc, "recall_at_10_exact_photo": float(np.mean(hits)),
            "recall_at_10_any_matching_photo": float(np.mean(any_hits))}


@torch.no_grad()
def autoencoder(backbone, world: World, judge: Judge, heldout=None) -> dict:
    """The VAE alone: held-out photos encoded and decoded, then judged like generations. A generation can be
    no truer than this round trip (its colours are the decoder's)."""
    photos, images, truth = heldout or heldout_photos(world)
    vae = backbone.vae
    latents = vae.encode((images * 2 - 1).to(backbone.device, vae.dtype)).latent_dist.mean
    recon = ((vae.decode(latents).sample.float().cpu() + 1) / 2).clamp(0, 1)
    return {"photos": len(photos), "mse": float(((recon - images) ** 2).mean()),
            "accuracy": accuracy(judge, judge.image.encode_tensor(recon), truth)}


@torch.no_grad()
def generation(backbone, world: World, judge: Judge, n: int, out_png: Path | None, seed: int = 0) -> dict:
    rng = random.Random(f"gen-eval-{seed}")
    pairs = [sample_eval_pair(world, rng, heldout_templates=True) for _ in range(n)]
    enc = judge.text
    cfg = SamplerConfig(steps=backbone.config.steps, guidance_scale=backbone.config.guidance_scale)
    uncond = enc.encode([""]).seq
    images = []
    for i in range(0, n, 16):
        cond = enc.encode([c for _, c in pairs[i:i + 16]]).seq
        images.append(generate(backbone, cond, uncond, seed=seed + i, config=cfg))
    images = torch.cat(images)
    feats = judge.image.encode_tensor(images)
    truth = [_truth(ph) for ph, _ in pairs]
    result = {"samples": n, "captions": [c for _, c in pairs[:16]]}
    result["accuracy"] = accuracy(judge, feats, truth, ("category", "colour", "context", "pattern"))
    result["chance"] = {a: 1 / len(CHOICES[a]) for a in CHOICES}
    if out_png is not None:
        save_grid(images[:32], out_png, cols=8)
    return result


def save_grid(images: torch.Tensor, path: Path, cols: int = 8, scale: int = 2) -> None:
    arr = (images.permute(0, 2, 3, 1).cpu().numpy() * 255).round().astype("uint8")
    n, h, w, _ = arr.shape
    rows = (n + cols - 1) // cols
    sheet = Image.new("RGB", (cols * w, rows * h), "white")
    for i, a in enumerate(arr):
        sheet.paste(Image.fromarray(a), ((i % cols) * w, (i // cols) * h))
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.resize((cols * w * scale, rows * h * scale), Image.NEAREST).save(path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="coinage world eval", description=__doc__.splitlines()[0])
    p.add_argument("--backbone", default=DEFAULT_BACKBONE)
    p.add_argument("--seed", type=int, default=0, help="world seed")
    p.add_argument("--samples", type=int, default=128, help="generations to judge")
    p.add_argument("--out", default="docs/world_eval.json")
    p.add_argument("--grid", default="docs/world_generations.png")
    args = p.parse_args(argv)
    backbone = load_backbone(args.backbone, device="cpu")
    world = make_world(args.seed)
    judge = Judge(backbone)
    t0 = time.time()
    heldout = heldout_photos(world)  # rendered once for both measures
    report = {"backbone": backbone.id, "world_seed": args.seed, "zero_shot": zero_shot(backbone, world, judge, heldout)}
    report["autoencoder"] = autoencoder(backbone, world, judge, heldout)
    report["generation"] = generation(backbone, world, judge, args.samples, Path(args.grid) if args.grid else None)
    # a second draw of captions and noise: how much the figures above move by chance alone
    report["generation_validation"] = generation(backbone, world, judge, args.samples, None, seed=1)
    report["seconds"] = round(time.time() - t0, 1)
    report["machine"] = {"platform": platform.platform(), "cpus": torch.get_num_threads()}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: report[k] for k in ("zero_shot", "autoencoder", "generation", "generation_validation")},
                     indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
