"""JSON API of the merchandiser's side (described in web/merch_openapi.py): the click beacon (public, CSRF-exempt,
rate-limited), synonyms and rules (admin; writes need the CSRF token), the analytics report and the query tester."""
from __future__ import annotations

import functools
import time
from typing import Any, Callable

from flask import Blueprint, current_app, jsonify, request, session

from engine.merch import MerchError, MerchNotFound, Rule, Synonym
from engine.merch.concept_products import check_live, live_concepts

from ..errors import ApiError, bad_field
from ..security import admin_required, csrf_exempt
from . import resources

bp = Blueprint("merch_api", __name__, url_prefix="/api")
MAX_DAYS = 3660


def merch_error(error: MerchError) -> ApiError:
    if isinstance(error, MerchNotFound):
        return ApiError(404, "not_found", str(error))
    return ApiError(400, "invalid_merch", str(error))  # what JSON Schema cannot say: a pin without products, ...


def merch_errors(view: Callable[..., Any]) -> Callable[..., Any]:
    """A JSON view whose MerchError answers as merch_error says (400 invalid_merch, 404 not_found)."""
    @functools.wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        try:
            return view(*args, **kwargs)
        except MerchError as e:
            raise merch_error(e) from e

    return wrapped


def live(rule: Rule) -> Rule:
    """The rule, if its concept filter names a concept with a live token (else MerchError naming the fix)."""
    if rule.concept is not None:  # the registry is asked only about a rule that names a concept
        check_live([rule], live_concepts(resources().registry))
    return rule


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
    # counted in COINAGE_RATELIMIT_STORAGE like the other limits (web/ratelimit.py): shared by processes using redis://
    if not current_app.extensions["coinage.ratelimits"].allow_click(request.remote_addr):
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
@merch_errors
def add_synonym():
    return jsonify(resources().merch.add_synonym(Synonym.from_json(_body()), actor()).to_json()), 201


@bp.delete("/synonyms/<synonym_id>")
@admin_required
@merch_errors
def remove_synonym(synonym_id: str):
    resources().merch.remove_synonym(item_id(synonym_id), actor())
    return jsonify({"removed": int(synonym_id)})


@bp.get("/rules")
@admin_required
def list_rules():
    return jsonify({"rules": [r.to_json() for r in resources().merch.rules()]})


@bp.post("/rules")
@admin_required
@merch_errors
def add_rule():
    return jsonify(resources().merch.add_rule(live(Rule.from_json(_body())), actor()).to_json()), 201


@bp.get("/rules/<rule_id>")
@admin_required
@merch_errors
def get_rule(rule_id: str):
    return jsonify(resources().merch.rule(item_id(rule_id)).to_json())


@bp.post("/rules/<rule_id>")
@admin_required
@merch_errors
def update_rule(rule_id: str):
    return jsonify(resources().merch.update_rule(item_id(rule_id), live(Rule.from_json(_body())), actor()).to_json())


@bp.delete("/rules/<rule_id>")
@admin_required
@merch_errors
def remove_rule(rule_id: str):
    resources().merch.remove_rule(item_id(rule_id), actor())
    return jsonify({"removed": int(rule_id)})


@bp.get("/analytics")
@admin_required
def analytics():
    since, until = period_args()
    return jsonify(resources().analytics.store.report(since, until).to_json())
