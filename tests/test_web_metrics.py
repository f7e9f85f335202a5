"""/metrics is for a scraper holding COINAGE_METRICS_TOKEN or an admin, sums every gunicorn worker's samples in
prometheus_client's multiprocess mode, and /readyz names no file paths nor database error texts."""
import subprocess
import sys
from pathlib import Path

import pytest

from web import create_app
from web.testing import tiny_settings

TOKEN = "scrape-token-0123456789"
ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture
def make_app(tmp_path):
    apps = []

    def make():
        app = create_app(tiny_settings(tmp_path, metrics_token=TOKEN))
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.extensions["coinage"].close()


def test_metrics_need_the_scrape_token_or_an_admin(make_app):
    client = make_app().test_client()
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    ok = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert ok.status_code == 200 and ok.content_type.startswith("text/plain; version=0.0.4")
    assert 'coinage_jobs{kind="train",status="queued"} 0.0' in ok.get_data(as_text=True)
    token = client.get("/api/session").json["csrf_token"]
    client.post("/api/login", json={"user": "admin", "password": "secret-pw"}, headers={"X-CSRF-Token": token})
    assert client.get("/metrics").status_code == 200


def test_readyz_names_no_paths_nor_database_errors(make_app, monkeypatch):
    from sqlite3 import OperationalError

    app = make_app()
    res = app.extensions["coinage"]

    def broken(*args, **kwargs):
        raise OperationalError(f"unable to open database file {res.settings.jobs_db}")

    monkeypatch.setattr(res.jobs, "count", broken)
    r = app.test_client().get("/readyz")
    text = r.get_data(as_text=True)
    assert r.status_code == 503 and not r.json["checks"]["jobs"]["ok"]
    assert str(res.settings.data_dir) not in text and "OperationalError" not in text and "unable to open" not in text
    assert "server log" in r.json["checks"]["jobs"]["detail"]


WORKER = """
from web.metrics import request_histogram
histogram = request_histogram(None)
for _ in range(3):
    histogram.labels("search.search", "GET", "2xx").observe(0.01)
"""


def test_multiprocess_mode_reports_the_sum_over_worker_processes(make_app, tmp_path, monkeypatch):
    shared = tmp_path / "prometheus"
    shared.mkdir()
    env = {"PROMETHEUS_MULTIPROC_DIR": str(shared), "PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    workers = [subprocess.Popen([sys.executable, "-c", WORKER], env=env, cwd=ROOT) for _ in range(2)]  # 2 "gunicorn workers"
    assert [w.wait(timeout=120) for w in workers] == [0, 0]
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(shared))
    client = make_app().test_client()
    text = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).get_data(as_text=True)
    assert 'coinage_http_request_duration_seconds_count{endpoint="search.search",method="GET",status="2xx"} 6.0' in text
    assert "coinage_index_ready" in text  # the store's numbers are still there, once
    assert text.count("# TYPE coinage_index_ready gauge") == 1
