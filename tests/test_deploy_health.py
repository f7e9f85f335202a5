"""deploy/healthcheck.py, the containers' health checks: the web process's /healthz, and the worker's job
store and its lanes' health file (compose runs `python /app/deploy/healthcheck.py web|worker`)."""
from __future__ import annotations

import http.server
import sys
import threading
import time
import types
from pathlib import Path

import pytest
from test_jobs import wait_for

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"


def load_healthcheck():
    """deploy/healthcheck.py as a module, compiled in memory (no __pycache__ written into the repo)."""
    path = DEPLOY / "healthcheck.py"
    module = types.ModuleType("deploy_healthcheck")
    module.__file__ = str(path)
    exec(compile(path.read_text(), str(path), "exec"), module.__dict__)
    return module


def healthy_lanes(data_dir: Path) -> None:
    """The health file of a worker whose lanes are all fine, where the check looks for it by default."""
    from web.jobs import LaneHealth
    from web.jobs.health_file import health_path, write_health

    write_health(health_path(data_dir, env={}), "w", [LaneHealth(("preview",), True, 0.1, None, 0, True)], 30.0)


def test_worker_healthcheck_reads_the_job_store(tmp_path, monkeypatch):
    from web.jobs import JobStore

    hc = load_healthcheck()
    monkeypatch.setenv("COINAGE_DATA_DIR", str(tmp_path))
    healthy_lanes(tmp_path)
    assert "no job store" in hc.check_worker()
    assert hc.main(["worker"]) == 1
    JobStore(tmp_path / "jobs.sqlite3").submit("preview", {"q": "x"})
    assert hc.check_worker() is None
    assert hc.main(["worker"]) == 0
    assert hc.main(["nonsense"]) == 2


def test_worker_healthcheck_reads_the_postgres_job_store(tmp_path, monkeypatch, postgres_url):
    from web.jobs import JobStore

    hc = load_healthcheck()
    monkeypatch.setenv("COINAGE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("COINAGE_DATABASE_URL", postgres_url)
    healthy_lanes(tmp_path)
    assert "cannot be read" in hc.check_worker()  # no jobs table yet: no worker has started
    JobStore(tmp_path / "jobs.sqlite3", database_url=postgres_url)
    assert hc.check_worker() is None and hc.main(["worker"]) == 0
    assert not [p for p in tmp_path.iterdir() if p.name != "worker-health"]
    down = "postgresql://coinage:hunter2@127.0.0.1:9/coinage"
    problem = hc.check_worker(database_url=down)
    assert "COINAGE_DATABASE_URL" in problem and "hunter2" not in problem
    monkeypatch.setitem(sys.modules, "psycopg", None)
    assert "pip install 'coinage[postgres]'" in hc.check_worker()


def test_web_healthcheck_asks_healthz():
    hc = load_healthcheck()
    paths = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            paths.append(self.path)
            self.send_response(200 if self.path == "/healthz" else 500)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        assert hc.check_web(f"{base}/healthz") is None
        assert "500" in hc.check_web(f"{base}/other")
    finally:
        server.shutdown()
        server.server_close()
    assert paths == ["/healthz", "/other"]
    assert "did not answer" in hc.check_web("http://127.0.0.1:9/healthz", timeout=1)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # the lane's deliberate death
def test_the_worker_healthcheck_fails_when_a_lane_sticks_or_dies_or_the_process_stops(tmp_path, monkeypatch):
    """Before: a separate `coinage worker` whose lane thread died (or hung) passed its container health check, which
    only read the job store. Now the worker writes its lanes' health (serve_forever, as `coinage worker` runs it)
    where the check looks by default, and each of these turns the check unhealthy, naming the lane; a dead lane
    also ends serve_forever (False: `coinage worker` exits 1, so the container's restart policy restarts it)."""
    from web.jobs import JobStore, Worker
    from web.jobs.health_file import health_path

    hc = load_healthcheck()
    monkeypatch.setenv("COINAGE_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("COINAGE_WORKER_HEALTH_FILE", raising=False)
    monkeypatch.delenv("COINAGE_DATABASE_URL", raising=False)
    store = JobStore(tmp_path / "jobs.sqlite3")
    release = threading.Event()

    class Stalled:  # the "train" lane's database call hangs once asked to (a stalled server)
        stall = False

        def __getattr__(self, name):
            return getattr(store, name)

        def claim(self, worker, kinds):
            if self.stall and "train" in kinds:
                release.wait(30)
            return store.claim(worker, kinds)

    def exits(params, progress, cancel):
        raise SystemExit("a job function that exits its thread")  # not an Exception: the lane thread ends

    def serve(worker, outcome):
        thread = threading.Thread(target=lambda: outcome.append(worker.serve_forever(
            check_every_s=0.05, health_file=health_path(tmp_path))))
        thread.start()
        return thread

    stalled, outcome = Stalled(), []
    worker = Worker(stalled, {"preview": exits, "train": lambda p, progress, cancel: p},
                    lanes=[("preview",), ("train",)], poll_s=0.02, heartbeat_s=0.05, stale_after_s=0.5)
    serving = serve(worker, outcome)
    try:
        assert wait_for(lambda: hc.check_worker() is None, 20.0), hc.check_worker()
        assert hc.main(["worker"]) == 0
        stalled.stall = True
        assert wait_for(lambda: "worker lane train is stuck" in (hc.check_worker() or ""), 20.0), hc.check_worker()
        assert hc.main(["worker"]) == 1
        release.set()
        assert wait_for(lambda: hc.check_worker() is None, 20.0), hc.check_worker()  # it recovers: healthy again
        store.submit("preview", {})
        serving.join(30)
        assert outcome == [False]  # the dead lane ended the worker ...
        assert "worker lane preview is dead" in hc.check_worker()  # ... and its file says why
        assert "hung or gone" in hc.check_lanes(health_path(tmp_path), now=time.time() + 60)
    finally:
        release.set()
        worker.request_stop()
        serving.join(30)
    calm = Worker(store, {"train": lambda p, progress, cancel: p}, poll_s=0.02, heartbeat_s=0.05, stale_after_s=0.5)
    outcome.clear()
    serving = serve(calm, outcome)
    assert wait_for(lambda: hc.check_worker() is None, 20.0), hc.check_worker()
    calm.request_stop()
    serving.join(30)
    assert outcome == [True]
    assert "no worker health file" in hc.check_worker()  # a stopped worker removes its file: not healthy
    health_path(tmp_path).write_text("{not json")
    assert "cannot be read" in hc.check_worker()


def test_a_stop_asked_while_the_worker_checks_its_lanes_is_a_clean_stop_not_a_dead_lane(tmp_path):
    """A stop (a signal) that lands after the loop's check, while health() runs, ends the lanes: they were asked
    to stop, so serve_forever returns True and removes its file, instead of reporting a dead lane (exit 1)."""
    from web.jobs import JobStore, Worker
    from web.jobs.health_file import health_path

    worker = Worker(JobStore(tmp_path / "jobs.sqlite3"), {"train": lambda p, progress, cancel: p}, poll_s=0.02,
                    heartbeat_s=0.05, stale_after_s=5.0)
    health, checks = worker.health, []

    def stopped_meanwhile():
        checks.append(1)
        if len(checks) == 3:
            worker.request_stop()
            for lane in worker._lanes:
                lane.thread.join(10)  # the lanes see the stop and end before this check reads them
        return health()

    worker.health = stopped_meanwhile
    assert worker.serve_forever(check_every_s=0.05, health_file=health_path(tmp_path)) is True
    assert not health_path(tmp_path).exists()
