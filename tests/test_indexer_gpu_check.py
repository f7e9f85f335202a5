"""bench/gpu_check.sh, the script a GPU host runs first, still matches the CLI: every `coinage.cli bench NAME ...`
line in it parses with that benchmark's own argument parser (a renamed flag fails here, not on the GPU host)."""
from __future__ import annotations

import importlib
import re
import shlex
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _bench_lines() -> list[list[str]]:
    text = (ROOT / "bench" / "gpu_check.sh").read_text().replace("\\\n", " ")
    lines = [line for line in text.splitlines() if "coinage.cli bench " in line]
    values = {'"$DIR"': "var/sd15-random", '"$(nproc)"': "16", '"$OUT/': '"out/'}
    for old, new in values.items():
        lines = [line.replace(old, new) for line in lines]
    return [shlex.split(line.split("coinage.cli bench ", 1)[1]) for line in lines]


def test_every_bench_line_of_gpu_check_parses_with_its_benchmark():
    lines = _bench_lines()
    assert {line[0] for line in lines} == {"realsize", "indexing"}
    for name, *argv in lines:
        args = importlib.import_module(f"bench.{name}").parse_args(argv)
        assert args.device == "cuda", name
    indexing = next(argv for name, *argv in lines if name == "indexing")
    args = importlib.import_module("bench.indexing").parse_args(indexing)
    assert args.ray_workers == [1] and args.only_ray and re.search(r"cuda", str(args.out))
