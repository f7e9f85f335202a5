"""Shopper pages: search by text or photo, results at once, the preview filling in, autocomplete of tokens."""
from __future__ import annotations

from flask import Blueprint, Response, abort, make_response, redirect, render_template, request

from ..errors import ApiError
from ..file_response import image_response
from ..search_state import SearchForm, photo_path, run_search, save_photo
from ..uploads import check_image
from . import is_htmx, resources

bp = Blueprint("search", __name__)
THUMB_SIZE = 96
SUGGESTIONS = 8  # catalog suggestions in the search box's dropdown


def _render(outcome, status: int | None = None) -> Response:
    res = resources()
    tokens = res.tokens()
    context = {"s": outcome, "catalog": res.catalog.get(), "backbone": res.backbone,
               "live_tokens": [(t, tokens.get(t).meta.parent) for t in tokens.names()]}
    template = "partials/search_main.html" if is_htmx() else "search.html"
    response = make_response(render_template(template, **context), status or outcome.status)
    response.headers["Vary"] = "HX-Request"
    return response


@bp.get("/")
def index():
    return search()


@bp.get("/search")
def search():
    res = resources()
    form = SearchForm.from_args(request.args)
    if not form.has_query and "q" not in request.args:  # the start page: no message yet
        from ..search_state import SearchOutcome

        return _render(SearchOutcome(form=form, per_page=res.settings.limits.results_per_page))
    response = _render(run_search(res, form))
    if is_htmx():
        response.headers["HX-Push-Url"] = form.url()  # the clean URL (no empty filter fields)
    return response


@bp.post("/search/photo")
def search_photo():
    res = resources()
    upload = request.files.get("photo")
    if upload is None or not upload.filename:
        raise ApiError(400, "missing_field", "choose a photo to search by (PNG, JPEG or WebP)", field="photo")
    image = check_image(upload.filename, upload.read(), res.settings.limits, field="photo")
    sha = save_photo(res.settings.uploads_dir, image.data, image.extension)
    form = SearchForm.from_args({**request.form.to_dict(), "photo": sha, "page": "1", "w": ""})
    if not is_htmx():
        return redirect(form.url(), code=303)
    response = _render(run_search(res, form))
    response.headers["HX-Push-Url"] = form.url()
    return response


@bp.get("/search/photo/<sha>")
def photo(sha: str):
    path = photo_path(resources().settings.uploads_dir, sha)
    if path is None:
        abort(404)
    return image_response(path, max_age=3600)


@bp.get("/search/preview/<job_id>")
def preview(job_id: str):
    """The preview panel of a job (htmx polls it until the job finishes); re-ranks the results after GAIR."""
    from ..search_state import panel_for

    res = resources()
    form = SearchForm.from_args(request.args)
    job = res.jobs.get(job_id)
    if job.kind != "preview":
        abort(404)
    panel = panel_for(job, form.w, request.args.get("ws", ""))
    outcome = None
    if panel.state == "done" and panel.gair and form.w is None and panel.weight_source == "gair-pending":
        outcome = run_search(res, form, with_preview=False)  # the GAIR w* is cached now: results at w*
        outcome.preview = panel
    return render_template("partials/preview.html", panel=panel, form=form, rerank=outcome,
                           catalog=res.catalog.get())


@bp.post("/jobs/<job_id>/cancel")
def cancel_preview(job_id: str):
    """Cancel a preview for this shopper (it stops when nobody else waits on it; training and reindex jobs are
    cancelled from the admin pages)."""
    from ..search_state import cancel_preview as cancel, panel_for

    res = resources()
    job = res.jobs.get(job_id)
    if job.kind != "preview":
        raise ApiError(403, "forbidden", "only preview jobs can be cancelled here; use the admin jobs page")
    job, detached = cancel(res, job)
    form = SearchForm.from_args(request.form)
    return render_template("partials/preview.html", panel=detached or panel_for(job, form.w), form=form, rerank=None)


@bp.get("/search/suggest")
def suggest():
    """Autocomplete: the active tokens matching the `<...` being typed at the end of the query; else the catalog's
    suggestions for the text (names, categories, facet values, concept names: engine/query/suggest.py)."""
    q = request.args.get("q", "")[:200]
    start = q.rfind("<")
    if start < 0 or ">" in q[start:]:
        found = resources().query.suggestions.suggest(q, SUGGESTIONS) if q.strip() else []
        return render_template("partials/suggestions.html", items=[], prefix=None, catalog_items=found)
    prefix = q[start + 1:].strip().lower()
    tokens = resources().tokens()
    concepts = {c.placeholder: c for c in resources().registry.list()}
    names = tokens.names()
    ranked = [n for n in names if n[1:].startswith(prefix)] + [n for n in names if prefix in n and not n[1:].startswith(prefix)]
    items = [{"placeholder": n, "name": n[1:-1], "parent": tokens.get(n).meta.parent,
              "method": concepts[n].method if n in concepts else ""} for n in ranked[:12]]
    return render_template("partials/suggestions.html", items=items, prefix=prefix)


@bp.get("/concepts/<name>/thumb.png")
def concept_thumb(name: str):
    """First example image of a concept, small: public for live concepts (autocomplete), else admin only. The
    thumbnail is made once by the registry (ConceptRegistry.thumbnail), not decoded from the photo per request."""
    from engine.concepts import ConceptError
    from engine.errors import TokenError

    from ..security import is_admin

    res = resources()
    placeholder = f"<{name}>"
    try:
        concept = res.registry.get(placeholder)
        if concept.active_version is None and not is_admin():
            abort(404)
        thumb = res.registry.thumbnail(placeholder, THUMB_SIZE)
    except (ConceptError, TokenError):  # malformed or unknown names are not found; database errors stay 503
        abort(404)
    if thumb is None:
        abort(404)
    response = make_response(thumb.read_bytes())
    response.headers["Content-Type"] = "image/png"
    response.headers["Cache-Control"] = "private, max-age=60"
    return response
