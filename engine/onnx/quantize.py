"""Reduced-precision variants of an export, kept only if retrieval does not change.

- int8: onnxruntime dynamic quantisation (int8 weights, activations quantised per batch at run
  time) of the MatMul/Gemm nodes; for CPU.
- fp16: every float tensor halved, inputs and outputs kept fp32; for the CUDA provider only.

A variant is accepted when recall@10 of retrieval with its features, against the fp32 features
as ground truth, is >= 0.99 on an evaluation set (the demo catalog's images, plus text queries when
given). The figure is logged either way; a rejected variant is not used. Decisions are cached in
`acceptance.json` of the export folder, keyed by variant and a hash of the evaluation set.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .export import OnnxExport, OnnxExportError, variant_filename
from .runtime import CPU, CUDA, OnnxImageEncoder, select_providers

log = logging.getLogger(__name__)

VARIANTS = ("fp32", "int8", "fp16")
ACCEPTANCE = "acceptance.json"
DEFAULT_MIN_RECALL = 0.99
_LARGE = 1_800_000_000  # bytes: above this an ONNX file must keep its weights in external data (2 GB protobuf limit)


@dataclass
class VariantCheck:
    """The outcome of one acceptance check."""

    graph: str  # 'image'
    variant: str  # 'int8' or 'fp16'
    recall: float  # mean recall@k of the variant's retrieval against fp32's (1.0 = identical top-k)
    k: int  # k of recall@k
    threshold: float  # minimum recall to accept
    accepted: bool  # recall >= threshold
    gallery: int  # number of evaluation images
    queries: int  # number of queries (images, leave-one-out, plus text queries)
    reason: str = ""  # why it was rejected without a figure (no GPU, too few images), else ''


def quantize_int8(export: OnnxExport, graph: str = "image") -> Path:
    """The int8 dynamically quantised file of `graph` (made once, then reused from the export folder)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    return _derive(export, graph, "int8", lambda src, dst, external: quantize_dynamic(
        src, dst, op_types_to_quantize=["MatMul", "Gemm"], per_channel=True, weight_type=QuantType.QInt8,
        use_external_data_format=external, extra_options={"MatMulConstBOnly": True}))


def convert_fp16(export: OnnxExport, graph: str = "image") -> Path:
    """The fp16 file of `graph` (fp32 inputs/outputs kept), for the CUDA provider."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    def convert(src: str, dst: str, external: bool) -> None:
        model = convert_float_to_float16(onnx.load(src), keep_io_types=True)
        onnx.save(model, dst, save_as_external_data=external)

    return _derive(export, graph, "fp16", convert)


def _derive(export: OnnxExport, graph: str, variant: str, make) -> Path:
    target = export.directory / variant_filename(graph, variant)
    if target.is_file():
        return target
    source = export.path(graph)
    size = sum(p.stat().st_size for p in export.directory.glob(f"{source.name}*"))
    tmp = export.directory / f".tmp-{variant}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        try:
            make(str(source), str(tmp / target.name), size > _LARGE)
        except Exception as e:  # quantiser/converter errors come in many types; all mean "no variant"
            raise OnnxExportError(f"making the {variant} variant of {source} failed: {type(e).__name__}: {e}") from e
        files = sorted(tmp.iterdir(), key=lambda p: p.name == target.name)  # the model file last
        for f in files:
            os.replace(f, export.directory / f.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("wrote %s variant %s", variant, target)
    return target


def recall_at_k(ref_gallery: np.ndarray, var_gallery: np.ndarray, ref_queries: np.ndarray,
                var_queries: np.ndarray, k: int = 10, exclude_self: bool = False) -> float:
    """Mean |top-k(var) ∩ top-k(ref)| / k over queries, scoring by dot product (features are L2-normalised).

    `exclude_self`: queries are the gallery itself (row i is image i), so image i is left out of its own ranking.
    """
    n = ref_gallery.shape[0]
    if n < k + (1 if exclude_self else 0):
        raise ValueError(f"recall@{k} needs a gallery of at least {k + int(exclude_self)} items, got {n}")
    ref_scores = ref_queries.astype(np.float64) @ ref_gallery.astype(np.float64).T
    var_scores = var_queries.astype(np.float64) @ var_gallery.astype(np.float64).T
    if exclude_self:
        np.fill_diagonal(ref_scores, -np.inf)
        np.fill_diagonal(var_scores, -np.inf)
    ref_top = np.argsort(-ref_scores, axis=1, kind="stable")[:, :k]
    var_top = np.argsort(-var_scores, axis=1, kind="stable")[:, :k]
    hits = [len(set(a) & set(b)) for a, b in zip(ref_top, var_top)]
    return float(np.mean(hits) / k)


def _eval_key(variant: str, pixels: np.ndarray, text_queries: np.ndarray | None, k: int, threshold: float) -> str:
    h = hashlib.sha256(f"{variant}|{k}|{threshold}|{pixels.shape}".encode())
    h.update(np.ascontiguousarray(pixels, dtype=np.float32).tobytes())
    if text_queries is not None:
        h.update(np.ascontiguousarray(text_queries, dtype=np.float32).tobytes())
    return f"image.{variant}.{h.hexdigest()[:16]}"


def check_image_variant(export: OnnxExport, variant: str, pixels: np.ndarray,
                        text_queries: np.ndarray | None = None, threshold: float = DEFAULT_MIN_RECALL,
                        k: int = 10, threads: int | None = None, batch_size: int = 32) -> VariantCheck:
    """Accept or reject the `variant` image encoder on evaluation images `pixels` (N, 3, S, S), normalised.

    `text_queries` (Q, D): L2-normalised text features of catalog captions/titles (from the fp32 text
    tower), used as extra queries against the image gallery.
    """
    if variant not in ("int8", "fp16"):
        raise ValueError(f"variant {variant!r}: only 'int8' and 'fp16' need an acceptance check")
    n = int(pixels.shape[0])
    nq = n + (0 if text_queries is None else int(text_queries.shape[0]))

    def rejected(reason: str) -> VariantCheck:
        log.warning("onnx %s image encoder rejected: %s", variant, reason)
        return VariantCheck("image", variant, float("nan"), k, threshold, False, n, nq, reason)

    if n < k + 1:
        return rejected(f"the evaluation set has {n} images; recall@{k} needs at least {k + 1}")

    providers = select_providers("auto")
    if variant == "fp16" and CUDA not in providers:
        return rejected("fp16 runs on the CUDA provider only (onnxruntime-gpu and a GPU); using fp32")
    key = _eval_key(variant, pixels, text_queries, k, threshold)
    cached = _read_acceptance(export).get(key)
    if cached is not None:
        check = VariantCheck(**cached)
        _log_check(check, cached=True)
        return check
    path = quantize_int8(export) if variant == "int8" else convert_fp16(export)
    if variant == "int8":
        providers = [CPU]
    ref = OnnxImageEncoder(export.path("image"), providers, threads, spinning=False)
    var = OnnxImageEncoder(path, providers, threads, spinning=False)
    ref_g = np.concatenate([ref.encode(pixels[i:i + batch_size]) for i in range(0, n, batch_size)])
    var_g = np.concatenate([var.encode(pixels[i:i + batch_size]) for i in range(0, n, batch_size)])
    hits = recall_at_k(ref_g, var_g, ref_g, var_g, k, exclude_self=True) * n
    if text_queries is not None and len(text_queries):
        hits += recall_at_k(ref_g, var_g, text_queries, text_queries, k) * len(text_queries)
    recall = float(hits / nq)
    check = VariantCheck("image", variant, recall, k, threshold, recall >= threshold, n, nq)
    _write_acceptance(export, key, check)
    _log_check(check, cached=False)
    return check


def _log_check(check: VariantCheck, cached: bool) -> None:
    how = " (cached decision)" if cached else ""
    if check.accepted:
        log.info("onnx %s image encoder accepted%s: recall@%d vs fp32 = %.4f >= %.2f on %d images, %d queries",
                 check.variant, how, check.k, check.recall, check.threshold, check.gallery, check.queries)
    else:
        log.warning("onnx %s image encoder rejected%s: recall@%d vs fp32 = %.4f < %.2f on %d images, %d queries; "
                    "using fp32", check.variant, how, check.k, check.recall, check.threshold, check.gallery,
                    check.queries)


def _read_acceptance(export: OnnxExport) -> dict:
    path = export.directory / ACCEPTANCE
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError) as e:
        log.warning("ignoring unreadable %s: %s", path, e)
        return {}


def _write_acceptance(export: OnnxExport, key: str, check: VariantCheck) -> None:
    data = {**_read_acceptance(export), key: asdict(check)}
    tmp = export.directory / f".{ACCEPTANCE}.{uuid.uuid4().hex[:8]}"
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, export.directory / ACCEPTANCE)
