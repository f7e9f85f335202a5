"""bench/load.py at a tiny size (slow): gunicorn on loopback, idle and busy searches, zero errors."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_load_bench_runs_gunicorn_and_reports_figures_without_errors(tmp_path):
    sys.path.insert(0, str(ROOT))
    from bench.load import main

    out = tmp_path / "load.json"
    main(["--products", "30", "--idle-requests", "60", "--busy-requests", "5000", "--train-steps", "5",
          "--max-seconds", "240", "--out", str(out)])
    result = json.loads(out.read_text())
    assert result["benchmark"] == "load" and "--workers" in result["deployment"]["server"]
    assert result["idle"]["errors"] == 0 and result["busy"]["errors"] == 0, result["error_samples"]
    assert result["jobs"] == {"reindex": result["jobs"]["reindex"], "train": result["jobs"]["train"]}
    assert {j["status"] for j in result["jobs"].values()} == {"done"}
    for phase in ("idle", "busy"):
        assert result[phase]["p50_ms"] <= result[phase]["p95_ms"] <= result[phase]["p99_ms"]
