"""Admin pages (login required): concepts (register, train, activate, delete, download), catalog reindex, jobs."""
from __future__ import annotations

import json

from flask import (Blueprint, Response, abort, current_app, make_response, redirect, render_template, request,
                   send_file, url_for)

from engine.concepts import SAMPLES_FILE, ConceptError
from engine.errors import CoinageError, TokenError
from engine.tokenizer import validate_placeholder
from trainer import METHODS

from .. import concepts_admin as ca
from ..errors import ApiError, from_engine
from ..file_response import image_response
from ..jobs_submit import submit_reindex
from ..runners import _file_name
from ..security import admin_required, is_site_path, login, logout, safe_next
from ..uploads import check_images, form_files
from . import is_htmx, resources

bp = Blueprint("admin", __name__, url_prefix="/admin")
REJECTS_SHOWN = 200


def _go(url: str) -> Response:
    """Redirect; for htmx, a client-side navigation (HX-Redirect), since a 303 would be swapped in place."""
    if is_htmx():
        response = make_response("", 204)
        response.headers["HX-Redirect"] = url
        return response
    return redirect(url, code=303)


def _placeholder(name: str) -> str:
    try:
        return validate_placeholder(f"<{name}>")
    except TokenError:
        abort(404)


def _concept(name: str):
    try:
        return resources().registry.get(_placeholder(name))
    except ConceptError:
        abort(404)


# ---------------------------------------------------------------------------- login

@bp.route("/login", methods=["GET", "POST"], endpoint="login")
def login_page():
    res = resources()
    error = None
    if request.method == "POST":
        throttle = current_app.extensions["coinage.login_throttle"]
        client = request.remote_addr or "unknown"
        throttle.check(client)
        user, password = request.form.get("user", ""), request.form.get("password", "")
        if login(user, password, res.settings, current_app.extensions["coinage.password_hash"]):
            return _go(safe_next(request.form.get("next")))
        throttle.failed(client)
        error = "Wrong user name or password."
    status = 401 if error else 200
    target = request.values.get("next", "")
    return render_template("admin/login.html", error=error, next=target if is_site_path(target) else "",
                           user=request.form.get("user", "")), status



@bp.post("/logout", endpoint="logout")
def logout_page():
    logout()
    return _go(url_for("search.index"))


@bp.get("/")
@admin_required
def home():
    return redirect(url_for("admin.concepts"))


# ---------------------------------------------------------------------------- concepts

@bp.get("/concepts")
@admin_required
def concepts():
    res = resources()
    rows = [_row(res, c) for c in res.registry.list()]
    template = "partials/concept_rows.html" if is_htmx() else "admin/concepts.html"
    return render_template(template, rows=rows)


def _row(res, concept) -> dict:
    job = ca.training_job(res, concept.placeholder)
    return {"c": concept, "job": job, "summary": ca.metric_summary(concept.metrics),
            "images": len(res.registry.images(concept.placeholder))}


@bp.get("/concepts/new")
@admin_required
def new_concept():
    res = resources()
    return render_template("admin/concept_new.html", values={}, error=None, defaults=res.settings.train,
                           limits=res.settings.limits, methods=_methods())


def _methods() -> list[str]:
    return list(METHODS)


@bp.post("/concepts")
@admin_required
def create_concept():
    res = resources()
    values = request.form.to_dict()
    try:
        form = ca.parse_concept_form(values, res.settings.train)
        images = check_images(form_files("images"), res.settings.limits)
        concept, _job = ca.register_concept(res, form, images)
    except ApiError as e:
        return _new_form_error(values, e)
    except CoinageError as e:  # engine errors (bad images, registry) go back to the form
        return _new_form_error(values, from_engine(e))
    return _go(url_for("admin.concept", name=concept.name))


def _new_form_error(values: dict, error: ApiError):
    res = resources()
    template = "partials/concept_form.html" if is_htmx() else "admin/concept_new.html"
    return render_template(template, values=values, error=error, defaults=res.settings.train,
                           limits=res.settings.limits, methods=_methods()), error.status


@bp.post("/concepts/suggest")
@admin_required
def suggest_attributes():
    """Suggested attribute words for the chosen images and parent word (an editable field)."""
    res = resources()
    parent = (request.form.get("parent") or "").strip()
    current = (request.form.get("attributes") or "").strip()
    suggested = (request.form.get("attributes_suggested") or "").strip()
    files = form_files("images")

    def field(value: str, note: str, error: bool = False, offered: str = ""):
        return render_template("partials/attribute_field.html", value=value, suggested=offered, note=note, error=error)

    if current and current != suggested:
        return field(current, "Kept the attributes you typed; clear the field to get suggestions from the photos.")
    if not parent or len(files) < res.settings.limits.min_concept_images:
        return field(current, f"Choose {res.settings.limits.min_concept_images} or more images and type the parent "
                              "word to get suggestions, or type attributes yourself.", offered=suggested)
    try:
        images = check_images(files, res.settings.limits)
    except ApiError as e:
        return field(current, e.message, error=True, offered=suggested)
    words = ", ".join(ca.suggest_attributes(res, images, parent))
    return field(words, "Suggested from your images; edit freely (leave empty to choose automatically).", offered=words)


@bp.get("/concepts/<name>")
@admin_required
def concept(name: str):
    res = resources()
    c = _concept(name)
    return render_template("admin/concept.html", **_detail(res, c))


def _detail(res, c) -> dict:
    from trainer.words import parent_warnings

    versions = res.registry.versions(c.placeholder)
    job = ca.training_job(res, c.placeholder)
    latest_ready = next((v for v in reversed(versions) if v.status == "ready"), None)
    shown = c.active_version or (latest_ready.version if latest_ready else None)
    has_samples = shown is not None and (res.registry.version_dir(c.placeholder, shown) / "samples.png").is_file()
    return {"c": c, "versions": versions, "job": job, "samples_version": shown if has_samples else None,
            "images": len(res.registry.images(c.placeholder)), "summary": ca.metric_summary(c.metrics),
            "train": _training_view(job),
            "warnings": parent_warnings(c.parent) + ca.name_warnings(res, c.placeholder)}


def _training_view(job) -> dict | None:
    """What the training fragment shows: phase, step/total, loss terms, ETA, the loss curve as SVG points."""
    if job is None:
        return None
    p = job.progress or {}
    step, total = int(p.get("step") or 0), int(p.get("total") or job.params.get("config", {}).get("steps") or 0)
    history = p.get("history") or []
    points = ""
    if len(history) >= 2:
        losses = [h[1] for h in history]
        lo, hi = min(losses), max(losses)
        span = (hi - lo) or 1.0
        first, last = history[0][0], history[-1][0]
        width = (last - first) or 1
        points = " ".join(f"{(s - first) / width * 300:.1f},{78 - (v - lo) / span * 74:.1f}" for s, v in history)
    return {"job": job, "phase": p.get("phase") or ("queued" if job.status == "queued" else job.status),
            "step": step, "total": total, "percent": int(100 * step / total) if total else 0,
            "losses": p.get("losses") or {}, "eta_s": p.get("eta_s"), "elapsed_s": p.get("elapsed_s"),
            "points": points, "loss_range": (history[0][1], history[-1][1]) if history else None,
            "result": job.result or {}}


@bp.get("/concepts/<name>/training")
@admin_required
def training(name: str):
    """The live training fragment (polls itself while the job runs; tells the page to refresh when it ends)."""
    res = resources()
    c = _concept(name)
    detail = _detail(res, c)
    response = make_response(render_template("partials/training.html", **detail))
    job = detail["job"]
    if job is not None and not job.active and request.args.get("was") in ("queued", "running"):
        response.headers["HX-Trigger"] = json.dumps({"concept-updated": {"status": job.status}})
    return response


@bp.get("/concepts/<name>/summary")
@admin_required
def concept_summary(name: str):
    res = resources()
    part = "partials/concept_versions.html" if request.args.get("part") == "versions" else "partials/concept_summary.html"
    return render_template(part, **_detail(res, _concept(name)))


@bp.post("/concepts/<name>/activate")
@admin_required
def activate(name: str):
    res = resources()
    c = _concept(name)
    version = request.form.get("version") or next(
        (v.version for v in reversed(res.registry.versions(c.placeholder)) if v.status == "ready"), None)
    if version is None:
        raise ApiError(409, "not_trained", f"{c.placeholder} has no finished version yet; wait for training to end "
                       "or retrain it")
    res.registry.activate(c.placeholder, version)
    return _go(url_for("admin.concept", name=name))


@bp.post("/concepts/<name>/deactivate")
@admin_required
def deactivate(name: str):
    res = resources()
    res.registry.deactivate(_concept(name).placeholder)
    return _go(url_for("admin.concept", name=name))


@bp.post("/concepts/<name>/retrain")
@admin_required
def retrain(name: str):
    res = resources()
    c = _concept(name)
    steps = ca.int_field(request.form, "steps", res.settings.train.steps, 1, ca.MAX_STEPS)
    ca.start_training(res, c.placeholder, steps)
    return _go(url_for("admin.concept", name=name))


@bp.post("/concepts/<name>/cancel")
@admin_required
def cancel_training(name: str):
    res = resources()
    job = ca.training_job(res, _concept(name).placeholder)
    if job is not None and job.active:
        res.jobs.request_cancel(job.id)
    return _go(url_for("admin.concept", name=name))


@bp.post("/concepts/<name>/delete")
@admin_required
def delete(name: str):
    ca.delete_concept(resources(), _concept(name).placeholder)
    return _go(url_for("admin.concepts"))


@bp.get("/concepts/<name>/token.safetensors")
@admin_required
def download_token(name: str):
    res = resources()
    c = _concept(name)
    path = res.registry.token_path(c.placeholder, request.args.get("version") or None)
    suffix = f"-{request.args['version']}" if request.args.get("version") else ""
    return send_file(path, as_attachment=True, download_name=f"{c.name}{suffix}.safetensors",
                     mimetype="application/octet-stream")


@bp.get("/concepts/<name>/versions/<version>/samples.png")
@admin_required
def samples(name: str, version: str):
    res = resources()
    c = _concept(name)
    try:
        res.registry.version(c.placeholder, version)
    except ConceptError:
        abort(404)
    path = res.registry.version_dir(c.placeholder, version) / SAMPLES_FILE
    if not path.is_file():
        abort(404)
    return image_response(path, max_age=60)


@bp.get("/concepts/<name>/images/<int:index>.png")
@admin_required
def concept_image(name: str, index: int):
    res = resources()
    images = res.registry.images(_concept(name).placeholder)
    if not 0 <= index < len(images):
        abort(404)
    return image_response(images[index], max_age=60)


# ---------------------------------------------------------------------------- catalog

@bp.get("/catalog")
@admin_required
def catalog():
    return render_template("admin/catalog.html", **_catalog_view())


def _catalog_view(job_id: str | None = None) -> dict:
    res = resources()
    jobs = res.jobs.list(kind="reindex", limit=10)
    job = res.jobs.get(job_id) if job_id else (jobs[0] if jobs else None)
    ready, index_detail = res.index_ready()
    alias = res.settings.query.collection
    try:
        collection = res.store.get_alias(alias)
    except Exception:  # noqa: BLE001 - shown as unknown; readiness reports the store problem
        collection = None
    return {"jobs": jobs, "job": job, "ready": ready, "index_detail": index_detail, "alias": alias,
            "collection": collection, "catalog_path": res.settings.catalog,
            "catalog_exists": res.settings.catalog.is_file(), "info": res.catalog.get(),
            "rejects": _rejects(job) if job is not None else [], "report": _report(job)}


def _report(job) -> dict:
    if job is None:
        return {}
    result = job.result or {}
    ingest = result.get("ingest") or {}
    progress = job.progress or {}
    return {"stage": progress.get("stage"), "done": progress.get("done"), "total": progress.get("total"),
            "rate": progress.get("rate"), "eta_s": progress.get("eta_s"),
            "accepted": ingest.get("accepted", progress.get("accepted")),
            "unchanged": ingest.get("unchanged", progress.get("unchanged")),
            "rejected": ingest.get("rejected", progress.get("rejected")),
            "rows": ingest.get("rows"), "seconds": result.get("seconds"), "switched": result.get("switched"),
            "collection": result.get("collection"), "previous": result.get("previous"),
            "reasons": ingest.get("reject_reasons") or {},
            "percent": int(100 * (progress.get("done") or 0) / progress["total"]) if progress.get("total") else 0}


def _rejects(job) -> list[dict]:
    """The first rejected rows of a reindex job (its rejects file lives in <data_dir>/indexer/)."""
    res = resources()
    name = job.params.get("rejects")
    if not name:
        return []
    try:
        path = res.settings.indexer_dir / _file_name(name)
        rows = []
        with open(path, encoding="utf-8") as f:
            for line in f:
                if len(rows) >= REJECTS_SHOWN:
                    break
                rows.append(json.loads(line))
        return rows
    except (OSError, ValueError):
        return []


@bp.post("/catalog/reindex")
@admin_required
def reindex():
    job_id = submit_reindex(resources())
    if is_htmx():
        return render_template("partials/reindex.html", **_catalog_view(job_id))
    return redirect(url_for("admin.catalog"), code=303)


@bp.get("/catalog/jobs/<job_id>")
@admin_required
def reindex_job(job_id: str):
    return render_template("partials/reindex.html", **_catalog_view(job_id))


# ---------------------------------------------------------------------------- jobs

@bp.get("/jobs")
@admin_required
def jobs():
    res = resources()
    kind = request.args.get("kind") or None
    listed = res.jobs.list(kind=kind, limit=100)
    template = "partials/job_rows.html" if is_htmx() else "admin/jobs.html"
    return render_template(template, jobs=listed, kind=kind, counts=res.jobs.counts())


@bp.post("/jobs/<job_id>/cancel")
@admin_required
def cancel_job(job_id: str):
    res = resources()
    res.jobs.request_cancel(job_id)
    return _go(request.form.get("next") if (request.form.get("next") or "").startswith("/admin/")
               else url_for("admin.jobs"))
