"""The query service's text encoder runtime: the ONNX text tower when it can be had, else PyTorch."""
from __future__ import annotations

import logging

from .errors import QueryError

log = logging.getLogger(__name__)


def onnx_text_tower(backbone, runtime: str = "auto", cache_dir: str | None = None):
    """The ONNX text tower (input-embeddings graph) for `backbone`, or None for PyTorch.

    'torch': None. 'onnx': the tower, or QueryError when it cannot be exported or loaded. 'auto': the
    tower when possible, else None with a warning that names the reason.
    """
    if runtime == "torch":
        return None
    try:
        from engine.onnx import ExportSettings, OnnxTextTower, export_backbone

        export = export_backbone(backbone, cache_dir, ExportSettings(graphs=("text_embeds",)))
        return OnnxTextTower(export.path("text_embeds"))
    except Exception as e:  # noqa: BLE001 - any export/runtime failure means: fall back to PyTorch (or fail in 'onnx')
        if runtime == "onnx":
            raise QueryError(f"the ONNX text encoder is unavailable for backbone {backbone.id!r} ({e}); "
                             "set QueryConfig.text_runtime='torch' or 'auto' to use PyTorch") from e
        log.warning("text encoder: ONNX unavailable for %s (%s: %s); using PyTorch", backbone.id, type(e).__name__, e)
        return None
