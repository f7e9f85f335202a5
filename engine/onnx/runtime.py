"""ONNX Runtime sessions and the encoders that run on them.

Provider choice: CUDAExecutionProvider when onnxruntime-gpu is installed *and* torch sees a GPU,
else CPUExecutionProvider; the provider a session actually uses is logged.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    import torch

import numpy as np

log = logging.getLogger(__name__)

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


def select_providers(device: str = "auto") -> list[str]:
    """Providers for `device` ('auto', 'cpu', 'cuda'); 'cuda' without onnxruntime-gpu or a GPU is an error."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    gpu = CUDA in available and _torch_sees_gpu()
    if device == "cpu" or (device == "auto" and not gpu):
        return [CPU]
    if device in ("auto", "cuda"):
        if not gpu:
            why = "no GPU is visible" if CUDA in available else "onnxruntime has no CUDA provider"
            raise RuntimeError(
                f"ONNX device 'cuda' requested but {why}; "
                "install onnxruntime-gpu (pip install 'coinage[gpu]') on a GPU host, or use device 'auto'/'cpu'"
            )
        return [CUDA, CPU]
    raise ValueError(f"ONNX device {device!r} is not one of 'auto', 'cpu', 'cuda'")


def _torch_sees_gpu() -> bool:
    import torch  # only when onnxruntime-gpu is installed: CPU-only runs never import torch here

    return torch.cuda.is_available()


def create_session(path: str | Path, providers: Sequence[str] | None = None, threads: int | None = None,
                   spinning: bool = True):
    """An InferenceSession for `path` with full graph optimisation; logs the provider in use.

    `spinning=False` makes idle intra-op threads sleep instead of spin-waiting: on a shared or busy
    CPU (the indexer's decoder threads, other jobs) that measured ~15-20% faster for ViT-B/32
    batches on 2 threads (bench/indexing.py); spinning helps the latency of small, frequent calls.
    """
    import onnxruntime as ort

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX model {path} does not exist; export it with engine.onnx.export_backbone")
    options = ort.SessionOptions()
    # Full optimisation, except for fp16 files: onnxruntime 1.32's layout transforms (ORT_ENABLE_ALL)
    # crash the CPU provider with a segfault on our fp16 ViT graphs; EXTENDED keeps the fusions.
    fp16 = path.name.endswith(".fp16.onnx")
    options.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED if fp16
                                        else ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
    options.log_severity_level = 3  # errors only: ORT's own warnings go to stderr, not to Python's logging
    if threads:
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(path), sess_options=options, providers=list(providers or select_providers()))
    log.info("onnxruntime session %s: provider %s (of %s)", path.name, session.get_providers()[0],
             session.get_providers())
    return session


class _OnnxModel:
    def __init__(self, path: str | Path, providers: Sequence[str] | None = None, threads: int | None = None,
                 spinning: bool = True):
        self.path = Path(path)
        self.session = create_session(self.path, providers, threads, spinning)
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]

    @property
    def provider(self) -> str:
        """The execution provider the session runs on (first of its providers)."""
        return self.session.get_providers()[0]

    def _input_shape(self, index: int) -> list:
        return list(self.session.get_inputs()[index].shape)


class OnnxImageEncoder(_OnnxModel):
    """`image.onnx`: normalised pixels (B, 3, S, S) -> L2-normalised features (B, D), numpy in and out."""

    def __init__(self, path: str | Path, providers: Sequence[str] | None = None, threads: int | None = None,
                 spinning: bool = True):
        super().__init__(path, providers, threads, spinning)
        shape = self._input_shape(0)
        self.image_size = int(shape[-1])
        self.dim = int(self.session.get_outputs()[0].shape[-1])

    def encode(self, pixels: np.ndarray) -> np.ndarray:
        pixels = np.ascontiguousarray(pixels, dtype=np.float32)
        s = self.image_size
        if pixels.ndim != 4 or pixels.shape[1:] != (3, s, s):
            raise ValueError(
                f"OnnxImageEncoder.encode needs normalised pixels of shape (B, 3, {s}, {s}), got {pixels.shape}; "
                "preprocess with engine.images.ImageEncoder.pil_to_tensor + normalize"
            )
        if pixels.shape[0] == 0:
            return np.empty((0, self.dim), np.float32)
        return self.session.run(None, {self.input_names[0]: pixels})[0]

    __call__ = encode


class _OnnxTextBase(_OnnxModel):
    def _run(self, first: np.ndarray, eot_index, like):
        import torch

        eot = np.ascontiguousarray(
            eot_index.detach().cpu().numpy() if isinstance(eot_index, torch.Tensor) else eot_index, dtype=np.int64)
        if eot.ndim != 1 or eot.shape[0] != first.shape[0]:
            raise ValueError(f"eot_index must have shape (B,) = ({first.shape[0]},), got {eot.shape}")
        pooled, seq = self.session.run(None, {self.input_names[0]: first, self.input_names[1]: eot})
        device = like.device if like is not None else torch.device("cpu")
        dtype = like.dtype if like is not None and like.is_floating_point() else torch.float32
        return torch.from_numpy(pooled).to(device, dtype), torch.from_numpy(seq).to(device, dtype)


class OnnxTextTower(_OnnxTextBase):
    """`text_embeds.onnx` with the call contract of engine.text.TextTower (torch in, torch out, no grad).

    Swap it in for inference: `encoder.tower = OnnxTextTower(export_backbone(backbone).path("text_embeds"))`
    (engine.onnx.export).
    """

    def forward(self, embeddings: "torch.Tensor", eot_index: "torch.Tensor") -> tuple["torch.Tensor", "torch.Tensor"]:
        import torch

        shape = self._input_shape(0)
        if embeddings.ndim != 3 or list(embeddings.shape[1:]) != [int(d) for d in shape[1:]]:
            raise ValueError(f"OnnxTextTower needs embeddings of shape (B, {shape[1]}, {shape[2]}), "
                             f"got {tuple(embeddings.shape)}")
        x = np.ascontiguousarray(embeddings.detach().to("cpu", torch.float32).numpy())
        return self._run(x, eot_index, embeddings)

    __call__ = forward


class OnnxTextIds(_OnnxTextBase):
    """`text_ids.onnx`: token ids (B, L) int64 + eot_index (B,) -> (pooled, seq); no custom tokens."""

    def forward(self, ids: "torch.Tensor", eot_index: "torch.Tensor") -> tuple["torch.Tensor", "torch.Tensor"]:
        x = np.ascontiguousarray(ids.detach().cpu().numpy() if hasattr(ids, "detach") else ids, dtype=np.int64)
        if x.ndim != 2:
            raise ValueError(f"OnnxTextIds needs ids of shape (B, L), got {x.shape}")
        return self._run(x, eot_index, None)

    __call__ = forward
