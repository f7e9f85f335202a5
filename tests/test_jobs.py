"""The job store and worker: submit/claim (atomic across connections), progress, cancel, failure,
restart recovery of stale jobs, lanes, and the duration histograms behind /metrics.

Every test that takes `store` or `make_store` runs on SQLite and on PostgreSQL (`database_url`: tests/conftest.py);
what only PostgreSQL does is in tests/test_database.py."""
import sqlite3
import threading
import time

import pytest

from web.jobs import JobCancelled, JobError, JobStore, Worker


class Clock:
    def __init__(self, t=1000.0):
        self.t = t

    def __call__(self):
        return self.t


@pytest.fixture
def make_store(tmp_path, database_url):
    """make_store(clock=time.time) -> a JobStore on this test's database (each call: another process's view of it)."""
    return lambda clock=time.time: JobStore(tmp_path / "jobs.sqlite3", clock=clock, database_url=database_url)


@pytest.fixture
def store(make_store):
    return make_store()


def wait_for(predicate, timeout=10.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def test_submit_claim_progress_finish_and_persistence(make_store, store):
    job_id = store.submit("train", {"placeholder": "<aurora>"})
    job = store.get(job_id)
    assert job.status == "queued" and job.params == {"placeholder": "<aurora>"} and job.attempts == 0
    claimed = store.claim("w1", ["train"])
    assert claimed.id == job_id and claimed.status == "running" and claimed.worker == "w1" and claimed.attempts == 1
    assert store.claim("w2", ["train"]) is None
    assert store.progress(job_id, {"step": 2, "total": 5}, attempt=claimed.attempts)
    assert store.finish(job_id, {"version": "v0001"}, attempt=claimed.attempts)
    again = make_store().get(job_id)  # a new process sees the same state
    assert again.status == "done" and again.result == {"version": "v0001"} and again.progress["step"] == 2
    assert again.finished is not None and again.seconds is not None
    assert store.durations()["train"]["count"] == 1


def test_claim_takes_only_the_lanes_kinds_oldest_first(store):
    first = store.submit("preview", {})
    store.submit("train", {})
    second = store.submit("preview", {})
    assert store.claim("w", ["reindex"]) is None
    assert store.claim("w", ["preview"]).id == first
    assert store.claim("w", ["preview"]).id == second
    assert store.claim("w").kind == "train"


def test_concurrent_claims_from_many_connections_take_each_job_once(make_store):
    ids = {make_store().submit("preview", {"i": i}) for i in range(30)}
    taken, lock = [], threading.Lock()

    def grab(n):
        store = make_store()
        while True:
            job = store.claim(f"w{n}", ["preview"])
            if job is None:
                return
            with lock:
                taken.append(job.id)

    threads = [threading.Thread(target=grab, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(taken) == sorted(ids)


def test_dedupe_returns_the_active_job_and_optionally_the_finished_one(store):
    a = store.submit("preview", {"q": 1}, dedupe_key="k")
    assert store.submit("preview", {"q": 1}, dedupe_key="k") == a
    store.finish(a, {"ok": True}, attempt=store.claim("w").attempts)
    assert store.submit("preview", {}, dedupe_key="k", reuse_done=True) == a
    b = store.submit("preview", {}, dedupe_key="k")
    assert b != a and store.latest("preview", "k").id == b


def test_cancel_queued_is_immediate_and_running_sets_the_flag(store):
    queued = store.submit("train", {})
    assert store.request_cancel(queued).status == "cancelled"
    running = store.submit("train", {})
    store.claim("w")
    job = store.request_cancel(running)
    assert job.status == "running" and job.cancel_requested and store.heartbeat(running, attempt=1) is True
    with pytest.raises(JobError, match="no job"):
        store.request_cancel("nope")


def test_a_shared_job_is_cancelled_only_when_its_last_waiter_releases_it(make_store):
    one, other = make_store(), make_store()  # two web processes
    job = one.submit("preview", {"q": 1}, dedupe_key="k", waiter="alice")
    assert other.submit("preview", {"q": 1}, dedupe_key="k", waiter="bob") == job
    other.wait(job, "carol")
    other.wait(job, "carol")  # joining twice is one waiter
    one.claim("w")
    released, others = one.release(job, "alice")
    assert (released.status, released.cancel_requested, others) == ("running", False, 2)
    assert one.release(job, "alice")[1] == 2  # releasing again changes nothing
    assert other.release(job, "bob")[1] == 1 and not one.get(job).cancel_requested
    last, others = other.release(job, "carol")
    assert others == 0 and last.cancel_requested and one.heartbeat(job, attempt=1) is True
    lone = one.submit("preview", {"q": 2}, dedupe_key="k2")  # nobody recorded as waiting: cancelled at once
    assert one.release(lone, "anyone")[0].status == "cancelled"
    with pytest.raises(JobError, match="no job"):
        one.release("nope", "alice")
    one.cancelled(job, attempt=1)
    assert one.prune(-1) == 2


def test_recover_stale_requeues_then_gives_up(make_store):
    clock = Clock()
    store = make_store(clock)
    job_id = store.submit("train", {"placeholder": "<a>"})
    for attempt in range(1, 4):
        assert store.claim("dead-worker").attempts == attempt
        clock.t += 10
        assert store.recover_stale(stale_after_s=30) == []  # heartbeat still fresh
        clock.t += 60
        requeued = store.recover_stale(stale_after_s=30, max_attempts=3)
        if attempt < 3:
            assert requeued == [job_id]
            job = store.get(job_id)
            assert job.status == "queued" and job.interruptions == attempt and "interrupted" in job.error
    job = store.get(job_id)
    assert job.status == "failed" and "interrupted 3 times" in job.error


def test_bad_params_and_unknown_ids_name_the_problem(store):
    with pytest.raises(JobError, match="JSON-serialisable"):
        store.submit("train", {"x": object()})
    with pytest.raises(JobError, match="no job 'missing'"):
        store.get("missing")


def run_worker(store, runners, **kw):
    return Worker(store, runners, poll_s=0.02, heartbeat_s=0.05, stale_after_s=5, **kw)


def test_worker_runs_jobs_reports_progress_and_records_failures(store):
    def ok(params, progress, cancel):
        progress({"step": 1})
        return {"doubled": params["n"] * 2}

    def boom(params, progress, cancel):
        raise ValueError("the catalog has no rows")

    worker = run_worker(store, {"ok": ok, "boom": boom})
    a, b = store.submit("ok", {"n": 21}), store.submit("boom", {})
    done = worker.run_once()
    assert done.id == a and done.status == "done" and done.result == {"doubled": 42} and done.progress == {"step": 1}
    failed = worker.run_once()
    assert failed.id == b and failed.status == "failed" and failed.error == "ValueError: the catalog has no rows"
    assert worker.run_once() is None


def test_worker_cancel_flag_reaches_the_job_event(store):
    started = threading.Event()

    def slow(params, progress, cancel):
        started.set()
        if not cancel.wait(10):
            return {"finished": True}
        raise JobCancelled("stopped at step 3")

    worker = run_worker(store, {"slow": slow}).start()
    try:
        job_id = store.submit("slow", {})
        assert started.wait(10)
        store.request_cancel(job_id)
        assert wait_for(lambda: store.get(job_id).status == "cancelled")
        assert store.get(job_id).error == "stopped at step 3"
    finally:
        worker.stop()


def test_worker_lanes_let_short_jobs_pass_a_long_one(store):
    release = threading.Event()

    def long(params, progress, cancel):
        release.wait(10)
        return {}

    def short(params, progress, cancel):
        return {"quick": True}

    worker = run_worker(store, {"long": long, "short": short}, lanes=[("short",), ("long",)]).start()
    try:
        slow = store.submit("long", {})
        assert wait_for(lambda: store.get(slow).status == "running")
        quick = store.submit("short", {})
        assert wait_for(lambda: store.get(quick).status == "done")
        assert store.get(slow).status == "running"
    finally:
        release.set()
        worker.stop()
    with pytest.raises(JobError, match="without a runner"):
        Worker(store, {"a": long}, lanes=[("a", "b")])


def test_stopping_the_worker_requeues_its_running_job(store):
    started = threading.Event()

    def slow(params, progress, cancel):
        started.set()
        cancel.wait(10)
        return {"status": "cancelled", "message": "stopped"}

    worker = run_worker(store, {"slow": slow}).start()
    job_id = store.submit("slow", {})
    assert started.wait(10)
    worker.stop()
    job = store.get(job_id)
    assert job.status == "queued" and job.interruptions == 1  # a restarted worker runs it again


def test_restart_recovers_a_job_whose_worker_died(make_store):
    clock = Clock()
    make_store(clock).submit("echo", {"v": 1})
    make_store(clock).claim("crashed-process")  # its process died without finishing
    clock.t += 3600
    store = make_store(clock)
    worker = Worker(store, {"echo": lambda p, progress, cancel: p}, stale_after_s=30)
    store.recover_stale(worker.stale_after_s)
    job = worker.run_once()
    assert job.status == "done" and job.result == {"v": 1} and job.attempts == 2 and job.interruptions == 1


def test_a_running_worker_picks_up_jobs_of_a_worker_that_died_meanwhile(make_store):
    store = make_store()
    worker = Worker(store, {"echo": lambda p, progress, cancel: p}, poll_s=0.02, heartbeat_s=0.05,
                    stale_after_s=0.5).start()
    try:
        first = store.submit("echo", {"v": 1})
        assert wait_for(lambda: store.get(first).status == "done")
        other = make_store(lambda: time.time() - 60)  # another worker, whose last heartbeat is old
        orphan = other.submit("other-kind", {"v": 3})  # a kind only the other worker runs...
        other.claim("dead-worker", ["other-kind"])  # ...and it died while running it
        assert wait_for(lambda: store.get(orphan).status == "queued")
        assert store.get(orphan).interruptions == 1 and "interrupted" in store.get(orphan).error
    finally:
        worker.stop()


# --- fencing: every write about a running job names its claim ----------------------------------


def test_a_zombie_claims_writes_are_refused_after_its_job_is_requeued_and_claimed_again(make_store):
    """Issue 27 #1: the first worker's heartbeat went stale (a database hiccup), its job was re-queued and claimed
    by a second worker; the first (zombie) keeps running: its heartbeat, progress and result must not win."""
    clock = Clock()
    store = make_store(clock)
    job_id = store.submit("train", {"placeholder": "<a>"})
    zombie = store.claim("worker-1")
    clock.t += 60
    assert store.recover_stale(stale_after_s=30) == [job_id]
    assert store.heartbeat(job_id, attempt=zombie.attempts) is True  # re-queued: the zombie is told to stop
    owner = store.claim("worker-2")
    assert (zombie.attempts, owner.attempts) == (1, 2)
    assert store.heartbeat(job_id, attempt=zombie.attempts) is True  # stop: another claim owns the job
    assert store.heartbeat(job_id, attempt=owner.attempts) is False  # the owner goes on
    assert store.progress(job_id, {"step": 99}, attempt=zombie.attempts) is False
    assert store.finish(job_id, {"version": "zombie"}, attempt=zombie.attempts) is False
    assert store.fail(job_id, "zombie failed", attempt=zombie.attempts) is False
    assert store.requeue(job_id, "zombie shutdown", attempt=zombie.attempts) is False
    job = store.get(job_id)
    assert job.status == "running" and job.worker == "worker-2" and job.progress == {}
    assert store.progress(job_id, {"step": 1}, attempt=owner.attempts) is True
    assert store.finish(job_id, {"version": "owner"}, attempt=owner.attempts) is True
    assert store.cancelled(job_id, attempt=owner.attempts) is False  # ended: no second end
    job = store.get(job_id)
    assert job.status == "done" and job.result == {"version": "owner"} and job.progress == {"step": 1}


def test_a_worker_whose_claim_is_lost_stops_its_runner_and_its_result_is_discarded(make_store):
    store = make_store()
    started, stopped = threading.Event(), threading.Event()

    def slow(params, progress, cancel):
        started.set()
        stopped.set() if cancel.wait(10) else None
        return {"by": "zombie"}

    zombie = Worker(store, {"train": slow}, poll_s=0.02, heartbeat_s=0.05, stale_after_s=5).start()
    try:
        job_id = store.submit("train", {})
        assert started.wait(10)
        lost = make_store(lambda: time.time() + 3600)  # a worker whose clock says the heartbeat is an hour old
        assert lost.recover_stale(stale_after_s=30) == [job_id]
        owner = lost.claim("worker-2")
        assert stopped.wait(10)  # the zombie's heartbeat was refused: its runner was told to stop
        time.sleep(0.2)
        assert store.get(job_id).status == "running"  # the zombie's "result" did not end the owner's run
        assert store.finish(job_id, {"by": "owner"}, attempt=owner.attempts)
        assert store.get(job_id).result == {"by": "owner"}
    finally:
        zombie.stop()


# --- lanes survive errors, and report their health ----------------------------------------------


class Flaky:
    """A store wrapper whose claims and ends raise the database's own error `failures` times."""

    def __init__(self, store, failures, methods=("claim",)):
        self.store, self.failures, self.methods = store, failures, methods

    def __getattr__(self, name):
        real = getattr(self.store, name)
        if name not in self.methods:
            return real

        def flaky(*args, **kwargs):
            if self.failures > 0:
                self.failures -= 1
                raise sqlite3.OperationalError("database is locked")
            return real(*args, **kwargs)

        return flaky


def test_a_lane_survives_a_database_error_recording_a_jobs_end(store, caplog):
    """Issue 27 #2: one OperationalError while recording a job's end used to end the lane thread for good."""
    flaky = Flaky(store, failures=1, methods=("finish",))
    worker = Worker(flaky, {"echo": lambda p, progress, cancel: p}, poll_s=0.02, heartbeat_s=0.05,
                    stale_after_s=0.5).start()
    try:
        with caplog.at_level("ERROR", logger="web.jobs"):
            first = store.submit("echo", {"v": 1})
            assert wait_for(lambda: "cannot record its end" in caplog.text)
        assert "database is locked" in caplog.text
        # its heartbeat stops, so the lane's own recovery queues it again and the same lane runs it to the end
        assert wait_for(lambda: store.get(first).status == "done")
        assert store.get(first).attempts == 2
        second = store.submit("echo", {"v": 2})
        assert wait_for(lambda: store.get(second).status == "done") and worker.running
        assert all(h.ok for h in worker.health())
    finally:
        worker.stop()


def test_a_lane_survives_any_loop_error_and_backs_off(store, caplog):
    flaky = Flaky(store, failures=2, methods=("claim",))
    worker = Worker(flaky, {"echo": lambda p, progress, cancel: p}, poll_s=0.02, heartbeat_s=0.05,
                    stale_after_s=5).start()
    try:
        job_id = store.submit("echo", {"v": 1})
        with caplog.at_level("ERROR", logger="web.jobs"):
            assert wait_for(lambda: store.get(job_id).status == "done", timeout=15)
        assert caplog.text.count("cannot claim a job (OperationalError: database is locked)") == 2
        assert "retrying in 1.0 s" in caplog.text and "retrying in 2.0 s" in caplog.text
    finally:
        worker.stop()


def test_health_reports_a_dead_and_a_stuck_lane(store):
    """A lane whose database call hangs (a stalled server) stops beating: health says so after stale_after_s."""
    release = threading.Event()

    class Stalled:
        def __getattr__(self, name):
            return getattr(store, name)

        def claim(self, worker, kinds):
            if tuple(kinds) == ("b",):
                release.wait(10)
            return store.claim(worker, kinds)

    worker = Worker(Stalled(), {"a": lambda p, progress, cancel: p, "b": lambda p, progress, cancel: p},
                    lanes=[("a",), ("b",)], poll_s=0.02, heartbeat_s=0.05, stale_after_s=0.5).start()
    try:
        assert wait_for(lambda: not {h.lane: h for h in worker.health()}[("b",)].ok)
        health = {h.lane: h for h in worker.health()}
        assert health[("a",)].ok and health[("b",)].alive and health[("b",)].seconds_since_beat > 0.5
    finally:
        release.set()
        worker.stop()
    assert not any(h.alive or h.ok for h in worker.health())  # stopped threads: dead lanes


# --- bounded growth: queue bounds, waiter cap, retention --------------------------------------------


def test_queue_bounds_refuse_a_new_job_but_not_a_shared_one(store):
    from web.jobs import QueueFull

    bounds = {"max_queued": 3, "max_queued_per_client": 2}
    a = store.submit("preview", {"q": 1}, dedupe_key="1", client="greedy", **bounds)
    store.submit("preview", {"q": 2}, dedupe_key="2", client="greedy", **bounds)
    with pytest.raises(QueueFull, match="the limit per client is 2"):
        store.submit("preview", {"q": 3}, dedupe_key="3", client="greedy", **bounds)
    assert store.submit("preview", {"q": 1}, dedupe_key="1", client="greedy", **bounds) == a  # joining is free
    store.submit("preview", {"q": 4}, dedupe_key="4", client="other", **bounds)
    with pytest.raises(QueueFull, match="the limit is 3"):
        store.submit("preview", {"q": 5}, dedupe_key="5", client="third", **bounds)
    assert store.get(a).client == "greedy" and store.count("preview", "queued") == 3


def test_waiter_rows_are_capped_per_job_and_pruned_with_finished_jobs(store):
    from web.jobs.store import MAX_WAITERS

    job = store.submit("preview", {}, dedupe_key="k", waiter="w0")
    for i in range(1, MAX_WAITERS + 30):
        store.submit("preview", {}, dedupe_key="k", waiter=f"w{i}")  # each cookie-less request: a new waiter

    def waiters():
        with store.db.connect() as conn:
            return conn.execute("SELECT COUNT(*) AS n FROM job_waiters").fetchone()["n"]

    assert waiters() == MAX_WAITERS
    assert store.release(job, "nobody-recorded")[1] == MAX_WAITERS  # others still wait: not cancelled
    store.cancelled(job, attempt=store.claim("w").attempts)
    assert store.prune_waiters() == MAX_WAITERS and waiters() == 0


def test_a_retention_pass_deletes_old_jobs_waiters_and_preview_files(make_store, tmp_path):
    import os

    from engine.query.previews import PreviewCache, cache_key
    from web.jobs import retention
    from web.settings import RetentionSettings

    clock = Clock()
    store = make_store(clock)
    old_preview, old_train = store.submit("preview", {}, waiter="a"), store.submit("train", {})
    for job_id in (old_preview, old_train):
        store.finish(job_id, {}, attempt=store.claim("w").attempts)
    clock.t += 2 * 86400  # two days later
    fresh = store.submit("preview", {}, waiter="b")
    running = store.submit("train", {})
    store.claim("w", ["train"])
    cache = PreviewCache(directory=tmp_path / "previews")
    old_key, new_key = cache_key(n=1), cache_key(n=2)
    cache.put_png(old_key, b"old")
    cache.put_png(new_key, b"new")
    week_ago = time.time() - 8 * 86400
    os.utime(cache.directory / f"{old_key}.png", (week_ago, week_ago))
    config = RetentionSettings(finished_jobs_s=30 * 86400, finished_previews_s=86400, preview_files_s=7 * 86400)
    assert retention.prune(store, cache, config) == {"preview_jobs": 1, "jobs": 0, "waiters": 0, "preview_files": 1}
    assert store.find(old_preview) is None and store.find(old_train) is not None  # training kept longer
    assert {j.id for j in store.list()} == {old_train, fresh, running}
    assert sorted(p.name for p in cache.directory.iterdir()) == [f"{new_key}.png"]
    clock.t += 31 * 86400
    assert retention.prune(store, cache, config)["jobs"] == 1 and store.find(old_train) is None


def test_the_worker_runs_its_housekeeping_on_a_schedule_and_survives_its_errors(store, caplog):
    calls = []

    def housekeeping():
        calls.append(time.monotonic())
        if len(calls) == 1:
            raise sqlite3.OperationalError("disk I/O error")

    worker = Worker(store, {"echo": lambda p, progress, cancel: p}, poll_s=0.02, heartbeat_s=0.05, stale_after_s=5,
                    housekeeping=housekeeping, housekeeping_every_s=0.1).start()
    try:
        with caplog.at_level("ERROR", logger="web.jobs"):
            assert wait_for(lambda: len(calls) >= 3)
        assert "disk I/O error" in caplog.text and worker.running
    finally:
        worker.stop()


def test_an_idle_poll_does_not_write(tmp_path):
    """SQLite: an empty poll used to be a write transaction (BEGIN IMMEDIATE), so every idle lane queued behind any
    writer, twice a second, and waited out the busy timeout while another process held the write lock."""
    store = JobStore(tmp_path / "jobs.sqlite3")
    holder = sqlite3.connect(tmp_path / "jobs.sqlite3", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process writes for a long time
    try:
        t0 = time.perf_counter()
        assert store.claim("w", ["preview"]) is None
        assert time.perf_counter() - t0 < 1.0
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_the_worker_process_logs_a_lane_that_turns_stuck_and_recovers(store, caplog):
    """`coinage worker` has no /readyz: serve_forever logs lanes that stop beating (and come back)."""
    release = threading.Event()

    class Stalled:
        def __getattr__(self, name):
            return getattr(store, name)

        def claim(self, worker, kinds):
            release.wait(10)
            return store.claim(worker, kinds)

    worker = Worker(Stalled(), {"echo": lambda p, progress, cancel: p}, poll_s=0.02, heartbeat_s=0.05,
                    stale_after_s=0.3)
    serving = threading.Thread(target=worker.serve_forever, kwargs={"check_every_s": 0.05})
    with caplog.at_level("WARNING", logger="web.jobs"):
        serving.start()
        try:
            assert wait_for(lambda: "worker lane echo is stuck" in caplog.text)
            release.set()
            assert wait_for(lambda: "worker lane echo is healthy again" in caplog.text)
        finally:
            release.set()
            worker.request_stop()
            serving.join(10)
