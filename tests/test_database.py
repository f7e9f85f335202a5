"""What PostgreSQL adds to the job store and the concept registry (engine/database.py), against a real server
(tests/pg_server.py): claims from several processes, claims that skip locked rows, schema creation racing between
processes, concurrent writers, the settings URL reaching the web app's resources, and errors naming the fix.

The job-store and registry behaviour itself runs on both backends in tests/test_jobs.py and tests/test_concepts.py."""
import json
import logging
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg
import pytest

from engine.concepts import ConceptRegistry
from engine.database import DatabaseError, PostgresDatabase, database_errors, redact
from web.jobs import JobError, JobStore, Worker
from web.settings import AppSettings, SettingsError

ROOT = Path(__file__).resolve().parent.parent


def spawn(code: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code, *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def start_together(procs: list[subprocess.Popen], folder: Path, timeout: float = 300) -> list[str]:
    """Release processes that wait at a barrier (they create folder/ready-N, then poll for folder/go) at once;
    returns their outputs once all exit 0."""
    end = time.monotonic() + timeout
    try:
        while len(list(folder.glob("ready-*"))) < len(procs):
            assert time.monotonic() < end and all(p.poll() is None for p in procs), "a process died before the start"
            time.sleep(0.05)
        (folder / "go").touch()
        done = [p.communicate(timeout=timeout) for p in procs]
        assert all(p.returncode == 0 for p in procs), [err for _, err in done]
        return [out for out, _ in done]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.communicate()


BARRIER = ("import sys, time, pathlib; folder = pathlib.Path(sys.argv[1]); (folder / f'ready-{sys.argv[2]}').touch()\n"
           "while not (folder / 'go').exists(): time.sleep(0.005)\n")


def images(n: int = 3) -> list[bytes]:
    from web.testing import png_bytes

    return [png_bytes(i) for i in range(n)]


def rows(url: str, sql: str) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql).fetchall()


# --- the job store ---------------------------------------------------------------------------


def test_claims_from_several_processes_never_share_a_job(postgres_url, tmp_path):
    store = JobStore(tmp_path / "unused.sqlite3", database_url=postgres_url)
    ids = {store.submit("preview", {"i": i}) for i in range(40)}
    code = BARRIER + (
        "import json; from web.jobs import JobStore\n"
        "store = JobStore(folder / 'unused.sqlite3', database_url=sys.argv[3]); taken = []\n"
        "while (job := store.claim('w' + sys.argv[2], ['preview'])) is not None: taken.append(job.id)\n"
        "print(json.dumps(taken))")
    procs = [spawn(code, str(tmp_path), str(n), postgres_url) for n in range(3)]
    taken = [job_id for out in start_together(procs, tmp_path) for job_id in json.loads(out)]
    assert len(taken) == len(set(taken)) == 40 and set(taken) == ids
    assert all(job.attempts == 1 and job.status == "running" for job in store.list(limit=100))
    assert not (tmp_path / "unused.sqlite3").exists()


def test_a_claim_skips_the_job_another_claim_holds(postgres_url, tmp_path):
    store = JobStore(tmp_path / "jobs.sqlite3", database_url=postgres_url)
    first, second = store.submit("train", {}), store.submit("train", {})
    with psycopg.connect(postgres_url) as other:  # another worker's claim, caught between its SELECT and UPDATE
        other.execute("SELECT id FROM jobs WHERE id=%s FOR UPDATE", (first,))
        started = time.monotonic()
        assert store.claim("w2").id == second  # no wait for the lock: SKIP LOCKED
        assert time.monotonic() - started < 5
        assert store.claim("w3") is None
    assert store.claim("w4").id == first  # released: claimable again


def test_concurrent_identical_submissions_share_one_job(database_url, tmp_path):
    """Dedupe reads then inserts: the store's writers take turns (BEGIN IMMEDIATE / the advisory lock)."""
    stores = [JobStore(tmp_path / "jobs.sqlite3", database_url=database_url) for _ in range(6)]
    got, barrier = [], threading.Barrier(len(stores))

    def submit(store):
        barrier.wait()
        got.append(store.submit("preview", {"q": "red dress"}, dedupe_key="red dress"))

    threads = [threading.Thread(target=submit, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(got)) == 1 and stores[0].count() == 1


def test_a_worker_outlives_a_database_outage(postgres_url, tmp_path, caplog):
    store = JobStore(tmp_path / "jobs.sqlite3", database_url=postgres_url)
    worker = Worker(store, {"echo": lambda p, progress, cancel: p}, poll_s=0.02, heartbeat_s=0.05,
                    stale_after_s=5).start()
    good = store.db
    try:
        with caplog.at_level(logging.ERROR, logger="web.jobs"):
            store.db = PostgresDatabase(f"postgresql://coinage@127.0.0.1:{closed_port()}/gone", "jobs")
            deadline = time.monotonic() + 30  # a pooled connection is waited for up to CONNECT_TIMEOUT_S
            while "cannot claim a job" not in caplog.text and time.monotonic() < deadline:
                time.sleep(0.02)
        assert "cannot claim a job" in caplog.text and "COINAGE_DATABASE_URL" in caplog.text and worker.running
        store.db = good
        job_id = store.submit("echo", {"v": 1})
        deadline = time.monotonic() + 40  # the lane backs off (up to 30 s) after consecutive errors
        while store.get(job_id).status != "done" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert store.get(job_id).result == {"v": 1}
    finally:
        store.db = good
        worker.stop()


def test_postgres_connections_are_pooled_per_process(postgres_url, tmp_path):
    """Issue 27 #4: each call (a search's submit, a heartbeat, a poll) opened a new connection; now they reuse the
    process's pooled ones, checked before use, so a server restart costs no failed call."""
    store = JobStore(tmp_path / "unused.sqlite3", database_url=postgres_url)

    def backend() -> int:
        with store.db.connect() as conn:
            return conn.execute("SELECT pg_backend_pid() AS pid").fetchone()["pid"]

    pids = set()
    for i in range(20):
        pids.add(backend())
        store.submit("preview", {"i": i})
        store.claim("w")
    assert len(pids) == 1
    rows(postgres_url, f"SELECT pg_terminate_backend({pids.pop()})")  # the server dropped the idle connection
    assert backend() and store.count() == 20  # the pool's check replaced it: no error reaches the caller
    store.db.close()


# --- schema and the registry -----------------------------------------------------------------


def test_schema_creation_races_between_processes(postgres_url, tmp_path):
    """Processes starting at once each create the schema (CREATE ... IF NOT EXISTS races on PostgreSQL without
    the advisory lock); jobs and registry share the database, each in its own tables."""
    code = BARRIER + (
        "from engine.concepts import ConceptRegistry; from web.jobs import JobStore\n"
        "JobStore(folder / 'jobs.sqlite3', database_url=sys.argv[3])\n"
        "ConceptRegistry(folder / 'root', database_url=sys.argv[3])\n")
    procs = [spawn(code, str(tmp_path), str(n), postgres_url) for n in range(2)]
    start_together(procs, tmp_path)
    tables = {r[0] for r in rows(postgres_url, "SELECT tablename FROM pg_tables WHERE schemaname='public'")}
    assert tables == {"jobs", "job_waiters", "durations", "duration_sums", "concepts", "versions"}
    assert not (tmp_path / "jobs.sqlite3").exists()
    assert not (tmp_path / "root" / "concepts" / "registry.sqlite3").exists()


def test_concurrent_training_runs_get_distinct_versions(database_url, tmp_path):
    ConceptRegistry(tmp_path / "root", database_url=database_url).register("<aurora>", "dress", images())
    registries = [ConceptRegistry(tmp_path / "root", database_url=database_url) for _ in range(5)]
    versions, errors, barrier = [], [], threading.Barrier(len(registries))

    def start(reg):
        barrier.wait()
        try:
            versions.append(reg.start_version("<aurora>", "ti+ce+proj", "tiny-random"))
        except Exception as e:  # noqa: BLE001 - collected and asserted below
            errors.append(e)

    threads = [threading.Thread(target=start, args=(r,)) for r in registries]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and sorted(versions) == [f"v000{i}" for i in range(1, 6)]


# --- settings and the web app ----------------------------------------------------------------


def test_settings_read_the_database_url_and_hide_its_password():
    url = "postgresql://coinage:hunter2@db:5432/coinage"
    settings = AppSettings.from_env({"COINAGE_DATABASE_URL": url})
    assert settings.database_url == url and "hunter2" not in repr(settings)
    assert AppSettings.from_env({}).database_url is None
    assert AppSettings.from_env({"COINAGE_DATABASE_URL": " "}).database_url is None
    for bad in ("mysql://coinage:hunter2@db/coinage", "db:5432", "postgresql://"):
        with pytest.raises(SettingsError, match="COINAGE_DATABASE_URL") as e:
            AppSettings.from_env({"COINAGE_DATABASE_URL": bad})
        assert "hunter2" not in str(e.value) and "postgresql://USER:PASSWORD@HOST" in str(e.value)
    assert redact(url) == "postgresql://coinage:***@db:5432/coinage"


def test_the_web_apps_resources_keep_jobs_and_concepts_in_the_settings_database(postgres_url, tmp_path, tiny,
                                                                                monkeypatch):
    import trainer
    from web.resources import Resources
    from web.testing import tiny_settings

    res = Resources(tiny_settings(tmp_path, database_url=postgres_url), backbone=tiny)
    try:
        res.registry.register("<aurora>", "dress", images())
        job_id = res.jobs.submit("train", {"placeholder": "<aurora>"})
        assert rows(postgres_url, "SELECT id, status FROM jobs") == [(job_id, "queued")]
        assert rows(postgres_url, "SELECT name, status FROM concepts") == [("aurora", "registered")]
        assert len(res.registry.images("<aurora>")) == 3  # the files stay under the data dir
        assert not (tmp_path / "jobs.sqlite3").exists() and not res.registry.db_path.exists()
        assert res.jobs.location == postgres_url  # what /readyz and `coinage worker` show (no password here)

        requests = []  # the training runner hands the app's registry (not a root path) to the trainer
        monkeypatch.setattr(trainer, "train_concept", lambda request, progress, cancel: requests.append(request)
                            or trainer.TrainResult(request.placeholder, "ready", tmp_path, "v0001"))
        job = res.make_worker().run_once(["train"])
        assert job.id == job_id and job.status == "done", job.error
        assert requests[0].registry is res.registry
    finally:
        res.close()


# --- errors ----------------------------------------------------------------------------------


def closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_server_names_the_variable_without_the_password(tmp_path):
    url = f"postgresql://coinage:hunter2@127.0.0.1:{closed_port()}/coinage"
    with pytest.raises(JobError, match="COINAGE_DATABASE_URL") as e:
        JobStore(tmp_path / "jobs.sqlite3", database_url=url)
    assert "hunter2" not in str(e.value) and "coinage:***@127.0.0.1" in str(e.value)
    with pytest.raises(DatabaseError, match="cannot connect to the PostgreSQL database .*COINAGE_DATABASE_URL"):
        ConceptRegistry(tmp_path / "root", database_url=url)
    with pytest.raises(DatabaseError, match="is not a PostgreSQL URL"):
        JobStore(tmp_path / "jobs.sqlite3", database_url="sqlite:///var/jobs.sqlite3")
    assert issubclass(DatabaseError, database_errors())


def test_a_missing_driver_names_the_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "psycopg", None)  # `import psycopg` now fails
    with pytest.raises(JobError, match=r"pip install 'coinage\[postgres\]'"):
        JobStore(tmp_path / "jobs.sqlite3", database_url="postgresql://coinage@127.0.0.1:5432/coinage")
