"""The bulk path on Ray Data against the in-process path, in the same run (`coinage bench indexing --ray-workers`).

For each catalog size (--ray-rows), a generated catalog (the demo catalog's rows repeated under new ids: it reuses
the demo's image files, so it measures the pipeline, not the disk) is indexed into a fresh embedded store by the
in-process path and by Ray Data with each --ray-workers count. Per run: rows/s of the ingest pass (report.seconds:
Ray's start-up and the backbone load excluded, reported apart), the peak RSS of the driver and of the largest Ray
worker process, sampled every 0.2 s. Memory flat in the catalog size is the bounded-memory check; the load average
is recorded because the machine is shared.
"""
from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any, Callable


def generated_catalog(demo: Path, rows: int, out: Path) -> Path:
    """`rows` catalog rows cycling over the demo catalog's, each with its own id (g<n>) and product (g<n // 6>)."""
    base = [json.loads(line) for line in demo.read_text().splitlines()]
    with out.open("w") as f:
        for n in range(rows):
            row = dict(base[n % len(base)])
            row.update(id=f"g{n}", product_id=f"g{n // 6}", image=str(demo.parent / row["image"]))
            f.write(json.dumps(row) + "\n")
    return out


class PeakMemory:
    """Samples the RSS of this process (the driver) and of every Ray worker process until stopped."""

    def __init__(self, workers: bool, interval_s: float = 0.2):
        self.workers = workers  # sample Ray worker processes too (off for the in-process path)
        self.interval_s = interval_s
        self.driver = 0
        self.worker = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        import psutil

        me = psutil.Process()
        while not self._stop.is_set():
            self.driver = max(self.driver, me.memory_info().rss)
            for p in psutil.process_iter(["cmdline", "memory_info"]) if self.workers else ():
                cmd = p.info["cmdline"] or []
                if cmd and cmd[0].startswith("ray::") and p.info["memory_info"] is not None:
                    self.worker = max(self.worker, p.info["memory_info"].rss)
            self._stop.wait(self.interval_s)


def run_once(catalog: Path, store_dir: Path, workers: int, args) -> dict[str, Any]:
    from engine.store import StoreConfig
    from indexer.config import IndexerConfig
    from indexer.pipeline import run_index

    cfg = IndexerConfig(catalog=catalog, backbone=args.ray_backbone, store=StoreConfig(path=str(store_dir)),
                        batch_size=args.batch, ray_workers=workers, progress_bar=False, device=args.device,
                        rejects_path=store_dir.with_suffix(".rejects.jsonl"), onnx_cache=Path(args.onnx_cache),
                        threads=1 if workers else args.threads)
    load_before = os.getloadavg()
    start = time.perf_counter()
    with PeakMemory(workers > 0) as peak:
        report = run_index(cfg)
    return {"path": f"ray, {workers} workers" if workers else "in process", "rows": report.rows,
            "accepted": report.accepted, "rejected": report.rejected, "pass_s": round(report.seconds, 2),
            "rows_per_s": round(report.rate, 1), "total_s_with_startup": round(time.perf_counter() - start, 1),
            "driver_peak_rss_mb": round(peak.driver / 2**20, 1), "worker_peak_rss_mb": round(peak.worker / 2**20, 1),
            "load_average_before": load_before, "load_average_after": os.getloadavg(),
            "stage_seconds": {k: round(v, 2) for k, v in report.stage_seconds.items()}}


def bench_ray(args, work: Path, demo: Path, save: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """Every run of --ray-rows x (in process, --ray-workers); `save(result)` after each, so a cut-short bench
    keeps what it measured."""
    result = {"backbone": args.ray_backbone, "device": args.device, "batch": args.batch,
              "catalog": "generated: the demo catalog's rows repeated under new ids, reusing its 64-px image files",
              "runs": []}
    for rows in args.ray_rows:
        catalog = generated_catalog(demo, rows, work / f"generated-{rows}.jsonl")
        for workers in [0, *args.ray_workers]:
            result["runs"].append(run_once(catalog, work / f"store-{rows}-{workers}", workers, args))
            print(json.dumps(result["runs"][-1]), flush=True)
            save(result)
    return result
