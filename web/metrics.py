"""`/metrics` in the Prometheus text exposition format (version 0.0.4), written here without a client library.

- `coinage_http_request_duration_seconds` (histogram; endpoint, method, status class): this process's
  requests. With several gunicorn workers each process counts its own (scrape each, or sum).
- `coinage_generation_seconds` (histogram): run time of finished preview jobs (GAIR + previews);
  `coinage_job_duration_seconds` (histogram; kind): of every finished job. Both come from the
  job store, so every process reports the same numbers.
- `coinage_jobs` (gauge; kind, status): jobs in the store.
- `coinage_concepts` (gauge; state active/inactive) and `coinage_index_ready` (gauge 0/1).
"""
from __future__ import annotations

import math
import threading
import time
from typing import Iterable

from flask import Flask, Response, g, request

from web.jobs import DURATION_BUCKETS, STATUSES

REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Histogram:
    """A labelled histogram kept in memory (thread-safe)."""

    def __init__(self, name: str, help_text: str, labels: tuple[str, ...], buckets: Iterable[float]):
        self.name, self.help, self.labels = name, help_text, labels
        self.buckets = tuple(sorted(buckets))
        self._series: dict[tuple[str, ...], list] = {}  # labels -> [bucket counts..., count, sum]
        self._lock = threading.Lock()

    def observe(self, value: float, *labels: str) -> None:
        with self._lock:
            series = self._series.setdefault(labels, [0] * len(self.buckets) + [0, 0.0])
            for i, le in enumerate(self.buckets):
                if value <= le:
                    series[i] += 1
            series[-2] += 1
            series[-1] += value

    def expose(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        with self._lock:
            items = sorted(self._series.items())
        for labels, series in items:
            base = dict(zip(self.labels, labels))
            for i, le in enumerate(self.buckets):
                lines.append(f"{self.name}_bucket{_labels({**base, 'le': _num(le)})} {series[i]}")
            lines.append(f"{self.name}_bucket{_labels({**base, 'le': '+Inf'})} {series[-2]}")
            lines.append(f"{self.name}_count{_labels(base)} {series[-2]}")
            lines.append(f"{self.name}_sum{_labels(base)} {_num(series[-1])}")
        return lines


def _escape(value: str) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items()) + "}"


def _num(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value)) if not float(value).is_integer() else f"{float(value):.1f}"


def _stored_histogram(name: str, help_text: str, data: dict[str, dict], label: str | None) -> list[str]:
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} histogram"]
    for kind, series in sorted(data.items()):
        base = {label: kind} if label else {}
        counts = dict(series["buckets"])
        for le in DURATION_BUCKETS:
            lines.append(f"{name}_bucket{_labels({**base, 'le': _num(le)})} {counts.get(le, 0)}")
        lines.append(f"{name}_bucket{_labels({**base, 'le': '+Inf'})} {series['count']}")
        lines.append(f"{name}_count{_labels(base)} {series['count']}")
        lines.append(f"{name}_sum{_labels(base)} {_num(series['sum'])}")
    return lines


def exposition(app: Flask) -> str:
    res = app.extensions["coinage"]
    lines = app.extensions["coinage.metrics"].expose()
    durations = res.jobs.durations()
    lines += _stored_histogram("coinage_generation_seconds", "Run time of finished preview jobs (GAIR and previews).",
                               {"preview": durations["preview"]} if "preview" in durations else {}, None)
    lines += _stored_histogram("coinage_job_duration_seconds", "Run time of finished jobs by kind.", durations, "kind")
    counts = res.jobs.counts()
    lines += ["# HELP coinage_jobs Jobs in the job store by kind and status.", "# TYPE coinage_jobs gauge"]
    kinds = sorted({k for k, _ in counts} | {"preview", "train", "reindex"})
    for kind in kinds:
        for status in STATUSES:
            lines.append(f"coinage_jobs{_labels({'kind': kind, 'status': status})} {counts.get((kind, status), 0)}")
    concepts = res.registry.list()
    active = sum(1 for c in concepts if c.active_version)
    lines += ["# HELP coinage_concepts Registered concepts by state.", "# TYPE coinage_concepts gauge",
              f'coinage_concepts{{state="active"}} {active}', f'coinage_concepts{{state="inactive"}} {len(concepts) - active}']
    ready, _ = res.index_ready()
    lines += ["# HELP coinage_index_ready Whether the product index exists (1) or not (0).",
              "# TYPE coinage_index_ready gauge", f"coinage_index_ready {int(ready)}"]
    return "\n".join(lines) + "\n"


def init_app(app: Flask) -> None:
    histogram = Histogram("coinage_http_request_duration_seconds", "HTTP request latency of this process.",
                          ("endpoint", "method", "status"), REQUEST_BUCKETS)
    app.extensions["coinage.metrics"] = histogram

    @app.after_request
    def record(response):
        started = g.get("request_started")
        if started is not None and request.endpoint != "static":
            histogram.observe(time.perf_counter() - started, request.endpoint or "unmatched", request.method,
                              f"{response.status_code // 100}xx")
        return response

    @app.get("/metrics")
    def metrics():
        return Response(exposition(app), mimetype=None, content_type=CONTENT_TYPE)
