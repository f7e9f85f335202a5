"""Custom-token training: joint diffusion + classification losses with attribute-subspace projection.

Public API: `train_concept(request, progress=None, cancel=None) -> TrainResult` with a
`TrainRequest` (images, parent word, attributes, `TrainConfig`), `request_from_registry` for
registered concepts, and `METHODS` (prompt-tuning, textual-inversion, ti+ce, ti+ce+proj).
"""
from .config import DEFAULT_TEMPLATES, METHODS, HeldOut, MethodSpec, TrainConfig, TrainingError, TrainRequest
from .job import TrainResult, request_from_registry, train_concept

__all__ = ["DEFAULT_TEMPLATES", "METHODS", "HeldOut", "MethodSpec", "TrainConfig", "TrainRequest", "TrainResult",
           "TrainingError", "request_from_registry", "train_concept"]
