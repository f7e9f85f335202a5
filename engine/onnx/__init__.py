"""CLIP encoders as ONNX: export with parity checks and caching, runtime sessions, int8/fp16 variants.

    export = export_backbone(backbone)                  # cached under var/onnx/<key>/
    images = OnnxImageEncoder(export.path("image"))     # (B, 3, S, S) normalised -> (B, D)
    encoder.tower = OnnxTextTower(export.path("text_embeds"))  # drop-in for engine.text.TextTower

Names are imported on first use, so a process that only *runs* exported files (engine.onnx.runtime)
never imports torch's exporter.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ExportSettings": "export", "OnnxExport": "export", "OnnxExportError": "export", "cache_key": "export",
    "default_cache_dir": "export", "export_backbone": "export", "relative_error": "export",
    "weights_hash": "export",
    "VariantCheck": "quantize", "check_image_variant": "quantize", "convert_fp16": "quantize",
    "quantize_int8": "quantize", "recall_at_k": "quantize",
    "OnnxImageEncoder": "runtime", "OnnxTextIds": "runtime", "OnnxTextTower": "runtime",
    "create_session": "runtime", "select_providers": "runtime",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'engine.onnx' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value
