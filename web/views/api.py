"""The JSON API (described by /openapi.json). Errors: `{"error": {"code", "message", ...}}`, never HTML.

Authentication for the admin parts: the session cookie from POST /api/login, with the CSRF token
(GET /api/session) in the X-CSRF-Token header on every POST/DELETE. Search, tokens and preview
jobs are public; POST /api/search is read-only and needs no CSRF token.
"""
from __future__ import annotations

import base64
import binascii
from typing import Any, Mapping

from flask import Blueprint, current_app, jsonify, request, send_file, session, url_for

from engine.text_checks import encoding_problem

from .. import concepts_admin as ca
from ..errors import ApiError, bad_field, missing_field
from ..search_state import cancel_preview, ensure_preview, panel_for
from ..security import admin_required, csrf_exempt, csrf_token, is_admin, login, logout
from ..uploads import check_image, check_images, form_files
from . import resources

bp = Blueprint("api", __name__, url_prefix="/api")


def _json() -> Any:
    """The request's JSON, or None when it is missing or does not parse."""
    try:
        return request.get_json(silent=True)
    except RecursionError:  # json.loads on '[[[[...' nested deeper than the stack: malformed input, not a 500
        return None


def _body() -> dict[str, Any]:
    data = _json()
    if not isinstance(data, dict):
        raise ApiError(400, "invalid_json", "the request body must be a JSON object (send Content-Type: "
                       "application/json)")
    return data


def _placeholder(name: str) -> str:
    from engine.errors import TokenError
    from engine.tokenizer import validate_placeholder

    try:
        return validate_placeholder(name if name.startswith("<") else f"<{name}>")
    except TokenError as e:
        raise ApiError(404, "concept_not_found", str(e)) from e


# ---------------------------------------------------------------------------- session

@bp.get("/session")
def get_session():
    return jsonify({"csrf_token": csrf_token(), "admin": is_admin(), "user": session.get("admin")})


@bp.post("/login")
def api_login():
    res = resources()
    data = _body()
    for name in ("user", "password"):
        if not isinstance(data.get(name), str):
            raise missing_field(name)
        if encoding_problem(data[name]):
            raise bad_field(name, "holds a lone surrogate, which is not valid Unicode text; send it as UTF-8")
    throttle = current_app.extensions["coinage.login_throttle"]
    client = request.remote_addr or "unknown"
    throttle.check(client)
    if not login(data["user"], data["password"], res.settings, current_app.extensions["coinage.password_hash"]):
        throttle.failed(client)
        raise ApiError(401, "bad_credentials", "wrong user name or password")
    return jsonify({"admin": True, "user": session.get("admin"), "csrf_token": csrf_token()})


@bp.post("/logout")
def api_logout():
    logout()
    return jsonify({"admin": False})


# ---------------------------------------------------------------------------- search

def _search_response(data: Mapping[str, Any], want_preview: bool):
    from engine.query import SearchRequest

    res = resources()
    request_obj = SearchRequest.from_json(data, res.query.config)  # its page bounds too
    if request_obj.limit is None:
        request_obj.limit = res.settings.limits.results_per_page
    response = res.query.search(request_obj)
    out = response.to_json()
    out["search_id"] = res.analytics.search(request_obj, response)  # queued, written off the request path
    if not is_admin():
        out.pop("merch")  # which synonyms and rules shaped the results: for the admin only
    for item in out["results"] + [photo for product in out["products"] for photo in product["photos"]]:
        image = item["payload"].get("image")
        item["image_url"] = (url_for("ops.catalog_image", filename=image)
                             if isinstance(image, str) and not image.startswith(("http://", "https://")) else image)
    out["preview"] = None
    if want_preview and request_obj.query.strip() and request_obj.image is None:
        panel = ensure_preview(res, request_obj, response)
        out["preview"] = {**panel.to_json(), "url": url_for("api.get_job", job_id=panel.job.id) if panel.job else None}
    return jsonify(out)


def _query_args() -> dict[str, Any]:
    args = request.args
    data: dict[str, Any] = {"query": args.get("q", args.get("query", ""))}
    for name, kind in (("min_price", float), ("max_price", float), ("limit", int), ("offset", int),
                       ("weight", float), ("seed", int)):
        raw = args.get(name if name != "weight" else ("w" if "w" in args else "weight"))
        if raw not in (None, ""):
            try:
                data[name] = kind(raw)
            except ValueError:
                raise bad_field(name, f"must be a{'n integer' if kind is int else ' number'}, got {raw!r}") from None
    for name in ("category", "colour"):
        values = args.getlist(name)
        if values:
            data[name] = values[0] if len(values) == 1 else values
    for name in ("method", "mode", "retrieval", "sort"):
        if args.get(name):
            data[name] = args[name]
    for name in ("gair", "correct", "facets", "understand"):
        if args.get(name) not in (None, ""):
            data[name] = _query_flag(name, args[name])
    if args.getlist("ignore"):
        data["ignore"] = args.getlist("ignore")
    return data


TRUE_WORDS, FALSE_WORDS = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def _query_flag(name: str, raw: str) -> bool:
    """A boolean query parameter: one of TRUE_WORDS or FALSE_WORDS (any case); anything else is a 400, not False."""
    word = raw.strip().lower()
    if word not in TRUE_WORDS + FALSE_WORDS:
        raise bad_field(name, f"must be one of {', '.join(TRUE_WORDS)} or {', '.join(FALSE_WORDS)}, got {raw[:20]!r}")
    return word in TRUE_WORDS


@bp.get("/search")
def search_get():
    data = _query_args()
    if not data["query"].strip():
        raise missing_field("q", "the search text, e.g. q=red dress (custom tokens as <name>)")
    return _search_response(data, _query_flag("preview", request.args.get("preview") or "1"))


@bp.post("/search")
@csrf_exempt  # read-only: a search changes nothing, and API clients send JSON without a session
def search_post():
    data = _body()
    if "query" not in data and data.get("image") in (None, ""):
        raise missing_field("query", "the search text (or 'image': a base64-encoded photo)")
    want_preview = data.pop("preview", True)
    if not isinstance(want_preview, bool):
        raise bad_field("preview", "must be true or false")
    if isinstance(data.get("image"), str):
        try:
            raw = base64.b64decode(data["image"], validate=True)
        except (binascii.Error, ValueError) as e:
            raise bad_field("image", f"is not valid base64 ({e}); send the image file base64-encoded") from e
        check_image("image", raw, resources().settings.limits, field="image")
    return _search_response(data, want_preview)


@bp.get("/suggest")
def suggest():
    """Suggestions for what is being typed: prefix and fuzzy matches over product names, categories, facet values
    and concept names, with the products each finds (engine/query/suggest.py)."""
    if "q" not in request.args:
        raise missing_field("q", "the text typed so far, e.g. q=dre")
    q = request.args["q"]
    if len(q) > 200:
        raise bad_field("q", f"must be at most 200 characters, got {len(q)}")
    raw = request.args.get("limit", "8")
    if not (raw.isascii() and raw.isdigit() and 1 <= int(raw) <= 50):
        raise bad_field("limit", f"must be an integer from 1 to 50, got {raw[:20]!r}")
    found = resources().query.suggestions.suggest(q, int(raw))
    return jsonify({"q": q, "suggestions": [s.to_json() for s in found]})


@bp.get("/tokens")
def tokens():
    """The live custom tokens (for autocomplete): placeholder, parent word, thumbnail URL."""
    res = resources()
    live = res.tokens()
    concepts = {c.placeholder: c for c in res.registry.list()}
    return jsonify({"tokens": [{"placeholder": name, "parent": live.get(name).meta.parent,
                                "method": concepts[name].method if name in concepts else live.get(name).meta.method,
                                "version": concepts[name].active_version if name in concepts else None,
                                "thumbnail": url_for("search.concept_thumb", name=name[1:-1])}
                               for name in live.names()]})


# ---------------------------------------------------------------------------- concepts

@bp.get("/concepts")
@admin_required
def list_concepts():
    res = resources()
    return jsonify({"concepts": [ca.concept_json(res, c, with_versions=False) for c in res.registry.list()]})


@bp.post("/concepts")
@admin_required
def create_concept():
    res = resources()
    if request.mimetype == "application/json":
        data = _body()
        encoded = data.get("images")
        if encoded is None:
            raise missing_field("images", "a list of 3-50 base64-encoded image files")
        if not isinstance(encoded, list) or not all(isinstance(x, str) for x in encoded):
            raise bad_field("images", "must be a list of base64 strings")
        files = []
        for i, item in enumerate(encoded):
            try:
                files.append((f"images[{i}]", base64.b64decode(item, validate=True)))
            except (binascii.Error, ValueError) as e:
                raise bad_field("images", f"item {i} is not valid base64 ({e})") from e
    else:
        data = request.form.to_dict()
        files = form_files("images")
        if not files:
            raise missing_field("images", "3-50 image files in the multipart field 'images'")
    form = ca.parse_concept_form(data, res.settings.train)
    images = check_images(files, res.settings.limits)
    concept, job_id = ca.register_concept(res, form, images)
    body = {"concept": ca.concept_json(res, concept), "job": res.jobs.get(job_id).to_json(),
            "job_url": url_for("api.get_job", job_id=job_id),
            "warnings": form.warnings + ca.name_warnings(res, concept.placeholder)}
    return jsonify(body), 202


@bp.get("/concepts/<name>")
@admin_required
def get_concept(name: str):
    res = resources()
    return jsonify(ca.concept_json(res, res.registry.get(_placeholder(name))))


@bp.delete("/concepts/<name>")
@admin_required
def delete_concept(name: str):
    res = resources()
    placeholder = _placeholder(name)
    res.registry.get(placeholder)
    ca.delete_concept(res, placeholder)
    return jsonify({"deleted": placeholder})


@bp.post("/concepts/<name>/activate")
@admin_required
def activate(name: str):
    res = resources()
    placeholder = _placeholder(name)
    res.registry.get(placeholder)  # an unknown concept: 404, before looking for its versions
    data = _json() or {}
    version = data.get("version") if isinstance(data, dict) else None
    if version is None:
        version = next((v.version for v in reversed(res.registry.versions(placeholder)) if v.status == "ready"), None)
        if version is None:
            raise ApiError(409, "not_trained", f"{placeholder} has no finished version to activate yet")
    if not isinstance(version, str):
        raise bad_field("version", "must be a version id like 'v0001'")
    return jsonify(ca.concept_json(res, res.registry.activate(placeholder, version)))


@bp.post("/concepts/<name>/deactivate")
@admin_required
def deactivate(name: str):
    res = resources()
    return jsonify(ca.concept_json(res, res.registry.deactivate(_placeholder(name))))


@bp.post("/concepts/<name>/retrain")
@admin_required
def retrain(name: str):
    res = resources()
    data = _json() or {}
    steps = ca.int_field(data if isinstance(data, dict) else {}, "steps", res.settings.train.steps, 1, ca.MAX_STEPS)
    job_id = ca.start_training(res, _placeholder(name), steps)
    return jsonify({"job": res.jobs.get(job_id).to_json(), "job_url": url_for("api.get_job", job_id=job_id)}), 202


@bp.get("/concepts/<name>/token")
@admin_required
def token(name: str):
    res = resources()
    placeholder = _placeholder(name)
    path = res.registry.token_path(placeholder, request.args.get("version") or None)
    return send_file(path, as_attachment=True, download_name=f"{placeholder[1:-1]}.safetensors",
                     mimetype="application/octet-stream")


# ---------------------------------------------------------------------------- jobs

def _job_json(job) -> dict[str, Any]:
    out = job.to_json()
    if job.kind == "preview":
        out["panel"] = panel_for(job, None).to_json()
    return out


def _visible(job) -> None:
    """Preview jobs are public (their ids come with search results); other jobs are the admin's."""
    if job.kind != "preview" and not is_admin():
        raise ApiError(401, "login_required", "log in as admin to see training and reindex jobs (POST /api/login)")


@bp.get("/jobs")
@admin_required
def list_jobs():
    res = resources()
    status = request.args.get("status") or None
    from web.jobs import STATUSES

    if status is not None and status not in STATUSES:
        raise bad_field("status", f"must be one of {', '.join(STATUSES)}")
    jobs = res.jobs.list(kind=request.args.get("kind") or None, status=status,
                         limit=ca.int_field(request.args, "limit", 50, 1, 500))
    return jsonify({"jobs": [_job_json(j) for j in jobs]})


@bp.get("/jobs/<job_id>")
def get_job(job_id: str):
    job = resources().jobs.get(job_id)
    _visible(job)
    return jsonify(_job_json(job))


@bp.post("/jobs/<job_id>/cancel")
def cancel_job(job_id: str):
    """The admin cancels any job; a shopper cancels a preview for themself (it stops when nobody else waits)."""
    res = resources()
    job = res.jobs.get(job_id)
    _visible(job)
    if job.kind != "preview" or is_admin():
        return jsonify({**_job_json(res.jobs.request_cancel(job_id)), "detached": False})
    job, detached = cancel_preview(res, job)
    out = _job_json(job)
    if detached is not None:
        out["panel"] = detached.to_json()
    return jsonify({**out, "detached": detached is not None})


@bp.post("/reindex")
@admin_required
def reindex():
    from ..jobs_submit import submit_reindex

    res = resources()
    job_id = submit_reindex(res)
    return jsonify({"job": res.jobs.get(job_id).to_json(), "job_url": url_for("api.get_job", job_id=job_id)}), 202
