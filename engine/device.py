"""Device and dtype selection: CUDA when present, else CPU; half precision only on GPU."""
from __future__ import annotations

import torch

_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def select_device(preference: str = "auto") -> torch.device:
    """`auto` picks CUDA if available, else CPU. `cuda` without a GPU is an error naming the fix."""
    if preference == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(preference)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            "device 'cuda' was requested but no CUDA GPU is visible to torch; "
            "use device 'auto' or 'cpu', or install the CUDA build of torch on a GPU host"
        )
    return device


def select_dtype(device: torch.device, preference: str = "auto") -> torch.dtype:
    """`auto`: fp32 on CPU; bf16 on GPUs that support it, else fp16. Half precision on CPU is refused."""
    if preference == "auto":
        if device.type != "cuda":
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if preference not in _DTYPES:
        raise ValueError(f"dtype {preference!r} is not one of {sorted(_DTYPES)} or 'auto'")
    dtype = _DTYPES[preference]
    if device.type == "cpu" and dtype is not torch.float32:
        raise ValueError(f"dtype {preference} on CPU is slow and inexact here; use 'fp32' or 'auto' on CPU")
    return dtype
