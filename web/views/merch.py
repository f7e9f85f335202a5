"""Admin pages of the merchandiser's side (login required): synonyms, rules, search analytics (chart, CSV export,
pruning) and the query tester (a query as a shopper runs it, side by side with synonyms and rules off)."""
from __future__ import annotations

import time
from typing import Any, Callable

from flask import Blueprint, Response, make_response, render_template, request, url_for

from engine.errors import CoinageError
from engine.merch import ACTIONS, MATCHES, MerchError, Rule, Synonym
from engine.merch.concept_products import live_concepts, without_merch
from engine.merch.rules import rule_from_text

from ..errors import ApiError, from_engine
from ..security import admin_required
from . import resources
from .admin import _go
from .merch_api import actor, live, period_args

bp = Blueprint("merch", __name__, url_prefix="/admin")
PERIODS = (1, 7, 30, 90)


def _page(template: str, status: int = 200, **context: Any) -> Response:
    return make_response(render_template(template, **context), status)


# ---------------------------------------------------------------------------- synonyms

@bp.get("/synonyms")
@admin_required
def synonyms(error: str | None = None, text: str = "", status: int = 200):
    res = resources()
    audit = res.merch.audit(15, kind="synonym")
    return _page("admin/synonyms.html", status, synonyms=res.merch.synonyms(), audit=audit, error=error, text=text)


@bp.post("/synonyms")
@admin_required
def add_synonym():
    text = request.form.get("text", "")
    return _change(lambda: resources().merch.add_synonym(Synonym.parse(text), actor()), "merch.synonyms",
                   lambda error: synonyms(error, text, 400))


@bp.post("/synonyms/<int:synonym_id>/remove")
@admin_required
def remove_synonym(synonym_id: int):
    return _change(lambda: resources().merch.remove_synonym(synonym_id, actor()), "merch.synonyms",
                   lambda error: synonyms(error, "", 404))


# ---------------------------------------------------------------------------- rules

@bp.get("/rules")
@admin_required
def rules(error: str | None = None, values: dict | None = None, status: int = 200):
    res = resources()
    audit = res.merch.audit(15, kind="rule")
    return _page("admin/rules.html", status, rules=res.merch.rules(), audit=audit, error=error,
                 values=values or {"match": "contains", "action": "pin", "position": "1", "amount": "1"},
                 matches=MATCHES, actions=ACTIONS, now=time.strftime("%Y-%m-%dT%H:%M", time.gmtime()),
                 concepts=sorted(live_concepts(res.registry)))


@bp.post("/rules")
@admin_required
def add_rule():
    form = request.form.to_dict()
    return _change(lambda: resources().merch.add_rule(live(rule_from_text({"enabled": "on", **form})), actor()),
                   "merch.rules", lambda error: rules(error, form, 400))


@bp.post("/rules/<int:rule_id>/toggle")
@admin_required
def toggle_rule(rule_id: int):
    def toggle() -> None:
        rule = resources().merch.rule(rule_id)
        data = {k: v for k, v in rule.to_json().items() if k not in ("id", "updated", "updated_by")}
        resources().merch.update_rule(rule_id, Rule.from_json({**data, "enabled": not rule.enabled}), actor())

    return _change(toggle, "merch.rules", lambda error: rules(error, None, 404))


@bp.post("/rules/<int:rule_id>/remove")
@admin_required
def remove_rule(rule_id: int):
    return _change(lambda: resources().merch.remove_rule(rule_id, actor()), "merch.rules",
                   lambda error: rules(error, None, 404))


def _change(change: Callable[[], Any], endpoint: str, failed: Callable[[str], Response]) -> Response:
    """Make a change from a form, then back to the page (`endpoint`); a MerchError shows the page with it."""
    try:
        change()
    except MerchError as e:
        return failed(str(e))
    return _go(url_for(endpoint))


# ---------------------------------------------------------------------------- analytics

@bp.get("/analytics")
@admin_required
def analytics():
    res = resources()
    days = request.args.get("days", "30")
    since, until = period_args()
    report = res.analytics.store.report(since, until)
    return _page("admin/analytics.html", report=report, chart=day_chart(every_day(report.days, since, until)),
                 days=days, periods=PERIODS,
                 retention=res.settings.merch.retention_days, dropped=res.analytics.dropped,
                 pruned=request.args.get("pruned"))


@bp.get("/analytics.csv")
@admin_required
def analytics_csv():
    since, until = period_args()
    response = make_response(resources().analytics.store.export_csv(since, until))
    response.headers["Content-Type"] = "text/csv; charset=utf-8"
    response.headers["Content-Disposition"] = f"attachment; filename=searches-{request.args.get('days', '30')}d.csv"
    return response


@bp.post("/analytics/prune")
@admin_required
def prune_analytics():
    n = resources().analytics.prune()
    return _go(url_for("merch.analytics", pruned=n))


def every_day(days: list[dict[str, Any]], since: float, until: float, most: int = 120) -> list[dict[str, Any]]:
    """The report's days with the days without searches filled in (the last `most` days of the period)."""
    counted = {d["day"]: d for d in days}
    first = max(since, until - most * 86400)
    names = sorted({time.strftime("%Y-%m-%d", time.gmtime(t)) for t in range(int(first), int(until), 86400)}
                   | {time.strftime("%Y-%m-%d", time.gmtime(until - 1))})
    return [counted.get(n, {"day": n, "searches": 0, "clicks": 0}) for n in names]


def day_chart(days: list[dict[str, Any]], width: int = 640, height: int = 160) -> dict[str, Any]:
    """Bars per day (searches, and the clicked part over them) as SVG coordinates: no chart library."""
    top = max([d["searches"] for d in days] + [1])
    step = min(width / max(len(days), 1), 48.0)
    bars = []
    for i, d in enumerate(days):
        h, ch = height * d["searches"] / top, height * d["clicks"] / top
        bars.append({**d, "x": round(i * step + step * 0.1, 1), "w": round(step * 0.8, 1), "y": round(height - h, 1),
                     "h": round(h, 1), "cy": round(height - min(ch, h), 1), "ch": round(min(ch, h), 1)})
    return {"width": width, "height": height, "top": top, "bars": bars}


# ---------------------------------------------------------------------------- query tester

@bp.get("/tester")
@admin_required
def tester():
    from engine.query import SearchRequest

    res = resources()
    q = request.args.get("q", "")
    sides, error = [], None
    if q.strip():
        plain = without_merch(res.query)
        limit = res.settings.limits.results_per_page
        try:
            for label, service in (("With synonyms and rules", res.query), ("Without", plain)):
                sides.append((label, service.search(SearchRequest(query=q, limit=limit))))
        except CoinageError as e:
            error = from_engine(e)
        except ApiError as e:
            error = e
    return _page("admin/tester.html", 400 if error else 200, q=q, sides=sides, error=error)
