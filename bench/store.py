"""Benchmark the embedded vector-store candidates on CLIP-like vectors.

    OMP_NUM_THREADS=2 coinage bench store [--n 100000] [--dim 512] [--queries 200] [--out bench/results/store.json]
    OMP_NUM_THREADS=2 coinage bench store --scale 100000,250000,500000 --dim 768   # -> bench/results/store_scale.json

Candidates, each at n x dim:
- qdrant_local: qdrant-client local mode (QdrantClient(path=...)), pure-Python brute force.
- qdrant_edge: qdrant-edge-py (Qdrant's engine in-process) through its raw binding: upsert
  rate and exact-scan latency before an index exists.
- chosen: our EmbeddedStore (qdrant-edge) through the VectorStore interface, StoreConfig
  defaults (Qdrant's default HNSW m=16, ef_construct=100; ef=256 since the 1M run, 128 before; filters matching < 20k
  points scored exactly): upsert, HNSW build, queries, close/reopen, then the same graph
  reopened with other search-time settings (SWEEP).
Baseline (same run, same queries): exact numpy brute force; ratios are baseline p50 / p50.

Data: 200 cluster centres on the unit sphere sharing a common direction (CLIP embeddings are
anisotropic), points = centre + Gaussian noise, normalised; queries are fresh draws from the
same mixture. Payload: category (20 values, independent of the cluster) and price.
The filtered queries ask for 2 categories (match-any) and a price range (~5% of points).
Threads are capped at 2 (shared 2-core machines: BLAS by OMP_NUM_THREADS=2 from outside, since numpy
is loaded before any benchmark code runs; recorded as machine.omp_num_threads). Each timing is given as wall-clock and as
process CPU time (cpu_*): on a busy shared machine the wall-clock figures stretch, the CPU
figures much less; the load average at start and end is recorded.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import header, write_json
from engine.store import Filter, Point, StoreConfig, open_store

K = 10
N_CATEGORIES = 20
UPSERT_BATCH = 1000
EDGE_NOTE = ("raw binding: upsert rate and exact-scan latency before an index exists; its HNSW build, queries and "
             "search-time sweep are under 'chosen' (same engine, Qdrant's default m=16, ef_construct=100)")
# search-time settings tried on the built graph; exact_filter_below=0 forces filtered HNSW
SWEEP = [{"hnsw_ef": None}, {"hnsw_ef": 32}, {"hnsw_ef": 64}, {"hnsw_ef": 256},
         {"exact_filter_below": 0}, {"exact_filter_below": 0, "hnsw_ef": 512}]


@dataclass
class Elapsed:
    wall: float = 0.0  # seconds of wall-clock time
    cpu: float = 0.0  # seconds of CPU time of this process, all threads (robust to a busy shared machine)


@contextmanager
def clock() -> Iterator[Elapsed]:
    e = Elapsed()
    wall, cpu = time.perf_counter(), time.process_time()
    yield e
    e.wall, e.cpu = time.perf_counter() - wall, time.process_time() - cpu


def rate(n: int, e: Elapsed) -> dict[str, float]:
    return {"upsert_points_per_s": round(n / e.wall), "upsert_points_per_cpu_s": round(n / max(e.cpu, 1e-9))}


@dataclass
class Data:
    vectors: np.ndarray  # (n, dim) float32, unit norm
    ids: list[str]  # UUID strings, row order
    categories: np.ndarray  # (n,) int
    prices: np.ndarray  # (n,) float
    queries: np.ndarray  # (q, dim) float32, unit norm
    filters: list[Filter]  # one per query

    def payload(self, i: int) -> dict[str, Any]:
        return {"category": f"c{self.categories[i]:02d}", "price": float(self.prices[i])}

    def mask(self, flt: Filter) -> np.ndarray:
        cats = [int(c[1:]) for c in flt.must["category"]]
        lo, hi = flt.ranges["price"]
        return np.isin(self.categories, cats) & (self.prices >= lo) & (self.prices <= hi)


def make_data(n: int, dim: int, n_queries: int, centres: int, spread: float, seed: int) -> Data:
    rng = np.random.default_rng(seed)
    common = rng.standard_normal(dim)
    common /= np.linalg.norm(common)
    c = rng.standard_normal((centres, dim))
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    c = 0.5 * common + c
    c /= np.linalg.norm(c, axis=1, keepdims=True)

    def draw(k: int) -> np.ndarray:
        which = rng.integers(0, centres, k)
        out = np.empty((k, dim), np.float32)
        for i in range(0, k, 100_000):  # in chunks (the same draws as one call): 1M x 768 in float64 is 6 GB
            j = min(k, i + 100_000)
            x = c[which[i:j]] + rng.standard_normal((j - i, dim)) * (spread / np.sqrt(dim))
            out[i:j] = x / np.linalg.norm(x, axis=1, keepdims=True)
        return out

    vectors, queries = draw(n), draw(n_queries)
    filters = []
    for i in range(n_queries):
        a, b = i % N_CATEGORIES, (i * 7 + 3) % N_CATEGORIES
        cats = sorted({f"c{a:02d}", f"c{b:02d}"})  # a != b: 6i + 3 is odd, never 0 mod 20
        filters.append(Filter(must={"category": cats}, ranges={"price": (100.0, 600.0)}))
    return Data(
        vectors=vectors,
        ids=[str(uuid.UUID(int=i + 1)) for i in range(n)],
        categories=rng.integers(0, N_CATEGORIES, n),
        prices=np.round(rng.uniform(1.0, 1000.0, n), 2),
        queries=queries,
        filters=filters,
    )


def exact_topk(data: Data, flt: bool) -> tuple[list[list[int]], list[Elapsed]]:
    """Ground truth and the numpy brute-force baseline latencies (one query at a time)."""
    out, lat = [], []
    for qi, q in enumerate(data.queries):
        with clock() as e:
            scores = data.vectors @ q
            if flt:
                scores = np.where(data.mask(data.filters[qi]), scores, -np.inf)
            top = np.argpartition(-scores, K)[:K]
            top = top[np.argsort(-scores[top])]
        lat.append(e)
        out.append([int(i) for i in top if np.isfinite(scores[i])])
    return out, lat


def stats(lat: Sequence[Elapsed]) -> dict[str, float]:
    wall = np.asarray([e.wall for e in lat]) * 1000.0
    cpu = np.asarray([e.cpu for e in lat]) * 1000.0
    return {"p50_ms": round(float(np.percentile(wall, 50)), 3), "p95_ms": round(float(np.percentile(wall, 95)), 3),
            "mean_ms": round(float(wall.mean()), 3),
            "cpu_p50_ms": round(float(np.percentile(cpu, 50)), 3),
            "cpu_p95_ms": round(float(np.percentile(cpu, 95)), 3)}


def recall(found: list[list[int]], truth: list[list[int]]) -> float:
    hits = sum(len(set(f) & set(t)) for f, t in zip(found, truth, strict=True))
    return round(hits / max(1, sum(len(t) for t in truth)), 4)


def measure_queries(name: str, search: Callable[[int, bool], list[int]], data: Data, truth: dict[str, Any],
                    baseline: dict[str, dict[str, float]], n_queries: int | None = None) -> dict[str, Any]:
    n_queries = len(data.queries) if n_queries is None else min(n_queries, len(data.queries))
    result: dict[str, Any] = {}
    for flt in (False, True):
        key = "filtered" if flt else "unfiltered"
        found, lat = [], []
        for qi in range(n_queries):
            with clock() as e:
                found.append(search(qi, flt))
            lat.append(e)
        s = stats(lat)
        result[key] = {**s, "recall_at_10": recall(found, truth[key][:n_queries]), "queries": n_queries,
                       "speedup_vs_numpy_p50": round(baseline[key]["p50_ms"] / s["p50_ms"], 2),
                       "speedup_vs_numpy_cpu_p50": round(baseline[key]["cpu_p50_ms"] / max(s["cpu_p50_ms"], 1e-3), 2)}
        log(f"  {name} {key}: {result[key]}")
    return result


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --- candidates ------------------------------------------------------------------------


Baseline = dict[str, dict[str, float]]


def bench_local(data: Data, workdir: Path, truth: dict[str, Any], baseline: Baseline,
                upsert_sample: int, n_queries: int) -> dict[str, Any]:
    """Local mode commits to SQLite once per point (fsync), far too slow to load 100k here, so:
    the upsert rate is timed in path mode on a sample, and the queries run on the in-memory
    engine loaded with every point (search is the same LocalCollection code either way)."""
    from qdrant_client import QdrantClient, models

    from engine.store.server import to_qdrant_filter

    dim = data.vectors.shape[1]

    def load(client: QdrantClient, rows: range) -> Elapsed:
        client.create_collection("bench", vectors_config=models.VectorParams(size=dim, distance=models.Distance.COSINE))
        with clock() as e:
            for i in range(rows.start, rows.stop, UPSERT_BATCH):
                client.upsert("bench", points=[
                    models.PointStruct(id=data.ids[j], vector=data.vectors[j].tolist(), payload=data.payload(j))
                    for j in range(i, min(rows.stop, i + UPSERT_BATCH))])
        return e

    sample = min(upsert_sample, len(data.ids))
    on_disk = QdrantClient(path=str(workdir / "local"))
    path_rate = rate(sample, load(on_disk, range(sample)))
    on_disk.close()
    log(f"  qdrant_local (path) {path_rate} on {sample} points")
    client = QdrantClient(location=":memory:")
    memory_rate = rate(len(data.ids), load(client, range(len(data.ids))))
    log(f"  qdrant_local (memory) {memory_rate}")
    row = {pid: j for j, pid in enumerate(data.ids)}

    def search(qi: int, flt: bool) -> list[int]:
        res = client.query_points("bench", query=data.queries[qi].tolist(), limit=K,
                                  query_filter=to_qdrant_filter(data.filters[qi]) if flt else None)
        return [row[str(p.id)] for p in res.points]

    result = {**path_rate, "upsert_measured_on": sample,
              "in_memory_no_persistence": memory_rate, "index_build_s": 0.0,
              "note": "upsert timed in path mode on a sample (one SQLite commit per point); queries on the "
                      "in-memory engine holding all points (same brute-force search code)",
              **measure_queries("qdrant_local", search, data, truth, baseline, n_queries)}
    client.close()
    return result


def bench_edge(data: Data, workdir: Path, truth: dict[str, Any], baseline: Baseline) -> dict[str, Any]:
    """The raw binding: upsert rate, and exact-scan latency before any index exists. Its HNSW
    build and ef sweep are measured once, through our interface, in bench_chosen (same engine,
    same parameters: Qdrant's defaults m=16, ef_construct=100), to build the graph only once."""
    import qdrant_edge as qe

    from engine.store.edge_convert import to_edge_filter

    dim = data.vectors.shape[1]
    config = qe.EdgeConfig(vectors=qe.EdgeVectorParams(size=dim, distance=qe.Distance.Cosine), max_search_threads=2)
    shard = qe.EdgeShard.create(str(workdir / "edge"), config)
    shard.update(qe.UpdateOperation.create_field_index("category", qe.PayloadSchemaType.Keyword))
    shard.update(qe.UpdateOperation.create_field_index("price", qe.PayloadSchemaType.Float))
    with clock() as e:
        for i in range(0, len(data.ids), UPSERT_BATCH):
            rows = range(i, min(len(data.ids), i + UPSERT_BATCH))
            shard.update(qe.UpdateOperation.upsert_points(
                [qe.Point(data.ids[j], data.vectors[j], data.payload(j)) for j in rows]))
    log(f"  qdrant_edge {rate(len(data.ids), e)}")
    row = {pid: j for j, pid in enumerate(data.ids)}

    def search(qi: int, flt: bool) -> list[int]:
        res = shard.query(qe.QueryRequest(limit=K, query=qe.Query.Nearest(data.queries[qi]),
                                          filter=to_edge_filter(data.filters[qi]) if flt else None))
        return [row[str(p.id)] for p in res]

    result = {**rate(len(data.ids), e), "note": EDGE_NOTE,
              "before_index_exact_scan": measure_queries("qdrant_edge (no index)", search, data, truth, baseline)}
    shard.close()
    return result


def fill_and_index(store: Any, data: Data, label: str) -> tuple[Elapsed, Elapsed]:
    """Create collection 'bench' with the payload indexes, upsert every point in batches, build the HNSW graph."""
    store.create_collection("bench", data.vectors.shape[1], payload_indexes={"category": "keyword", "price": "float"})
    with clock() as up:
        for i in range(0, len(data.ids), UPSERT_BATCH):
            rows = range(i, min(len(data.ids), i + UPSERT_BATCH))
            store.upsert("bench", [Point(data.ids[j], data.vectors[j], data.payload(j)) for j in rows])
    log(f"  {label} {rate(len(data.ids), up)}")
    with clock() as build:
        store.optimize("bench")
    log(f"  {label} HNSW build {build.wall:.1f} s wall, {build.cpu:.1f} s cpu")
    return up, build


def bench_chosen(data: Data, workdir: Path, truth: dict[str, Any], baseline: Baseline,
                 sweep: Sequence[dict[str, Any]]) -> dict[str, Any]:
    config = StoreConfig(backend="embedded", path=str(workdir / "store"))
    store = open_store(config)
    up, build = fill_and_index(store, data, "chosen")
    store.set_alias("live", "bench")
    row = {pid: j for j, pid in enumerate(data.ids)}

    def searcher(s: Any) -> Callable[[int, bool], list[int]]:
        def search(qi: int, flt: bool) -> list[int]:
            hits = s.search("live", data.queries[qi], limit=K, filter=data.filters[qi] if flt else None)
            return [row[h.id] for h in hits]
        return search

    result: dict[str, Any] = {
        "backend": "embedded (qdrant-edge-py) via engine.store.open_store",
        "params": {"m": config.hnsw_m, "ef_construct": config.hnsw_ef_construct, "ef": config.hnsw_ef,
                   "exact_filter_below": config.exact_filter_below, "threads": config.threads},
        **rate(len(data.ids), up), "index_build_s": round(build.wall, 1), "index_build_cpu_s": round(build.cpu, 1),
        **measure_queries(f"chosen ef={config.hnsw_ef}", searcher(store), data, truth, baseline),
    }
    with clock() as reopen:
        store.close()
        store = open_store(config)
        result["count_after_reopen"] = store.count("live")
    result["close_reopen_count_s"] = round(reopen.wall, 2)
    store.close()
    result["sweep"] = {}
    for overrides in sweep:  # the same graph, reopened with other search-time settings
        label = ",".join(f"{k}={v}" for k, v in overrides.items())
        with open_store(dataclasses.replace(config, **overrides)) as s:
            result["sweep"][label] = measure_queries(f"chosen {label}", searcher(s), data, truth, baseline)
    return result


# --- scale: the embedded store at catalog sizes, int8 quantization vs fp32 -----------------------------------------


def rss_bytes() -> int:
    """Resident set size of this process (Linux /proc), bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status: the scale benchmark measures memory on Linux only")


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def scale_build(data: Data, workdir: Path, quantization: str) -> tuple[StoreConfig, dict[str, Any]]:
    """Create, upsert and index one collection with StoreConfig defaults but `quantization`; timings."""
    config = StoreConfig(backend="embedded", path=str(workdir / f"store-{quantization}"), quantization=quantization)
    with open_store(config) as store:
        up, build = fill_and_index(store, data, quantization)
    return config, {**rate(len(data.ids), up), "index_build_s": round(build.wall, 1),
                    "index_build_cpu_s": round(build.cpu, 1),
                    "disk_bytes_per_point": round(dir_bytes(Path(config.path)) / len(data.ids))}


def scale_queries(config: StoreConfig, workdir: Path, oversampling: Sequence[float],
                  efs: Sequence[int] | None = None) -> dict[str, Any]:
    """In a fresh process (so that the build's freed memory does not hide the cost): open the built collection,
    run the queries (unfiltered and filtered) per oversampling (and per search-time hnsw_ef in `efs`, each on the
    same build), and the resident memory the store added."""
    cmd = [sys.executable, "-m", "bench.store", "--scale-query", str(workdir), json.dumps(dataclasses.asdict(config)),
           json.dumps(list(oversampling)), json.dumps(list(efs) if efs else None)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
    return json.loads(out.stdout.strip().splitlines()[-1])


def scale_query_child(workdir: str, config_json: str, oversampling_json: str, efs_json: str = "null") -> None:
    work = Path(workdir)
    queries = np.load(work / "queries.npy")
    truth = json.loads((work / "truth.json").read_text())
    filters = [Filter(must={"category": f["category"]}, ranges={"price": tuple(f["price"])})
               for f in json.loads((work / "filters.json").read_text())]
    ids = json.loads((work / "ids.json").read_text())
    row = {pid: j for j, pid in enumerate(ids)}
    config = StoreConfig(**json.loads(config_json))
    before = rss_bytes()
    result: dict[str, Any] = {}
    settings = [1.0] if config.quantization == "none" else json.loads(oversampling_json)
    efs = json.loads(efs_json)

    def label(over: float, ef: int | None) -> str:
        name = "fp32" if config.quantization == "none" else f"oversampling={over:g}"
        return name if ef is None else f"ef={ef},{name}"

    # (result key, search-time settings, query kinds): each (ef, oversampling), then the last pair with every filter
    # through filtered HNSW (exact_filter_below=0): the path of filters matching >= exact_filter_below points at
    # larger sizes
    passes = [(label(over, ef), {"quantization_oversampling": over, **({} if ef is None else {"hnsw_ef": ef})},
               ("unfiltered", "filtered")) for ef in (efs or [None]) for over in settings]
    passes.append((passes[-1][0], {**passes[-1][1], "exact_filter_below": 0}, ("filtered_hnsw",)))
    for key, overrides, kinds in passes:  # the same collection reopened with each setting
        with open_store(dataclasses.replace(config, **overrides)) as store:
            for kind in kinds:
                flt = kind != "unfiltered"
                for q in queries[:5]:  # warm-up
                    store.search("bench", q, limit=K, filter=filters[0] if flt else None)
                found, lat = [], []
                for qi, q in enumerate(queries):
                    with clock() as e:
                        hits = store.search("bench", q, limit=K, filter=filters[qi] if flt else None)
                    lat.append(e)
                    found.append([row[h.id] for h in hits])
                truth_kind = "unfiltered" if not flt else "filtered"
                result.setdefault(key, {})[kind] = {**stats(lat), "recall_at_10": recall(found, truth[truth_kind])}
            if "rss_added_bytes" not in result:  # first pass: what opening and searching the collection added
                result["rss_added_bytes"] = rss_bytes() - before
    print(json.dumps(result))


def run_scale(args: argparse.Namespace, argv: Sequence[str] | None) -> int:
    sizes = [int(x) for x in args.scale.split(",")]
    quantizations = [q.strip() for q in args.quantizations.split(",")]
    oversampling = [float(x) for x in args.oversampling.split(",")]
    efs = [int(x) for x in args.ef.split(",")] if args.ef else None
    defaults = StoreConfig()
    result: dict[str, Any] = {
        **header("store", sys.argv[1:] if argv is None else argv, threads_used=defaults.threads,
                 loadavg_1m_at_start=round(os.getloadavg()[0], 2)),
        "data": {"dim": args.dim, "queries": args.queries, "centres": args.centres, "spread": args.spread,
                 "seed": args.seed, "k": K,
                 "kind": "clustered and anisotropic: centres on the sphere sharing a common direction, points = "
                         "centre + Gaussian noise, normalised (see make_data); filters: 2 of 20 categories and a "
                         "price range (~5% of points)"},
        "params": {"m": defaults.hnsw_m, "ef_construct": defaults.hnsw_ef_construct, "ef": defaults.hnsw_ef,
                   "exact_filter_below": defaults.exact_filter_below,
                   "int8": "scalar int8, quantile 0.99, always in RAM; search rescored with the originals"},
        "sizes": {},
    }
    out = Path(args.out)
    for n in sizes:
        log(f"scale: {n} x {args.dim}")
        data = make_data(n, args.dim, args.queries, args.centres, args.spread, args.seed)
        truth = {key: exact_topk(data, flt)[0] for flt, key in ((False, "unfiltered"), (True, "filtered"))}
        workdir = Path(tempfile.mkdtemp(prefix="coinage-bench-scale-", dir=args.workdir))
        try:
            np.save(workdir / "queries.npy", data.queries)
            (workdir / "truth.json").write_text(json.dumps(truth))
            (workdir / "ids.json").write_text(json.dumps(data.ids))
            (workdir / "filters.json").write_text(json.dumps(
                [{"category": f.must["category"], "price": list(f.ranges["price"])} for f in data.filters]))
            entry: dict[str, Any] = {"filtered_fraction_mean": round(float(np.mean(
                [data.mask(f).mean() for f in data.filters[:20]])), 4)}
            for quantization in quantizations:
                config, built = scale_build(data, workdir, quantization)
                queried = scale_queries(config, workdir, oversampling, efs)
                built["memory_bytes_per_point"] = round(queried.pop("rss_added_bytes") / n)
                entry[quantization] = {**built, **queried}
                log(f"  {quantization}: {entry[quantization]}")
                shutil.rmtree(config.path, ignore_errors=True)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        result["sizes"][str(n)] = entry
        result["machine"]["loadavg_1m_at_end"] = round(os.getloadavg()[0], 2)
        write_json(out, result)  # after each size: a long run keeps what it measured
        log(f"wrote {out}")
    return 0


# --- main ------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="coinage bench store", description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=100_000, help="points in the collection")
    p.add_argument("--dim", type=int, default=512, help="vector dimension")
    p.add_argument("--queries", type=int, default=200, help="queries per measurement")
    p.add_argument("--centres", type=int, default=200, help="cluster centres of the synthetic embeddings")
    p.add_argument("--spread", type=float, default=0.8, help="noise norm around a centre (0.8: cos to centre ~0.78)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--local-upsert-sample", type=int, default=2000,
                   help="points timed for local mode's on-disk upsert (it commits per point)")
    p.add_argument("--local-queries", type=int, default=10,
                   help="queries for local mode (a filtered one takes seconds at 100k)")
    p.add_argument("--candidates", default="local,edge,chosen", help="comma list of local, edge, chosen")
    p.add_argument("--out", default=None, help="JSON result file (default bench/results/store.json, "
                                                 "with --scale store_scale.json)")
    p.add_argument("--scale", help="comma list of sizes: the embedded store per size, per --quantizations "
                                   "(e.g. --scale 100000,250000 --dim 768)")
    p.add_argument("--quantizations", default="none,int8", help="with --scale: StoreConfig.quantization values")
    p.add_argument("--oversampling", default="1,2", help="with --scale: quantization_oversampling values searched")
    p.add_argument("--ef", default=None, help="with --scale: comma list of search-time hnsw_ef values, each searched "
                                               "on the same build (default: StoreConfig.hnsw_ef)")
    p.add_argument("--workdir", default=None, help="with --scale: where the collections are built (default: temp)")
    args = p.parse_args(argv)
    if args.out is None:
        args.out = str(Path(__file__).parent / "results" / ("store_scale.json" if args.scale else "store.json"))
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.scale:
        return run_scale(args, argv)
    started = time.perf_counter()  # the whole run, wall-clock
    log(f"data: {args.n} x {args.dim}, {args.queries} queries")
    data = make_data(args.n, args.dim, args.queries, args.centres, args.spread, args.seed)
    truth, baseline_lat = {}, {}
    for flt, key in ((False, "unfiltered"), (True, "filtered")):
        truth[key], baseline_lat[key] = exact_topk(data, flt)
    baseline = {k: stats(v) for k, v in baseline_lat.items()}
    log(f"  numpy baseline: {baseline}")
    nn = data.vectors @ data.queries[:50].T
    result: dict[str, Any] = {
        **header("store", sys.argv[1:] if argv is None else argv,
                 processor=platform.processor() or platform.machine(), threads_used=2),
        "data": {"n": args.n, "dim": args.dim, "queries": args.queries, "centres": args.centres,
                 "spread": args.spread, "seed": args.seed, "k": K,
                 "query_top1_cosine_mean": round(float(nn.max(axis=0).mean()), 3),
                 "random_pair_cosine_mean": round(float(np.mean(np.sum(data.vectors[:999] * data.vectors[1:1000], 1))),
                                                  3),
                 "filtered_fraction_mean": round(float(np.mean([data.mask(f).mean() for f in data.filters[:20]])), 4)},
        "baseline_numpy_exact": baseline,
        "candidates": {},
    }
    workdir = Path(tempfile.mkdtemp(prefix="coinage-bench-store-"))
    wanted = [c.strip() for c in args.candidates.split(",") if c.strip()]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # local mode's "more than 20,000 points" advice
            if "local" in wanted:
                log("qdrant_local")
                result["candidates"]["qdrant_local"] = bench_local(data, workdir, truth, baseline,
                                                                  args.local_upsert_sample, args.local_queries)
            if "edge" in wanted:
                log("qdrant_edge")
                result["candidates"]["qdrant_edge"] = bench_edge(data, workdir, truth, baseline)
            if "chosen" in wanted:
                log("chosen (EmbeddedStore)")
                result["chosen"] = bench_chosen(data, workdir, truth, baseline, SWEEP)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    result["total_s"] = round(time.perf_counter() - started, 1)
    result["machine"]["loadavg_1m_at_end"] = round(os.getloadavg()[0], 2)  # the machine is shared
    out = write_json(args.out, result)
    log(f"wrote {out} ({result['total_s']} s)")
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--scale-query"]:
        scale_query_child(*sys.argv[2:6])
    else:
        sys.exit(main())
