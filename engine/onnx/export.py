"""Export a backbone's CLIP encoders to ONNX, check parity with PyTorch, and cache the result.

Three graphs, all with a dynamic batch axis (text length is the backbone's fixed context length):

    image.onnx        pixels (B, 3, S, S) float32, normalised    -> features (B, D), L2-normalised
    text_embeds.onnx  embeddings (B, L, W) float32, eot_index (B,) -> pooled (B, D), seq (B, L, W)
    text_ids.onnx     ids (B, L) int64, eot_index (B,)             -> pooled (B, D), seq (B, L, W)

The cache directory holds one folder per key, `<cache_dir>/<key>/`, where the key hashes the
backbone id, a hash of the CLIP weights, the export settings (opset, optimiser) and the torch version:
change any of them and the next call exports again. Graphs are exported on demand into that
folder, each built in a temporary sub-folder, parity-checked, moved in, and recorded in
`<graph>.json` last: a graph without its record is incomplete (a killed export) and is redone.
Every graph is checked against PyTorch on random inputs (relative error < 1e-4 in fp32) before
it is kept.
"""
from __future__ import annotations

import contextlib
import copy
import hashlib
import inspect
import io
import json
import logging
import os
import shutil
import time
import uuid
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engine.errors import CoinageError
from engine.text import TextTower

from .modules import ImageFeatures, TextIds
from .runtime import create_session

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
GRAPHS = ("image", "text_embeds", "text_ids")
CACHE_ENV = "COINAGE_ONNX_CACHE"
DEFAULT_CACHE_DIR = "var/onnx"

_IO = {  # graph -> (input names, output names)
    "image": (["pixels"], ["features"]),
    "text_embeds": (["embeddings", "eot_index"], ["pooled", "seq"]),
    "text_ids": (["ids", "eot_index"], ["pooled", "seq"]),
}


class OnnxExportError(CoinageError):
    """An export failed, or its outputs differ from PyTorch beyond the parity tolerance."""


@dataclass(frozen=True)
class ExportSettings:
    """How to export. `opset` and `optimize` enter the cache key; `graphs` picks what goes into the keyed folder."""

    opset: int = 18  # ONNX opset of the exported graphs (the dynamo exporter needs >= 18)
    optimize: bool = True  # run onnxscript's graph optimiser after export (constant folding, pattern rewrites)
    graphs: tuple[str, ...] = GRAPHS  # which graphs to export (see module docstring)
    parity_tolerance: float = 1e-4  # largest relative error ||ort - torch|| / ||torch|| accepted (fp32)
    parity_batch: int = 3  # batch of the random parity inputs (not the export's 2: checks the dynamic axis)
    seed: int = 0  # seed of the random parity inputs

    def __post_init__(self) -> None:
        unknown = set(self.graphs) - set(GRAPHS)
        if unknown or not self.graphs:
            raise ValueError(f"ExportSettings.graphs={self.graphs!r}: choose a non-empty subset of {GRAPHS}")
        if self.opset < 18:
            raise ValueError(f"ExportSettings.opset={self.opset}: the torch.export-based exporter needs opset >= 18")

    def key_fields(self) -> dict[str, Any]:
        return {"opset": self.opset, "optimize": self.optimize}


@dataclass
class OnnxExport:
    """A complete export folder and what its manifest says about it."""

    directory: Path  # <cache_dir>/<key>
    key: str  # cache key (hex)
    manifest: dict[str, Any] = field(default_factory=dict)  # contents of manifest.json
    cache_hit: bool = False  # True when this call found the folder instead of exporting

    def path(self, graph: str, variant: str = "fp32") -> Path:
        """File of `graph` ('image', 'text_embeds', 'text_ids') in `variant` ('fp32', 'int8', 'fp16')."""
        if graph not in self.manifest.get("graphs", {}):
            raise KeyError(f"graph {graph!r} was not exported into {self.directory} "
                           f"(exported: {sorted(self.manifest.get('graphs', {}))}); "
                           f"export it with ExportSettings(graphs=(..., {graph!r}))")
        return self.directory / variant_filename(graph, variant)


def variant_filename(graph: str, variant: str = "fp32") -> str:
    return f"{graph}.onnx" if variant == "fp32" else f"{graph}.{variant}.onnx"


def default_cache_dir() -> Path:
    """$COINAGE_ONNX_CACHE, else var/onnx under the working directory."""
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE_DIR)


def weights_hash(module: torch.nn.Module) -> str:
    """sha256 over every parameter and buffer (name, dtype, shape, bytes), in state-dict order."""
    h = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


def cache_key(backbone, settings: ExportSettings, weights: str | None = None) -> tuple[str, dict[str, Any]]:
    """(key, the fields it hashes) for a backbone and settings."""
    fields = {
        "format": FORMAT_VERSION,
        "backbone": backbone.id,
        "weights_sha256": weights or weights_hash(backbone.clip),
        "cond_layer": backbone.config.cond_layer,
        "image_size": backbone.image_size,
        "context_length": backbone.context_length,
        "settings": settings.key_fields(),
        "torch": torch.__version__.split("+")[0],
    }
    digest = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:20]
    safe_id = "".join(c if c.isalnum() or c in "-_." else "_" for c in backbone.id.split("/")[-1])[:40]
    return f"{safe_id}-{digest}", fields


def export_backbone(backbone, cache_dir: str | Path | None = None,
                    settings: ExportSettings | None = None) -> OnnxExport:
    """The cached export of `backbone` (the graphs `settings.graphs` names), exporting what is missing.

    Each graph is exported, parity-checked and kept on its own, so a caller that needs only the image
    encoder (the indexer) does not pay for the text graphs, and one that needs them later adds them
    to the same folder.
    """
    settings = settings or ExportSettings()
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    key, fields = cache_key(backbone, settings)
    folder = root / key
    folder.mkdir(parents=True, exist_ok=True)
    manifest = _folder_manifest(folder, key, fields)
    graphs: dict[str, Any] = {}
    exported = []
    clip = modules = None
    for graph in settings.graphs:
        info = _read_graph(folder, graph)
        if info is None:
            if modules is None:
                clip = _cpu_fp32(backbone)
                modules = _modules(clip, backbone.config.cond_layer)
            info = _build_graph(backbone, clip, modules[graph], graph, settings, folder)
            exported.append(graph)
        graphs[graph] = info
    for graph in GRAPHS:  # also list graphs exported earlier by other callers
        if graph not in graphs and (info := _read_graph(folder, graph)) is not None:
            graphs[graph] = info
    if exported:
        log.info("onnx export of %s written to %s", ", ".join(exported), folder)
    else:
        log.info("onnx export cache hit: %s (%s)", folder, ", ".join(settings.graphs))
    return OnnxExport(folder, key, {**manifest, "graphs": graphs}, cache_hit=not exported)


def _folder_manifest(folder: Path, key: str, fields: dict[str, Any]) -> dict[str, Any]:
    path = folder / MANIFEST
    try:
        manifest = json.loads(path.read_text())
        if manifest.get("key") == key:
            return manifest
    except (OSError, ValueError):
        pass
    manifest = {"key": key, **fields, "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    _write_json(path, manifest)
    return manifest


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, path)  # readers see the old file or the new one, never half of one


def _read_graph(folder: Path, graph: str) -> dict[str, Any] | None:
    """The graph's record if its export is complete (record written last), else None."""
    path = folder / f"{graph}.json"
    if not path.is_file():
        return None
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        log.warning("unreadable %s (%s); exporting %s again", path, e, graph)
        return None
    if not all((folder / f).is_file() for f in info.get("files", [])) or not info.get("files"):
        log.warning("files of %s are missing in %s; exporting it again", graph, folder)
        return None
    return info


def _cpu_fp32(backbone) -> torch.nn.Module:
    clip = backbone.clip
    param = next(clip.parameters())
    if param.device.type == "cpu" and param.dtype == torch.float32:
        return clip
    return copy.deepcopy(clip).to("cpu", torch.float32)


def _modules(clip: torch.nn.Module, cond_layer: str) -> dict[str, torch.nn.Module]:
    tower = TextTower(clip, cond_layer).eval()
    return {"image": ImageFeatures(clip).eval(), "text_embeds": tower, "text_ids": TextIds(tower).eval()}


def random_inputs(graph: str, clip: torch.nn.Module, image_size: int, batch: int,
                  generator: torch.Generator) -> tuple[torch.Tensor, ...]:
    """Random inputs of the right shapes and realistic scale for one graph."""
    if graph == "image":
        return (torch.randn(batch, 3, image_size, image_size, generator=generator),)
    table = clip.token_embedding.weight
    length = int(clip.positional_embedding.shape[0])
    ids = torch.randint(0, table.shape[0], (batch, length), generator=generator)
    eot = torch.randint(1, length, (batch,), generator=generator)
    if graph == "text_ids":
        return ids, eot
    embeddings = table.detach()[ids]
    # a few rows that are no row of the table: what a custom token looks like
    custom = torch.randn(batch, 3, table.shape[1], generator=generator) * table.detach().std()
    embeddings[:, 1:4] = custom
    return embeddings, eot


def _build_graph(backbone, clip: torch.nn.Module, module: torch.nn.Module, graph: str,
                 settings: ExportSettings, folder: Path) -> dict[str, Any]:
    """Export one graph into a temporary folder, check parity, then move it in (record last)."""
    import onnx
    import onnxruntime

    gen = torch.Generator().manual_seed(settings.seed)
    tmp = folder / f".tmp-{graph}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        t0 = time.perf_counter()
        path = tmp / variant_filename(graph)
        _export(module, random_inputs(graph, clip, backbone.image_size, 2, gen), path, graph, settings)
        errors = parity(module, path, random_inputs(graph, clip, backbone.image_size, settings.parity_batch, gen))
        if not max(errors.values()) < settings.parity_tolerance:
            raise OnnxExportError(
                f"ONNX export of {graph!r} for backbone {backbone.id!r} differs from PyTorch: relative errors "
                f"{errors} exceed {settings.parity_tolerance}; keep the PyTorch encoder (--no-onnx) and report "
                "the torch/onnxruntime versions"
            )
        files = sorted((p.name for p in tmp.iterdir()), key=lambda n: n == path.name)  # model file last
        for name in files:
            os.replace(tmp / name, folder / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    names_in, names_out = _IO[graph]
    info = {
        "graph": graph, "file": path.name, "files": files, "inputs": names_in, "outputs": names_out,
        "opset": settings.opset, "optimize": settings.optimize,
        "parity_rel_error": errors, "parity_tolerance": settings.parity_tolerance,
        "embed_dim": backbone.embed_dim, "text_width": backbone.text_width,
        "versions": {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__},
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "export_seconds": round(time.perf_counter() - t0, 3),
    }
    _write_json(folder / f"{graph}.json", info)
    log.info("exported %s in %.1f s: parity relative errors %s", graph, info["export_seconds"], errors)
    return info


def _export(module: torch.nn.Module, example: tuple[torch.Tensor, ...], path: Path, graph: str,
            settings: ExportSettings) -> None:
    names_in, names_out = _IO[graph]
    batch = torch.export.Dim("batch", min=1, max=1 << 16)
    arg_names = list(inspect.signature(module.forward).parameters)[:len(example)]
    dynamic = {name: {0: batch} for name in arg_names}
    captured = io.StringIO()
    try:
        # the exporter prints its progress to stdout; keep it for the error message instead
        with torch.no_grad(), contextlib.redirect_stdout(captured), warnings.catch_warnings():
            # both inputs share the one batch Dim on purpose; the exporter notes it keeps a single name
            warnings.filterwarnings("ignore", message=r"# The axis name: batch will not be used")
            torch.onnx.export(module, example, str(path), dynamo=True, input_names=names_in,
                              output_names=names_out, dynamic_shapes=dynamic, opset_version=settings.opset,
                              external_data=True, optimize=settings.optimize, verbose=False)
    except Exception as e:  # the exporter raises many unrelated types; all mean "this graph did not export"
        raise OnnxExportError(
            f"torch.onnx.export failed for the {graph!r} graph: {type(e).__name__}: {e}\n{captured.getvalue()[-2000:]}"
            "\nUse the PyTorch encoders (--no-onnx) for this backbone"
        ) from e


def parity(module: torch.nn.Module, path: Path, inputs: tuple[torch.Tensor, ...]) -> dict[str, float]:
    """Relative error of each output of the ONNX file (CPU) against the torch module on `inputs`."""
    session = create_session(path, providers=["CPUExecutionProvider"])
    feeds = {i.name: t.numpy() for i, t in zip(session.get_inputs(), inputs)}
    outs = session.run(None, feeds)
    with torch.no_grad():
        ref = module(*inputs)
    ref = ref if isinstance(ref, tuple) else (ref,)
    return {o.name: relative_error(out, r.numpy()) for o, out, r in zip(session.get_outputs(), outs, ref)}


def relative_error(value: np.ndarray, reference: np.ndarray) -> float:
    """||value - reference|| / ||reference|| (Frobenius), in float64."""
    value = np.asarray(value, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    denom = float(np.linalg.norm(reference))
    return float(np.linalg.norm(value - reference) / denom) if denom else float(np.linalg.norm(value))
