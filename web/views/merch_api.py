"""JSON API of the merchandiser's side (described in web/merch_openapi.py): the click beacon (public, CSRF-exempt,
rate-limited), synonyms and rules (admin; writes need the CSRF token), the analytics report and the query tester."""
from __future__ import annotations

import time
from typing import Any

from flask import Blueprint, current_app, jsonify, request, session

from engine.merch import MerchError, MerchNotFound, Rule, Synonym

from ..analytics import RateWindow
from ..errors import ApiError, bad_field
from ..security import admin_required, csrf_exempt
from . import resources

bp = Blueprint("merch_api", __name__, url_prefix="/api")
MAX_DAYS = 3660


def merch_error(error: MerchError) -> ApiError:
    if isinstance(error, MerchNotFound):
        return ApiError(404, "not_found", str(error))
    return ApiError(400, "invalid_merch", str(error))  # what JSON Schema cannot say: a pin without products, ...


def actor() -> str:
    """Who makes a change (the audit trail); called by every write, so this process re-reads it at once (the
    others within MerchSettings.refresh_s)."""
    resources().query.merch.invalidate()
    return str(session.get("admin") or "admin")


def item_id(raw: str) -> int:
    """A synonym or rule id from the URL; 404 when it is not one (ids are positive integers)."""
    if not (raw.isascii() and raw.isdigit()) or not 0 < int(raw) < 2**62:
        raise ApiError(404, "not_found", f"no synonym or rule {raw!r}: ids are positive integers")
    return int(raw)


def _body() -> dict[str, Any]:
    try:
        data = request.get_json(force=True, silent=True)  # a beacon may send text/plain
    except RecursionError:
        data = None
    if not isinstance(data, dict):
        raise ApiError(400, "invalid_json", "the request body must be a JSON object")
    return data


def period_args() -> tuple[float, float]:
    """The report's period from ?days=N (default 30), ending now."""
    raw = request.args.get("days", "30")
    try:
        days = float(raw)
    except ValueError:
        raise bad_field("days", f"must be a number of days, got {raw!r}") from None
    if not 0 < days <= MAX_DAYS:
        raise bad_field("days", f"must be from 1 to {MAX_DAYS}, got {raw!r}")
    now = time.time()
    return now - days * 86400, now + 1


@bp.post("/click")
@csrf_exempt  # a beacon from the results page: it changes nothing but the analytics, and carries a signed search id
def click():
    res = resources()
    limiter: RateWindow = current_app.extensions.setdefault(
        "coinage.click_limit", RateWindow(res.settings.merch.clicks_per_minute, 60.0))
    if not limiter.allow(request.remote_addr or "unknown"):
        raise ApiError(429, "too_many_clicks", "too many click reports from this address; wait a minute")
    data = _body()
    product_id, position = data.get("product_id"), data.get("position")
    if isinstance(position, float) and position.is_integer():  # JSON (and JSON Schema) count 3.0 as an integer
        position = int(position)
    if not isinstance(product_id, str) or not product_id or len(product_id) > 200:
        raise bad_field("product_id", "must be the clicked product's id (a non-empty string)")
    if isinstance(position, bool) or not isinstance(position, int) or not 1 <= position <= 100_000:
        raise bad_field("position", "must be the clicked result's 1-based rank (an integer)")
    try:
        res.analytics.click(data.get("search_id"), product_id, position)
    except ValueError as e:
        raise ApiError(404, "search_not_found", f"{e}: send the search_id of the page the result was on") from e
    return "", 204


@bp.get("/synonyms")
@admin_required
def list_synonyms():
    return jsonify({"synonyms": [s.to_json() for s in resources().merch.synonyms()]})


@bp.post("/synonyms")
@admin_required
def add_synonym():
    try:
        synonym = resources().merch.add_synonym(Synonym.from_json(_body()), actor())
    except MerchError as e:
        raise merch_error(e) from e
    return jsonify(synonym.to_json()), 201


@bp.delete("/synonyms/<synonym_id>")
@admin_required
def remove_synonym(synonym_id: str):
    try:
        resources().merch.remove_synonym(item_id(synonym_id), actor())
    except MerchError as e:
        raise merch_error(e) from e
    return jsonify({"removed": int(synonym_id)})


@bp.get("/rules")
@admin_required
def list_rules():
    return jsonify({"rules": [r.to_json() for r in resources().merch.rules()]})


@bp.post("/rules")
@admin_required
def add_rule():
    try:
        rule = resources().merch.add_rule(Rule.from_json(_body()), actor())
    except MerchError as e:
        raise merch_error(e) from e
    return jsonify(rule.to_json()), 201


@bp.get("/rules/<rule_id>")
@admin_required
def get_rule(rule_id: str):
    try:
        return jsonify(resources().merch.rule(item_id(rule_id)).to_json())
    except MerchError as e:
        raise merch_error(e) from e


@bp.post("/rules/<rule_id>")
@admin_required
def update_rule(rule_id: str):
    try:
        rule = resources().merch.update_rule(item_id(rule_id), Rule.from_json(_body()), actor())
    except MerchError as e:
        raise merch_error(e) from e
    return jsonify(rule.to_json())


@bp.delete("/rules/<rule_id>")
@admin_required
def remove_rule(rule_id: str):
    try:
        resources().merch.remove_rule(item_id(rule_id), actor())
    except MerchError as e:
        raise merch_error(e) from e
    return jsonify({"removed": int(rule_id)})


@bp.get("/analytics")
@admin_required
def analytics():
    since, until = period_args()
    return jsonify(resources().analytics.store.report(since, until).to_json())
