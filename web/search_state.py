"""The shopper's search as data: the form, running a search, and the preview job and its panel.

Views (web/views/search.py) render these; the JSON API (web/views/api.py) serialises them. The
ranked list comes from the query service's fast path at once; the preview (GAIR's w*, every w's
image and score) is a "preview" job that the worker runs, deduplicated by everything that
determines its pixels, so every shopper asking the same thing shares one generation.
"""
from __future__ import annotations

import dataclasses
import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from flask import url_for

from engine.errors import CoinageError, UnknownTokenError
from web.jobs import Job

from .errors import ApiError, from_engine

PHOTO_RE = re.compile(r"^[0-9a-f]{64}$")
SORTS = ("relevance", "price_asc", "price_desc")  # engine.query.SORTS (not imported here: the engine loads lazily)
SORT_LABELS = {"relevance": "Relevance", "price_asc": "Price: low to high", "price_desc": "Price: high to low"}


@dataclass
class SearchForm:
    q: str = ""  # the query text, custom tokens written <name>
    category: str = ""  # exact category, '' for all
    colour: str = ""  # exact colour (a facet click), '' for all
    sort: str = "relevance"  # 'relevance', 'price_asc' or 'price_desc'
    exact: bool = False  # search the query as typed (the "search instead for" link): no typo correction
    min_price: float | None = None
    max_price: float | None = None
    page: int = 1  # 1-based
    w: float | None = None  # a fixed composition weight (a click on the preview strip); None: GAIR / default
    photo: str = ""  # sha256 of an uploaded photo (search by photo); '' for none
    ignore: list[str] = field(default_factory=list)  # understood constraints removed (their chips' keys)
    errors: list[str] = field(default_factory=list)  # fields that did not parse, as messages

    @classmethod
    def from_args(cls, args: Mapping[str, str]) -> "SearchForm":
        form = cls(q=(args.get("q") or "")[:1000], category=(args.get("category") or "").strip(),
                   colour=(args.get("colour") or "").strip(), exact=(args.get("exact") or "") in ("1", "true", "on"))
        sort = (args.get("sort") or "relevance").strip()
        if sort in SORTS:
            form.sort = sort
        else:
            form.errors.append(f"sort must be one of {', '.join(SORTS)}, got {sort!r}")
        form.min_price = form._number(args, "min_price", "Min price")
        form.max_price = form._number(args, "max_price", "Max price")
        page = (args.get("page") or "1").strip()
        if page.isascii() and page.isdigit() and len(page) <= 9 and int(page) >= 1:  # the bound: run_search
            form.page = int(page)
        else:
            form.errors.append(f"page must be a whole number from 1, got {page[:20]!r}")
        w = form._number(args, "w", "w")
        if w is not None and not 0.0 <= w <= 1.0:
            form.errors.append(f"w must be between 0 and 1, got {w}")
            w = None
        form.w = w
        photo = (args.get("photo") or "").strip().lower()
        if photo and not PHOTO_RE.match(photo):
            form.errors.append("photo must be the id of an uploaded photo; upload the photo again")
            photo = ""
        form.photo = photo
        ignore = args.getlist("ignore") if hasattr(args, "getlist") else args.get("ignore") or []
        form.ignore = [k[:200] for k in ([ignore] if isinstance(ignore, str) else ignore) if k][:20]
        if form.min_price is not None and form.max_price is not None and form.min_price > form.max_price:
            form.errors.append(f"Min price ({form.min_price:g}) is above Max price ({form.max_price:g}); swap them")
        return form

    def _number(self, args: Mapping[str, str], name: str, label: str) -> float | None:
        raw = (args.get(name) or "").strip()
        if not raw:
            return None
        try:
            value = float(raw)
        except ValueError:
            self.errors.append(f"{label} must be a number, got {raw!r}")
            return None
        if value != value or value in (float("inf"), float("-inf")):
            self.errors.append(f"{label} must be a finite number")
            return None
        return value

    @property
    def has_query(self) -> bool:
        return bool(self.q.strip() or self.photo)

    def params(self, **changes: Any) -> dict[str, Any]:
        """URL parameters of this search (empty ones left out), with `changes` applied."""
        values = {"q": self.q, "category": self.category, "colour": self.colour, "min_price": self.min_price,
                  "max_price": self.max_price, "sort": self.sort, "exact": 1 if self.exact else None,
                  "page": self.page, "w": self.w, "photo": self.photo, "ignore": list(self.ignore)}
        values.update(changes)
        if values.get("page") == 1:
            values.pop("page")
        if values.get("sort") == "relevance":
            values.pop("sort")
        return {k: (f"{v:g}" if isinstance(v, float) else v) for k, v in values.items() if v not in (None, "", [])}

    def url(self, **changes: Any) -> str:
        return url_for("search.search", **self.params(**changes))


def photo_path(uploads: Path, sha: str) -> Path | None:
    if not PHOTO_RE.match(sha or ""):
        return None
    for candidate in sorted(uploads.glob(f"{sha}.*")):
        return candidate
    return None


def save_photo(uploads: Path, data: bytes, extension: str, keep: int = 500) -> str:
    """Store an uploaded search photo under its sha256 (so result pages can be paged); prune the oldest."""
    sha = hashlib.sha256(data).hexdigest()
    uploads.mkdir(parents=True, exist_ok=True)
    path = uploads / f"{sha}.{extension}"
    if not path.exists():
        tmp = uploads / f".{sha}.tmp"
        tmp.write_bytes(data)
        tmp.replace(path)
        files = sorted((p for p in uploads.iterdir() if not p.name.startswith(".")), key=lambda p: p.stat().st_mtime)
        for old in files[:-keep]:
            old.unlink(missing_ok=True)
    return sha


# ---------------------------------------------------------------------------- running a search

@dataclass
class SearchOutcome:
    form: SearchForm
    request: Any = None  # engine.query.SearchRequest (None when nothing was asked)
    response: Any = None  # engine.query.SearchResponse
    error: ApiError | None = None
    corrections: list[tuple[str, str]] = field(default_factory=list)  # (suggested query, url) for unknown tokens
    preview: "PreviewPanel | None" = None
    per_page: int = 12
    last_page: int | None = None  # the deepest page served (QueryConfig.max_offset); None: not known yet
    nearest: list[tuple[str, str]] = field(default_factory=list)  # (suggestion, url) when nothing matched
    search_id: str | None = None  # the analytics id of this page (web/analytics.py); click beacons send it back

    @property
    def status(self) -> int:
        return self.error.status if self.error is not None else 200

    @property
    def prev_url(self) -> str | None:
        return self.form.url(page=self.form.page - 1) if self.response is not None and self.form.page > 1 else None

    @property
    def next_url(self) -> str | None:
        if self.response is None or self.response.next_offset is None:
            return None
        if self.last_page is not None and self.form.page >= self.last_page:
            return None
        return self.form.url(page=self.form.page + 1)

    @property
    def items(self) -> list[Any]:
        """What the page shows: one entry per product (with its photos), or per photo for points without products."""
        r = self.response
        return r.products if r.products else [_PhotoAsProduct(item) for item in r.results]

    def facet_links(self) -> list[tuple[str, list[dict[str, Any]]]]:
        """(heading, [{label, count, url, active}]) for category, colour and price: clicks filter (and unfilter)."""
        facets = self.response.facets if self.response is not None else None
        if facets is None:
            return []
        form = self.form
        groups = []
        for heading, name in (("Category", "category"), ("Colour", "colour")):
            current = getattr(form, name)
            links = [{"label": value, "count": count, "active": value == current,
                      "url": form.url(**{name: "" if value == current else value, "page": 1})}
                     for value, count in facets.values.get(name, {}).items()]
            groups.append((heading, links))
        prices = []
        for bucket in facets.price:
            low, high = bucket["min"], bucket["max"]
            active = form.min_price == low and form.max_price == high
            label = (f"under {high:g}" if low is None else f"{low:g} and up" if high is None else f"{low:g}–{high:g}")
            prices.append({"label": label, "count": bucket["count"], "active": active,
                           "url": form.url(min_price=None if active else low, max_price=None if active else high,
                                           page=1)})
        groups.append(("Price", prices))
        return groups

    def chips(self) -> list[dict[str, Any]]:
        """The understood constraints as removable chips: {label, kind, key, url} (the url reruns without it)."""
        found = self.response.interpretation if self.response is not None else None
        if found is None:
            return []
        return [{"label": c.label, "kind": c.kind, "key": c.key,
                 "url": self.form.url(ignore=[*self.form.ignore, c.key], page=1)}
                for c in found.constraints if c.hard or c.kind == "identifier"]  # a soft id: its product first

    def relax_links(self) -> list[dict[str, Any]]:
        """For an empty page: each constraint to drop (an understood one, or a filter of the form), with its url."""
        form = self.form
        links = [{"label": f"without “{c['label']}”", "url": c["url"]} for c in self.chips() if c["kind"] != "concept"]
        for name, label in (("category", "category"), ("colour", "colour")):
            if getattr(form, name):
                links.append({"label": f"any {label}", "url": form.url(**{name: "", "page": 1})})
        if form.min_price is not None or form.max_price is not None:
            links.append({"label": "any price", "url": form.url(min_price=None, max_price=None, page=1)})
        return links

    def sort_links(self) -> list[dict[str, Any]]:
        return [{"label": SORT_LABELS[s], "url": self.form.url(sort=s, page=1), "active": s == self.form.sort}
                for s in SORTS]


@dataclass
class _PhotoAsProduct:
    """A photo result shown as a card (its collection has no product ids)."""

    item: Any

    @property
    def photos(self) -> list[Any]:
        return [self.item]

    @property
    def rank(self) -> int:
        return self.item.rank

    @property
    def score(self) -> float:
        return self.item.score


def run_search(res, form: SearchForm, image: bytes | None = None, with_preview: bool = True) -> SearchOutcome:
    """Search now (fast path) and, for a text query, make sure a preview job exists for it."""
    from engine.query import SearchRequest

    per_page = res.settings.limits.results_per_page
    last_page = res.query.config.max_offset // per_page + 1  # the API's offset bound, in pages
    out = SearchOutcome(form=form, per_page=per_page, last_page=last_page)
    if form.page > last_page:
        form.errors.append(f"page {form.page} is past the deepest page served ({last_page}: offsets up to "
                           f"{res.query.config.max_offset}); narrow the search with filters instead")
    if form.errors:
        out.error = ApiError(400, "invalid_field", "; ".join(form.errors))
        return out
    if image is None and form.photo:
        path = photo_path(res.settings.uploads_dir, form.photo)
        if path is None:
            out.error = ApiError(404, "photo_gone", "that uploaded photo is no longer on the server; upload it again")
            return out
        image = path.read_bytes()
    request = SearchRequest(query=form.q, image=image, category=form.category or None, colour=form.colour or None,
                            min_price=form.min_price, max_price=form.max_price, limit=per_page,
                            offset=(form.page - 1) * per_page, weight=form.w, sort=form.sort, correct=not form.exact,
                            ignore=list(form.ignore))
    out.request = request
    try:
        out.response = res.query.search(request)
    except UnknownTokenError as e:
        out.error = from_engine(e)
        out.corrections = [(fixed, form.url(q=fixed, page=1, w=None))
                           for fixed in (form.q.replace(e.placeholder, s) for s in e.suggestions)]
        return out
    except CoinageError as e:  # store errors included (StoreError is one)
        out.error = from_engine(e)
        return out
    if not (out.response.products or out.response.results) and form.q.strip():
        out.nearest = nearest(res, form)
    out.search_id = res.analytics.search(request, out.response)  # queued, written off the request path
    if with_preview and form.q.strip() and image is None:
        out.preview = ensure_preview(res, request, out.response)
    return out


def nearest(res, form: SearchForm, limit: int = 6) -> list[tuple[str, str]]:
    """Suggestions close to a query that matched nothing: for the whole text, else for each of its words."""
    found = res.query.suggestions.suggest(form.q, limit)
    for word in form.q.split():
        if len(found) >= limit:
            break
        found += [s for s in res.query.suggestions.suggest(word, 2) if s.query not in {f.query for f in found}]
    return [(s.text, form.url(q=s.query, page=1, ignore=[], min_price=None, max_price=None)) for s in found[:limit]]


# ---------------------------------------------------------------------------- previews

@dataclass
class PreviewImage:
    w: float | None
    key: str
    score: float | None = None
    context_score: float | None = None
    object_score: float | None = None

    @property
    def url(self) -> str:
        return url_for("ops.preview_png", key=self.key)


@dataclass
class PreviewPanel:
    state: str  # 'queued', 'running', 'done', 'failed', 'cancelled' or 'unavailable'
    message: str = ""
    job: Job | None = None
    main: PreviewImage | None = None  # the image shown large: I_w* (or the chosen w's)
    strip: list[PreviewImage] = field(default_factory=list)  # every w of the GAIR grid, with its score
    w_star: float | None = None
    chosen: float | None = None  # the w the shopper picked; None: the service's (GAIR's w*, or the default 1)
    gair_ranks: bool = False  # GAIR's w* ranks the results (QueryConfig.gair_ranks); else it only explains
    gair: bool = False  # whether GAIR ran (a query with a custom token)
    prompt: str | None = None
    done: int = 0  # generation steps done / in total
    total: int = 0
    weight_source: str = ""  # how the results on the page were ranked (poll: re-rank after GAIR)

    @property
    def active(self) -> bool:
        return self.state in ("queued", "running")

    @property
    def percent(self) -> int:
        return int(100 * self.done / self.total) if self.total else 0

    def to_json(self) -> dict[str, Any]:
        return {"state": self.state, "message": self.message, "job": self.job.id if self.job else None,
                "w_star": self.w_star, "chosen": self.chosen, "gair": self.gair, "gair_ranks": self.gair_ranks,
                "prompt": self.prompt,
                "progress": {"done": self.done, "total": self.total},
                "image": _image_json(self.main), "strip": [_image_json(p) for p in self.strip]}


def _image_json(p: PreviewImage | None) -> dict[str, Any] | None:
    if p is None:
        return None
    return {"w": p.w, "key": p.key, "url": p.url, "score": p.score, "context_score": p.context_score,
            "object_score": p.object_score}


def ensure_preview(res, request, response=None) -> PreviewPanel:
    """The preview job for this request (reused when one exists or finished), as a panel to render."""
    if not res.backbone.diffusion_available:
        return PreviewPanel("unavailable", f"backbone {res.backbone.id!r} has no diffusion stack, so there is no "
                                           "preview; the ranked results are not affected")
    from flask import current_app, has_request_context
    from flask import request as http_request

    from .security import visitor_id

    waiter = client = None  # scripts: nobody in particular, and no rate to count against
    allow_new = _any_client
    if has_request_context():
        waiter = visitor_id()  # who waits on it (a cookie-less client is a new one each time: the store caps them)
        client = http_request.remote_addr
        rates = current_app.extensions.get("coinage.ratelimits")
        if rates is not None:
            allow_new = rates.allow_preview
    waiter = visitor_id() if has_request_context() else None  # who waits on it (scripts: nobody in particular)
    found = getattr(response, "interpretation", None)
    if found is not None and found.text != request.query:  # draw what was understood, not the price words
        request = dataclasses.replace(request, query=found.text, understand=False)
    identity = res.query.preview_job(request)  # the service says which requests share a preview
    ticket = res.previews.ensure(identity, waiter, client, allow_new)  # bounded wait (web/preview_queue.py)
    if ticket.job is None:
        return PreviewPanel("unavailable", ticket.reason)
    return panel_for(ticket.job, request.weight, response.weight_source if response is not None else "")


def _any_client(client: str | None) -> bool:
    return True


def cancel_preview(res, job: Job) -> tuple[Job, PreviewPanel | None]:
    """This visitor stops waiting on a preview job: the job is cancelled only when nobody else waits on it.
    Returns the job and, when others still wait, the panel this visitor sees (cancelled for them only)."""
    from .security import visitor_id

    job, others = res.jobs.release(job.id, visitor_id())
    if others == 0 or not job.active:  # cancelled for all, or finished anyway: the job's own panel
        return job, None
    return job, PreviewPanel("cancelled", f"preview cancelled for you; {others} other shopper"
                                          f"{'s' if others != 1 else ''} still wait{'' if others != 1 else 's'} "
                                          "for it, so it keeps running for them", job=job)


def panel_for(job: Job, chosen: float | None, weight_source: str = "") -> PreviewPanel:
    panel = PreviewPanel(job.status, job=job, chosen=chosen, weight_source=weight_source)
    if job.active:
        panel.done = int(job.progress.get("done") or 0)
        panel.total = int(job.progress.get("total") or 0)
        panel.message = "waiting for the generator" if job.status == "queued" else "generating the preview"
        return panel
    if job.status == "failed":
        panel.message = job.error or "the preview failed"
        return panel
    if job.status == "cancelled":
        panel.message = "preview cancelled"
        return panel
    result = job.result or {}
    panel.gair = bool(result.get("gair"))
    panel.w_star = result.get("w_star")
    panel.gair_ranks = result.get("weight_source") == "gair"
    main = result.get("preview") or {}
    panel.prompt = main.get("prompt")
    panel.strip = [PreviewImage(s["w"], s["preview_key"], s["score"], s["context_score"], s["object_score"])
                   for s in result.get("scores") or [] if s.get("preview_key")]
    picked = None
    if chosen is not None:
        picked = next((p for p in panel.strip if abs(p.w - chosen) < 1e-9), None)
        if picked is None and (result.get("chosen") or {}).get("key"):
            picked = PreviewImage(chosen, result["chosen"]["key"])
    if picked is None and main.get("key"):
        picked = next((p for p in panel.strip if p.key == main["key"]), None) or PreviewImage(main.get("w"), main["key"])
    panel.main = picked
    if panel.main is None:
        panel.state, panel.message = "unavailable", "; ".join(result.get("notes") or []) or "no preview for this query"
    return panel

