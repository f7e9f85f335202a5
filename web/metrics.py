"""`/metrics` in the Prometheus text exposition format (version 0.0.4), with prometheus_client.

- `coinage_http_request_duration_seconds` (histogram; endpoint, method, status class): requests served. Under
  gunicorn set PROMETHEUS_MULTIPROC_DIR to an empty directory writable by every worker (before the app is
  imported): each worker then writes its samples there (prometheus_client's multiprocess mode) and every
  scrape, whichever worker answers it, reports the sum over all of them. Without it, each process counts its own.
- `coinage_generation_seconds` (histogram): run time of finished preview jobs (GAIR + previews);
  `coinage_job_duration_seconds` (histogram; kind): of every finished job. Both come from the
  job store, so every process reports the same numbers.
- `coinage_jobs` (gauge; kind, status): jobs in the store.
- `coinage_concepts` (gauge; state active/inactive) and `coinage_index_ready` (gauge 0/1).

The job and concept numbers tell what the admins do, so /metrics is not public: a scraper sends
`Authorization: Bearer <COINAGE_METRICS_TOKEN>`, or a logged-in admin opens it; anyone else gets 401.
"""
from __future__ import annotations

import hmac
import os
import time

from flask import Flask, Response, g, request
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from web.jobs import DURATION_BUCKETS, STATUSES

from .errors import ApiError
from .security import is_admin

REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
MULTIPROC_VAR = "PROMETHEUS_MULTIPROC_DIR"  # prometheus_client's own variable


def request_histogram(registry: CollectorRegistry | None) -> Histogram:
    """The HTTP latency histogram, registered in `registry` (None in multiprocess mode: the samples go to this
    process's files under PROMETHEUS_MULTIPROC_DIR and a MultiProcessCollector reads them back)."""
    return Histogram("coinage_http_request_duration_seconds", "HTTP request latency.",
                     ("endpoint", "method", "status"), buckets=REQUEST_BUCKETS, registry=registry)


def _stored_histogram(name: str, help_text: str, data: dict[str, dict], label: str | None) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, help_text, labels=[label] if label else [])
    for kind, series in sorted(data.items()):
        counts = dict(series["buckets"])
        buckets = [(_le(le), counts.get(le, 0)) for le in DURATION_BUCKETS] + [("+Inf", series["count"])]
        family.add_metric([kind] if label else [], buckets, series["sum"])
    return family


def _le(value: float) -> str:
    return repr(float(value))


class StoreCollector:
    """What every process reads alike from the job store, the registry and the vector store, at scrape time."""

    def __init__(self, app: Flask):
        self.app = app

    def collect(self):
        res = self.app.extensions["coinage"]
        durations = res.jobs.durations()
        yield _stored_histogram("coinage_generation_seconds", "Run time of finished preview jobs (GAIR and previews).",
                                {"preview": durations["preview"]} if "preview" in durations else {}, None)
        yield _stored_histogram("coinage_job_duration_seconds", "Run time of finished jobs by kind.", durations, "kind")
        counts = res.jobs.counts()
        jobs = GaugeMetricFamily("coinage_jobs", "Jobs in the job store by kind and status.", labels=["kind", "status"])
        for kind in sorted({k for k, _ in counts} | {"preview", "train", "reindex"}):
            for status in STATUSES:
                jobs.add_metric([kind, status], counts.get((kind, status), 0))
        yield jobs
        concepts = res.registry.list()
        active = sum(1 for c in concepts if c.active_version)
        family = GaugeMetricFamily("coinage_concepts", "Registered concepts by state.", labels=["state"])
        family.add_metric(["active"], active)
        family.add_metric(["inactive"], len(concepts) - active)
        yield family
        ready, _ = res.index_ready()
        yield GaugeMetricFamily("coinage_index_ready", "Whether the product index exists (1) or not (0).", value=int(ready))


def exposition(app: Flask) -> bytes:
    return generate_latest(app.extensions["coinage.metrics"])


def _allowed(token: str | None) -> bool:
    if token:
        sent = request.headers.get("Authorization", "")
        if hmac.compare_digest(sent.encode(), f"Bearer {token}".encode()):
            return True
    return is_admin()


def init_app(app: Flask, metrics_token: str | None = None) -> None:
    """Record request latencies and serve /metrics (to `metrics_token`'s bearer or an admin)."""
    registry = CollectorRegistry()
    multiproc_dir = os.environ.get(MULTIPROC_VAR)
    if multiproc_dir:
        MultiProcessCollector(registry, path=multiproc_dir)
    histogram = request_histogram(None if multiproc_dir else registry)
    registry.register(StoreCollector(app))
    app.extensions["coinage.metrics"] = registry

    @app.after_request
    def record(response):
        started = g.get("request_started")
        if started is not None and request.endpoint != "static":
            histogram.labels(request.endpoint or "unmatched", request.method,
                             f"{response.status_code // 100}xx").observe(time.perf_counter() - started)
        return response

    @app.get("/metrics")
    def metrics():
        if not _allowed(metrics_token):
            raise ApiError(401, "metrics_login_required", "/metrics needs `Authorization: Bearer <token>` with the "
                           "token in COINAGE_METRICS_TOKEN (or an admin login)")
        return Response(exposition(app), mimetype=None, content_type=CONTENT_TYPE)
