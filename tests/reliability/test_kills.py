"""Processes killed outright (SIGKILL: no cleanup, no atexit, locks and files left as they were):

- a training job's worker mid-run: the live token stays live and bit-identical; the job is queued again
  by the next worker and resumes from its last checkpoint (default suite);
- the indexer at random points of a 5,000-row ingest, 10 times: every resumed run ends with exactly the
  points and vectors of an uninterrupted run, nothing lost, nothing duplicated (slow);
- the web process during a reindex: after the restart the job is reported (queued again, then resumed,
  or failed) and the live alias keeps serving the old index until a finished build replaces it (slow).
"""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from engine.product import RUN
from web.jobs import JobStore
from web.testing import png_bytes, tiny_settings

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def wait_for(predicate, timeout: float, what: str, child: subprocess.Popen | None = None):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        if child is not None and child.poll() is not None:
            output = child.stderr.read()[-3000:] if child.stderr is not None else "(see its log file)"
            raise AssertionError(f"child exited ({child.returncode}) before {what}: {output}")
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def kill(child: subprocess.Popen, or_finished: bool = False) -> None:
    """SIGKILL the child; `or_finished`: a child that already ended on its own, cleanly, is fine too."""
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    ended = {-signal.SIGKILL, 0} if or_finished else {-signal.SIGKILL}
    assert child.returncode in ended, (child.returncode, child.stderr.read()[-2000:] if child.stderr else "")


# --- training ------------------------------------------------------------------------------------

TRAIN_CHILD = r"""
import sys
from pathlib import Path
from web.resources import Resources
from web.testing import tiny_settings

res = Resources(tiny_settings(Path(sys.argv[1])))
job = res.make_worker().run_once(["train"])
print("finished", job.status, flush=True)
"""


def test_sigkilled_training_job_resumes_from_its_checkpoint_and_the_live_token_never_moves(tmp_path, tiny):
    import torch

    from engine.concepts import ConceptRegistry
    from trainer import TrainConfig, request_from_registry, train_concept
    from web.testing import TINY_TRAIN

    settings = tiny_settings(tmp_path)
    registry = ConceptRegistry(settings.registry_root)
    registry.register("<phoenix>", "mug", [png_bytes(i) for i in range(3)], attributes=["red", "blue", "old"],
                      num_vectors=2)
    first = train_concept(request_from_registry(settings.registry_root, "<phoenix>", backbone=tiny,
                                                config=TrainConfig(**TINY_TRAIN)))
    assert first.activated and first.version == "v0001"
    live_path = registry.token_path("<phoenix>", "v0001")
    live_bytes = live_path.read_bytes()
    live_vectors = registry.active_tokens(tiny.id, tiny.text_width).get("<phoenix>").vectors.clone()

    def live_intact() -> None:
        assert registry.get("<phoenix>").active_version == "v0001"
        assert live_path.read_bytes() == live_bytes
        assert torch.equal(registry.active_tokens(tiny.id, tiny.text_width).get("<phoenix>").vectors, live_vectors)

    jobs = JobStore(settings.jobs_db)
    job_id = jobs.submit("train", {"placeholder": "<phoenix>", "config": {"steps": 40, "checkpoint_every": 4, "seed": 1}},
                         dedupe_key="train:<phoenix>")
    with subprocess.Popen([sys.executable, "-c", TRAIN_CHILD, str(tmp_path)], cwd=ROOT, env=ENV,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as child:
        try:
            step = wait_for(lambda: jobs.get(job_id).progress.get("step", 0) >= 10 and jobs.get(job_id).progress["step"],
                            120, "training step 10", child)
            live_intact()  # while it trains
        finally:
            kill(child)
    killed = jobs.get(job_id)
    assert killed.status == "running" and killed.progress["step"] >= step  # nobody told the store: it just died
    live_intact()
    assert registry.version("<phoenix>", "v0002").status == "training"
    assert (registry.work_dir("<phoenix>", "v0002") / "checkpoint.pt").is_file()

    # the next worker (here: the restarted web process) finds the job's heartbeat stale and queues it again
    later = JobStore(settings.jobs_db, clock=lambda: time.time() + 60)
    assert later.recover_stale(settings.worker.stale_after_s, settings.worker.max_attempts) == [job_id]
    live_intact()
    from web.resources import Resources

    res = Resources(settings, backbone=tiny)
    try:
        job = res.make_worker().run_once(["train"])
    finally:
        res.close()
    assert job.id == job_id and job.status == "done", job.error
    assert (job.attempts, job.interruptions) == (2, 1)
    resumed_at = job.result["metrics"]["resumed_at_step"]
    assert resumed_at > 0 and resumed_at % 4 == 0 and resumed_at <= killed.progress["step"]
    assert job.result["version"] == "v0002" and registry.get("<phoenix>").active_version == "v0002"
    assert live_path.read_bytes() == live_bytes  # the old version's file is never rewritten


def test_a_training_job_killed_again_and_again_is_marked_failed_and_the_live_token_stays(tmp_path, tiny):
    """After max_attempts interrupted runs the job is failed with a message, instead of looping forever."""
    from engine.concepts import ConceptRegistry

    settings = tiny_settings(tmp_path)
    registry = ConceptRegistry(settings.registry_root)
    registry.register("<phoenix>", "mug", [png_bytes(i) for i in range(3)], attributes=["red", "blue"], num_vectors=1)
    jobs = JobStore(settings.jobs_db)
    job_id = jobs.submit("train", {"placeholder": "<phoenix>", "config": {}})
    t = [time.time()]
    clocked = JobStore(settings.jobs_db, clock=lambda: t[0])
    for attempt in range(1, settings.worker.max_attempts + 1):
        assert clocked.claim(f"worker-{attempt}", ["train"]).attempts == attempt  # ... and its process is killed
        t[0] += 60
        clocked.recover_stale(settings.worker.stale_after_s, settings.worker.max_attempts)
    job = jobs.get(job_id)
    assert job.status == "failed" and f"interrupted {settings.worker.max_attempts} times" in job.error
    assert registry.get("<phoenix>").active_version is None


# --- indexer: 5,000 rows, 10 random kills ------------------------------------------------------------

ROWS_5K = 5_000
INGEST_CHILD = r"""
import json, sys
from engine.onnx.runtime import OnnxImageEncoder
from engine.store import StoreConfig, open_store
from indexer.config import IndexerConfig
from indexer.embed import OnnxEmbedder
from indexer.pipeline import ingest

a = json.loads(sys.argv[1])
embedder = OnnxEmbedder(OnnxImageEncoder(a["onnx"]), a["key"], a["mean"], a["std"])
cfg = IndexerConfig(catalog=a["catalog"], store=StoreConfig(path=a["store"]), batch_size=a["batch"], workers=2,
                    progress_bar=False, rejects_path=a["rejects"])
with open_store(cfg.store) as store:
    print("ingesting", flush=True)
    ingest(cfg, store, "c", embedder)
print("finished", flush=True)
"""


@pytest.fixture(scope="module")
def catalog_5k(tmp_path_factory):
    from PIL import Image

    root = tmp_path_factory.mktemp("cat5k")
    (root / "img").mkdir()
    rng = np.random.default_rng(0)
    rows = []
    for i in range(ROWS_5K):
        Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(root / "img" / f"{i}.png")
        rows.append(json.dumps({"id": f"r{i:05d}", "title": f"thing {i}", "image": f"img/{i}.png", "price": i % 97}))
    (root / "catalog.jsonl").write_text("\n".join(rows) + "\n")
    return root / "catalog.jsonl"


def _snapshot(store, collection="c") -> dict:
    ids = store.scroll_ids(collection)
    assert len(ids) == len(set(ids))  # nothing duplicated
    return {p.id: (p.vector, {k: v for k, v in p.payload.items() if k != RUN})  # each run marks with its own id
            for p in store.retrieve(collection, ids, with_vectors=True)}


@pytest.mark.slow
def test_ingest_of_5000_rows_killed_at_10_random_points_resumes_to_exactly_the_clean_result(catalog_5k, tmp_path, tiny):
    from engine.store import StoreConfig, open_store
    from indexer import IndexerConfig
    from indexer.embed import make_embedder
    from indexer.pipeline import ingest

    embedder = make_embedder(tiny, onnx=True, cache_dir=tmp_path / "onnx", threads=1)
    cfg = lambda path: IndexerConfig(catalog=catalog_5k, backbone="tiny-random",  # noqa: E731
                                     store=StoreConfig(path=str(path)), batch_size=32, workers=2, progress_bar=False,
                                     rejects_path=tmp_path / "rejects.jsonl", device="cpu")
    with open_store(cfg(tmp_path / "clean").store) as store:
        store.create_collection("c", dim=embedder.dim)
        t0 = time.perf_counter()
        ingest(cfg(tmp_path / "clean"), store, "c", embedder)
        clean_seconds = time.perf_counter() - t0
        clean = _snapshot(store)
    assert len(clean) == ROWS_5K
    rng = random.Random(int(os.environ.get("COINAGE_KILL_SEED", "5000")))
    args = {"onnx": str(embedder.encoder.path), "key": embedder.key, "mean": embedder.mean, "std": embedder.std,
            "catalog": str(catalog_5k), "batch": 32, "rejects": str(tmp_path / "child-rejects.jsonl")}
    rounds = []
    for round_no in range(10):
        path = tmp_path / f"store-{round_no}"
        with open_store(cfg(path).store) as store:
            store.create_collection("c", dim=embedder.dim)
        kills = []
        for _ in range(1 + round_no % 2):  # odd rounds kill the resumed run as well
            delay = rng.uniform(0.0, 1.5 * clean_seconds)
            with subprocess.Popen([sys.executable, "-c", INGEST_CHILD, json.dumps({**args, "store": str(path)})],
                                  cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as child:
                assert child.stdout.readline().strip() == "ingesting", child.stderr.read()[-2000:]
                time.sleep(delay)
                kill(child, or_finished=True)  # a point past the clean run's time may come after the child's end
            with open_store(cfg(path).store) as store:  # the lock died with the child; the data did not
                partial = _snapshot(store)
            for pid, (vector, payload) in partial.items():  # whatever was written is exactly right
                assert payload == clean[pid][1]
                np.testing.assert_array_equal(vector, clean[pid][0])
            kills.append({"after_s": round(delay, 3), "points_at_kill": len(partial)})
        with open_store(cfg(path).store) as store:
            report = ingest(cfg(path), store, "c", embedder)
            got = _snapshot(store)
        assert report.unchanged == kills[-1]["points_at_kill"] and report.accepted == ROWS_5K - report.unchanged
        assert sorted(got) == sorted(clean)
        for pid, (vector, payload) in clean.items():
            assert got[pid][1] == payload
            np.testing.assert_array_equal(got[pid][0], vector)
        rounds.append(kills)
    print(json.dumps({"clean_seconds": round(clean_seconds, 2), "rounds": rounds}))
    points = [k["points_at_kill"] for r in rounds for k in r]
    assert any(0 < p < ROWS_5K for p in points), points  # most kills land mid-ingest, not before or after it


# --- the web process killed during a reindex ---------------------------------------------------------


def _server(data_dir: Path, port: int, catalog: Path, log: Path) -> subprocess.Popen:
    """`coinage serve` (the web process with its worker thread) on 127.0.0.1:port; output to `log`."""
    from werkzeug.security import generate_password_hash

    env = {**ENV, "COINAGE_DATA_DIR": str(data_dir), "COINAGE_BACKBONE": "tiny-random", "COINAGE_DEVICE": "cpu",
           "COINAGE_ONNX": "0", "COINAGE_CATALOG": str(catalog), "COINAGE_WORKER": "thread", "COINAGE_THREADS": "1",
           "COINAGE_SECRET_KEY": "k" * 32,
           "COINAGE_ADMIN_PASSWORD_HASH": generate_password_hash("pw", method="pbkdf2:sha256:1000"),
           "COINAGE_RATELIMIT_SEARCH": "1000000 per minute"}  # the shopper polls search from one address
    with open(log, "a") as out:
        return subprocess.Popen([sys.executable, "-m", "coinage", "serve", "--port", str(port)], cwd=ROOT, env=env,
                                stdout=out, stderr=subprocess.STDOUT)


def _slow_catalog(root: Path, rows: int = 1200, files: int = 40) -> Path:
    """A catalog whose reindex takes seconds, not a fraction of one: large (1024 px) photos, indexed once."""
    from PIL import Image

    from engine.store import StoreConfig
    from indexer import IndexerConfig, run_index

    folder = root / "world"
    (folder / "img").mkdir(parents=True)
    ramp = np.linspace(0, 255, 1024, dtype=np.float32)
    for i in range(files):
        rgb = np.stack([np.add.outer(ramp, ramp * (i % 5) / 4) / 2, np.tile(ramp, (1024, 1)) * (i % 3) / 2,
                        np.full((1024, 1024), 12.0 * (i % 20))], axis=-1)
        Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)).save(folder / "img" / f"{i}.png")
    colours = ["red", "blue", "green", "black"]
    lines = [json.dumps({"id": f"p{n:05d}", "title": f"{colours[n % 4]} dress {n}", "image": f"img/{n % files}.png",
                         "category": "dress", "price": n % 90}) for n in range(rows)]
    (folder / "catalog.jsonl").write_text("\n".join(lines) + "\n")
    run_index(IndexerConfig(catalog=folder / "catalog.jsonl", backbone="tiny-random", onnx=False, device="cpu",
                            store=StoreConfig(path=str(root / "store")), progress_bar=False,
                            rejects_path=root / "rejects.jsonl"))
    return folder / "catalog.jsonl"


def _ready(port: int) -> bool:
    from bench.load import Client

    try:
        client = Client(port, timeout=5)
        try:
            return client.get("/readyz")[0] == 200
        finally:
            client.close()
    except OSError:
        return False


@pytest.mark.slow
def test_web_process_killed_during_a_reindex_keeps_serving_the_old_index_and_reports_the_job(tmp_path):
    sys.path.insert(0, str(ROOT))
    from bench.load import Client, login

    from engine.store import StoreConfig, open_store
    from attack_kit import free_port

    catalog = _slow_catalog(tmp_path)
    with open_store(StoreConfig(path=str(tmp_path / "store"))) as store:
        old = store.get_alias("products")
        old_count = store.count("products")
    port, log = free_port(), tmp_path / "serve.log"
    web = _server(tmp_path, port, catalog, log)
    try:
        wait_for(lambda: _ready(port), 120, "the server", web)
        admin, token = login(port, "pw")
        status, body = admin.request("POST", "/api/reindex", None, {"X-CSRF-Token": token})
        assert status == 202, (status, body)
        job_id = body["job"]["id"]
        wait_for(lambda: admin.get(f"/api/jobs/{job_id}")[1]["progress"].get("done", 0) >= 100, 120,
                 "the reindex to be under way", web)
        admin.close()
    finally:
        kill(web)
    with open_store(StoreConfig(path=str(tmp_path / "store"))) as store:
        assert store.get_alias("products") == old and store.count("products") == old_count
        orphans = [c for c in store.list_collections() if c != old]
        assert len(orphans) == 1 and 0 < store.count(orphans[0])  # the half-built collection, left behind
    assert JobStore(tmp_path / "jobs.sqlite3").get(job_id).status == "running"

    web = _server(tmp_path, port, catalog, log)  # the restart
    try:
        wait_for(lambda: _ready(port), 120, "the restarted server", web)
        shopper = Client(port)
        while True:  # searches answer throughout; the job is reported, then finishes by resuming the build
            status, body = shopper.get("/api/search?q=red+dress&preview=0")
            assert status == 200 and body["results"], (status, body)
            job = JobStore(tmp_path / "jobs.sqlite3").get(job_id)
            if not job.active:
                break
            time.sleep(0.2)
        shopper.close()
        assert job.status == "done", job.error
        assert job.interruptions == 1 and job.result["resumed"] and job.result["collection"] == orphans[0]
        assert job.result["switched"] and job.result["ingest"]["unchanged"] > 0
    finally:
        web.send_signal(signal.SIGTERM)
        web.wait(timeout=60)
    with open_store(StoreConfig(path=str(tmp_path / "store"))) as store:
        assert store.get_alias("products") == orphans[0] and not store.collection_exists(old)
