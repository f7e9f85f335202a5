"""Shared helpers for benchmarks: what every result file starts with (benchmark, command, date, machine) and
writing it. Every benchmark runs as `coinage bench <name> ...` (bench/cli.py), so that is the command recorded."""
from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import shlex
from pathlib import Path
from typing import Any, Sequence

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict:
    import torch

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
            "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "load_average_1m_at_start": load,
            # BLAS threads are set outside the process (e.g. `OMP_NUM_THREADS=2 coinage bench store`); None: unset
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS")}


def command(name: str, argv: Sequence[str]) -> str:
    """The command line that reruns benchmark `name` with `argv` (its own arguments)."""
    return "coinage bench " + shlex.join([name, *argv])


def header(name: str, argv: Sequence[str], **machine_extra: Any) -> dict[str, Any]:
    """The first keys of every result file: benchmark, command, date (UTC) and machine (plus `machine_extra`)."""
    return {"benchmark": name, "command": command(name, argv),
            "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "machine": {**machine(), **machine_extra}}


def write_json(path: Path | str, doc: dict[str, Any], indent: int = 2) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=indent) + "\n")
    return path


def write_result(name: str, figures: dict, argv: Sequence[str], path: Path | str | None = None) -> Path:
    """header() + figures to `path` (default bench/results/<name>.json)."""
    return write_json(path or RESULTS / f"{name}.json", {**header(name, argv), **figures})
