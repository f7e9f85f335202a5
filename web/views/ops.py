"""Operations and files: /healthz, /readyz, /openapi.json, catalog images and preview PNGs."""
from __future__ import annotations

import mimetypes

from flask import Blueprint, abort, jsonify, make_response, send_from_directory

from ..openapi import spec
from . import resources

bp = Blueprint("ops", __name__)


@bp.get("/healthz")
def healthz():
    """Liveness: the process answers."""
    return jsonify({"status": "ok"})


@bp.get("/readyz")
def readyz():
    """Readiness: backbone loaded, store open, product index present, job store reachable."""
    res = resources()
    checks: dict[str, dict] = {"backbone": {"ok": True, "detail": f"{res.backbone.id} on {res.backbone.device}"}}
    ready, detail = res.index_ready()
    checks["index"] = {"ok": ready, "detail": detail}
    try:
        res.jobs.count()
        checks["jobs"] = {"ok": True, "detail": res.jobs.location}
    except Exception as e:  # noqa: BLE001 - any failure means "not ready", reported with its text
        checks["jobs"] = {"ok": False, "detail": f"{type(e).__name__}: {e}"}
    worker = res.worker
    checks["worker"] = {"ok": True, "detail": res.settings.worker.mode + (
        "" if worker is None or worker.running else " (stopped)")}
    if worker is not None:  # the worker thread of this process: each lane alive and looping (web/jobs/worker.py)
        lanes = worker.health()
        bad = [f"{'+'.join(h.lane)}: {'stuck' if h.alive else 'dead'} ({h.seconds_since_beat:.0f} s since it "
               f"looped or heartbeat, {h.errors} errors in a row)" for h in lanes if not h.ok]
        checks["worker"] = {"ok": not bad, "detail": "; ".join(bad) or checks["worker"]["detail"],
                            "lanes": [h.to_json() for h in lanes]}
    ok = all(c["ok"] for c in checks.values())
    return jsonify({"ready": ok, "checks": checks}), 200 if ok else 503


@bp.get("/openapi.json")
def openapi():
    res = resources()
    return jsonify(spec(res.query.config, res.settings.limits))


@bp.get("/catalog/<path:filename>")
def catalog_image(filename: str):
    """A catalog image, only from under the catalog's folder (safe_join refuses '..' and absolute paths)."""
    kind, _ = mimetypes.guess_type(filename)
    if not (kind or "").startswith("image/"):  # catalog.jsonl, truth.jsonl, ... stay private
        abort(404)
    return send_from_directory(resources().settings.catalog_root, filename, max_age=3600)


@bp.get("/previews/<key>.png")
def preview_png(key: str):
    png = resources().query.preview_png(key)  # None for unknown keys and anything that is not a key
    if png is None:
        abort(404)
    response = make_response(png)
    response.headers["Content-Type"] = "image/png"
    response.headers["Cache-Control"] = "public, max-age=86400, immutable"  # keys are content-derived
    return response
