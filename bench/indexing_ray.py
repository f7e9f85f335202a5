"""The bulk path on Ray Data against the in-process path, in the same run (`coinage bench indexing --ray-workers`).

For each catalog size (--ray-rows), a generated catalog (the demo catalog's rows repeated under new ids: it reuses
the demo's image files, so it measures the pipeline, not the disk) is indexed into a fresh embedded store by the
in-process path and by Ray Data with each --ray-workers count. Per run: rows/s of the ingest pass (report.seconds:
Ray's start-up and the backbone load excluded, reported apart), the peak RSS of the driver and of the largest Ray
worker process, sampled every 0.2 s, and their peak USS (memory private to the process, sampled every 2 s: a Ray
worker's RSS also counts the pages of Ray's shared object store it has read, which grow with the data streamed
through it up to the store's size, not with what the process holds). Memory flat in the catalog size is the
bounded-memory check; the load average is recorded because the machine is shared.
"""
from __future__ import annotations

import json
import os
import shutil
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
    """Samples the RSS of this process (the driver) and of every Ray worker process until stopped; worker peaks
    are kept per role too (the process title: "ray::MapBatches(Embed)", "ray::StoreHost", "ray::IDLE", ...), so the
    store actor, which holds the embedded collection and grows with it, is told apart from the pipeline stages."""

    def __init__(self, workers: bool, interval_s: float = 0.2, uss_every: int = 10):
        self.workers = workers  # sample Ray worker processes too (off for the in-process path)
        self.interval_s = interval_s
        self.uss_every = uss_every  # USS (reads /proc/<pid>/smaps: slower) every this many samples
        self.driver = self.driver_uss = 0
        self.worker = self.worker_uss = 0
        self.roles: dict[str, int] = {}
        self.roles_uss: dict[str, int] = {}
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
        tick = 0
        while not self._stop.is_set():
            uss = tick % self.uss_every == 0
            tick += 1
            self.driver = max(self.driver, me.memory_info().rss)
            if uss:
                self.driver_uss = max(self.driver_uss, _uss(me))
            for p in psutil.process_iter(["cmdline", "memory_info"]) if self.workers else ():
                cmd = p.info["cmdline"] or []
                if cmd and cmd[0].startswith("ray::") and p.info["memory_info"] is not None:
                    rss = p.info["memory_info"].rss
                    self.worker = max(self.worker, rss)
                    role = cmd[0].split(" ")[0]
                    self.roles[role] = max(self.roles.get(role, 0), rss)
                    if uss:
                        private = _uss(p)
                        self.worker_uss = max(self.worker_uss, private)
                        self.roles_uss[role] = max(self.roles_uss.get(role, 0), private)
            self._stop.wait(self.interval_s)


def _uss(process) -> int:
    """The process's unique set size (0 when it ended or cannot be read)."""
    import psutil

    try:
        return process.memory_full_info().uss
    except (psutil.Error, OSError):
        return 0


def run_once(catalog: Path, store_dir: Path, workers: int, args) -> dict[str, Any]:
    from engine.store import StoreConfig
    from indexer.config import IndexerConfig
    from indexer.pipeline import run_index

    store = (StoreConfig(backend="server", url=f"local:{store_dir}")
             if args.ray_store == "server-local" else StoreConfig(path=str(store_dir)))
    cfg = IndexerConfig(catalog=catalog, backbone=args.ray_backbone, store=store,
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
            "driver_peak_uss_mb": round(peak.driver_uss / 2**20, 1),
            "worker_peak_uss_mb": round(peak.worker_uss / 2**20, 1),
            "worker_peak_rss_mb_by_role": {k: round(v / 2**20, 1) for k, v in sorted(peak.roles.items())},
            "worker_peak_uss_mb_by_role": {k: round(v / 2**20, 1) for k, v in sorted(peak.roles_uss.items())},
            "load_average_before": load_before, "load_average_after": os.getloadavg(),
            "stage_seconds": {k: round(v, 2) for k, v in report.stage_seconds.items()}}


def bench_ray(args, work: Path, demo: Path, save: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """Every run of --ray-rows x (in process, --ray-workers), then --in-process-rows in process only; `save(result)`
    after each, so a cut-short bench keeps what it measured."""
    result = {"backbone": args.ray_backbone, "device": args.device, "batch": args.batch,
              "store": args.ray_store,
              "catalog": "generated: the demo catalog's rows repeated under new ids, reusing its 64-px image files",
              "runs": []}
    first = [0] if args.in_process else []  # --no-in-process: Ray runs only
    sizes = [(rows, [*first, *args.ray_workers]) for rows in args.ray_rows]
    sizes += [(rows, [0]) for rows in args.in_process_rows]
    for rows, paths in sizes:
        catalog = generated_catalog(demo, rows, work / f"generated-{rows}.jsonl")
        for workers in paths:
            result["runs"].append(run_once(catalog, work / f"store-{rows}-{workers}", workers, args))
            shutil.rmtree(work / f"store-{rows}-{workers}", ignore_errors=True)
            result["memory_trend"] = memory_trend(result["runs"])
            print(json.dumps(result["runs"][-1]), flush=True)
            save(result)
        catalog.unlink()
    return result


def memory_trend(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per path: peak RSS at each catalog size and the ratio largest / smallest size (flat memory: about 1)."""
    trend: dict[str, Any] = {}
    for path in dict.fromkeys(r["path"] for r in runs):
        mine = sorted((r for r in runs if r["path"] == path), key=lambda r: r["rows"])
        entry = {"rows": [r["rows"] for r in mine]}
        for key in ("driver_peak_rss_mb", "worker_peak_rss_mb", "driver_peak_uss_mb", "worker_peak_uss_mb"):
            entry[key] = [r.get(key) for r in mine]
        if len(mine) > 1:
            entry["rows_ratio"] = round(mine[-1]["rows"] / mine[0]["rows"], 1)
            entry["driver_ratio"] = round(mine[-1]["driver_peak_rss_mb"] / mine[0]["driver_peak_rss_mb"], 2)
            if mine[0]["worker_peak_rss_mb"]:
                entry["worker_ratio"] = round(mine[-1]["worker_peak_rss_mb"] / mine[0]["worker_peak_rss_mb"], 2)
            if mine[0].get("worker_peak_uss_mb") and mine[-1].get("worker_peak_uss_mb"):
                entry["worker_uss_ratio"] = round(mine[-1]["worker_peak_uss_mb"] / mine[0]["worker_peak_uss_mb"], 2)
        trend[path] = entry
    return trend
