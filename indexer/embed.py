"""Stage 3, embed: model-sized uint8 pixels (B, S, S, 3) -> L2-normalised features (B, D), float32.

Two interchangeable embedders: `OnnxEmbedder` (ONNX Runtime; int8/fp16 variants only after they
pass the recall check) and `TorchEmbedder` (PyTorch eager). `key` identifies what produces the
vectors (backbone, weights, precision, preprocessing); it enters every row's content hash, so a new
model re-embeds rows that are otherwise unchanged.
"""
from __future__ import annotations

import hashlib
import json
import logging
from typing import Callable, Protocol, Sequence

import numpy as np

log = logging.getLogger(__name__)


class Embedder(Protocol):
    key: str  # identity of the vectors (enters the content hash)
    dim: int  # feature dimension
    image_size: int  # S of the (S, S, 3) pixels it takes
    variant: str  # 'torch', 'fp32', 'int8' or 'fp16'
    description: str  # for reports: runtime, precision, device/provider

    def encode(self, pixels: np.ndarray) -> np.ndarray: ...


def normalize(pixels: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """(B, S, S, 3) uint8 -> (B, 3, S, S) float32 normalised, as ImageEncoder.pil_to_tensor + normalize."""
    x = np.ascontiguousarray(pixels.transpose(0, 3, 1, 2)).astype(np.float32) / np.float32(255)
    m = np.asarray(mean, np.float32).reshape(1, 3, 1, 1)
    s = np.asarray(std, np.float32).reshape(1, 3, 1, 1)
    return (x - m) / s


def preprocess_stats(backbone) -> tuple[tuple[float, ...], tuple[float, ...]]:
    from engine.images import OPENAI_MEAN, OPENAI_STD

    cfg = backbone.preprocess_cfg or {}
    return tuple(cfg.get("mean", OPENAI_MEAN)), tuple(cfg.get("std", OPENAI_STD))


def model_key(backbone, weights: str, variant: str) -> str:
    mean, std = preprocess_stats(backbone)
    fields = {"backbone": backbone.id, "weights": weights, "variant": "fp32" if variant == "torch" else variant,
              "size": backbone.image_size, "mean": mean, "std": std}
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:24]


class TorchEmbedder:
    """PyTorch eager: what engine.images.ImageEncoder.encode_tensor computes."""

    variant = "torch"

    def __init__(self, backbone, weights: str):
        self.backbone = backbone
        self.dim = backbone.embed_dim
        self.image_size = backbone.image_size
        self.mean, self.std = preprocess_stats(backbone)
        self.key = model_key(backbone, weights, "torch")
        self.description = f"pytorch {backbone.device.type} {str(backbone.dtype).removeprefix('torch.')}"

    def encode(self, pixels: np.ndarray) -> np.ndarray:
        import torch
        import torch.nn.functional as F

        bb = self.backbone
        x = torch.from_numpy(normalize(pixels, self.mean, self.std)).to(bb.device, bb.dtype)
        with torch.no_grad():
            return F.normalize(bb.clip.encode_image(x), dim=-1).float().cpu().numpy()


class OnnxEmbedder:
    """ONNX Runtime image encoder (engine.onnx.OnnxImageEncoder); needs no torch at run time."""

    def __init__(self, encoder, key: str, mean: Sequence[float], std: Sequence[float], variant: str = "fp32"):
        self.encoder = encoder
        self.key = key
        self.mean, self.std = tuple(mean), tuple(std)
        self.variant = variant
        self.dim = encoder.dim
        self.image_size = encoder.image_size
        self.description = f"onnxruntime {variant} {encoder.provider}"

    def encode(self, pixels: np.ndarray) -> np.ndarray:
        return self.encoder.encode(normalize(pixels, self.mean, self.std))


def make_embedder(backbone, onnx: bool = True, quantize: str | None = None, cache_dir=None,
                  threads: int | None = None, device: str = "auto", min_recall: float = 0.99,
                  eval_set: Callable[[], tuple[np.ndarray, list[str]]] | None = None) -> Embedder:
    """The embedder a run uses. `eval_set()` gives (pixels uint8 (N,S,S,3), titles) for the quantisation check."""
    from engine.onnx import weights_hash

    weights = weights_hash(backbone.clip)
    if not onnx:
        log.info("embedding with PyTorch eager on %s", backbone.device)
        return TorchEmbedder(backbone, weights)
    from engine.onnx import ExportSettings, OnnxImageEncoder, check_image_variant, export_backbone, select_providers

    export = export_backbone(backbone, cache_dir, ExportSettings(graphs=("image",)))
    providers = select_providers(device)
    variant = "fp32"
    if quantize is not None:
        pixels, titles = eval_set() if eval_set is not None else (np.zeros((0, 1, 1, 3), np.uint8), [])
        mean, std = preprocess_stats(backbone)
        check = check_image_variant(export, quantize, normalize(pixels, mean, std),
                                    _text_queries(backbone, titles), threshold=min_recall, threads=threads)
        if check.accepted:
            variant = quantize
    if variant == "int8":
        providers = ["CPUExecutionProvider"]
    # no spin-waiting: the decoder threads share the CPU with the encoder (see create_session)
    encoder = OnnxImageEncoder(export.path("image", variant), providers, threads, spinning=False)
    log.info("embedding with ONNX Runtime (%s, %s)", variant, encoder.provider)
    mean, std = preprocess_stats(backbone)
    return OnnxEmbedder(encoder, model_key(backbone, weights, variant), mean, std, variant)


def _text_queries(backbone, titles: list[str]) -> np.ndarray | None:
    """fp32 text features of catalog titles: extra queries for the acceptance check."""
    if not titles:
        return None
    import torch

    from engine.text import TextEncoder

    with torch.no_grad():
        return TextEncoder(backbone).encode(titles).pooled.float().cpu().numpy()
