"""Operations and files: /healthz, /readyz, /openapi.json, catalog images and preview PNGs."""
from __future__ import annotations

import logging
import mimetypes
from pathlib import Path

from flask import Blueprint, abort, jsonify, make_response
from werkzeug.security import safe_join

from ..file_response import image_response
from ..openapi import spec
from . import resources

log = logging.getLogger(__name__)
bp = Blueprint("ops", __name__)


@bp.get("/healthz")
def healthz():
    """Liveness: the process answers."""
    return jsonify({"status": "ok"})


@bp.get("/readyz")
def readyz():
    """Readiness: backbone loaded, store open, product index present, job store reachable. Public, so the details
    name no file paths, hosts or error texts (those go to the server log)."""
    res = resources()
    name = Path(res.backbone.id).name  # a local backbone's id is its folder: show only the folder's name
    checks: dict[str, dict] = {"backbone": {"ok": True, "detail": f"{name} on {res.backbone.device}"}}
    ready, detail = res.index_ready()
    checks["index"] = {"ok": ready, "detail": detail}
    try:
        res.jobs.count()
        checks["jobs"] = {"ok": True, "detail": "job database reachable"}
    except Exception as e:  # noqa: BLE001 - any failure means "not ready"; the text (paths, hosts) goes to the log
        log.warning("readiness: the job database %s is not usable: %s: %s", res.jobs.location, type(e).__name__, e)
        checks["jobs"] = {"ok": False, "detail": "the job database is unreachable; the server log has the error "
                                                 "(check COINAGE_DATABASE_URL or that COINAGE_DATA_DIR is writable)"}
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
    """A catalog image, only from under the catalog's folder: safe_join refuses '..' and absolute paths, and the
    path is resolved (symlinks followed) and refused unless it is a regular image file still under that folder."""
    root = resources().settings.catalog_root  # resolved
    joined = safe_join(str(root), filename)
    try:
        path = Path(joined).resolve() if joined is not None and "\0" not in joined else None
        servable = path is not None and path.is_relative_to(root) and path.is_file() and all(
            (mimetypes.guess_type(name)[0] or "").startswith("image/") for name in (filename, path.name))
    except (OSError, ValueError, RuntimeError):  # a symlink loop (RuntimeError before 3.13), a name too long
        servable = False
    if not servable:
        abort(404)  # catalog.jsonl, truth.jsonl, a link to the secret key or to a concept's photos stay private
    return image_response(path, max_age=3600)


@bp.get("/previews/<key>.png")
def preview_png(key: str):
    png = resources().query.preview_png(key)  # None for unknown keys and anything that is not a key
    if png is None:
        abort(404)
    response = make_response(png)
    response.headers["Content-Type"] = "image/png"
    response.headers["Cache-Control"] = "public, max-age=86400, immutable"  # keys are content-derived
    return response
