"""The OpenAPI description of the merchandiser's API (web/views/merch_api.py), merged into web/openapi.py's document."""
from __future__ import annotations

from typing import Any

from engine.merch import ACTIONS, MATCHES

from .openapi import SESSION, STATE_CHANGE, _errors, _json, _query, _ref
from .views.merch_api import MAX_DAYS

ITEM_ID = {"type": "integer", "minimum": 1}
WORDS = {"type": "array", "items": {"type": "string", "minLength": 1, "pattern": "\\w"}, "maxItems": 50}
_NUMBER = {"type": ["number", "null"], "minimum": -1e15, "maximum": 1e15}
_TIME = {"type": ["string", "null"], "format": "date-time",
         "description": "ISO date-time, UTC when no zone (start: from, end: until); null: no bound"}

SCHEMAS: dict[str, Any] = {
    "Synonym": {"type": "object", "properties": {
        "id": {"type": "integer"}, "kind": {"type": "string", "enum": ["oneway", "twoway"]}, "terms": WORDS,
        "targets": WORDS, "text": {"type": "string"}, "updated": {"type": "string"}, "updated_by": {"type": "string"}}},
    "SynonymInput": {"oneOf": [
        {"type": "object", "required": ["text"], "properties": {"text": {
            "type": "string", "minLength": 1, "description": "'cup => mug' (one-way) or 'trainers, sneakers' "
                                                             "(two-way)"}}},
        {"type": "object", "required": ["terms"], "properties": {"terms": WORDS, "targets": WORDS}}]},
    "Rule": {"type": "object", "properties": {
        "id": {"type": "integer"}, "name": {"type": "string"}, "match": {"type": "string", "enum": list(MATCHES)},
        "pattern": {"type": "string"}, "action": {"type": "string", "enum": list(ACTIONS)},
        "products": {"type": "array", "items": {"type": "string"}}, "position": {"type": "integer"},
        "category": {"type": ["string", "null"]}, "colour": {"type": ["string", "null"]},
        "min_price": {"type": ["number", "null"]}, "max_price": {"type": ["number", "null"]},
        "concept": {"type": ["string", "null"]}, "amount": {"type": "number"}, "start": {"type": ["string", "null"]}, "end": {"type": ["string", "null"]},
        "enabled": {"type": "boolean"}, "updated": {"type": "string"}, "updated_by": {"type": "string"}}},
    "RuleInput": {"type": "object", "required": ["name", "match", "pattern", "action"],
                  "additionalProperties": False, "properties": {
        "name": {"type": "string", "minLength": 1, "pattern": "\\S"},
        "match": {"type": "string", "enum": list(MATCHES),
                  "description": "exact / contains: the query's words; concept: the query uses <pattern>"},
        "pattern": {"type": "string"}, "action": {"type": "string", "enum": list(ACTIONS)},
        "products": {"type": "array", "items": {"type": "string", "minLength": 1}, "maxItems": 100,
                     "description": "product ids: pinned in order, hidden, boosted or buried"},
        "position": {"type": "integer", "minimum": 1, "description": "pin: position of the first product"},
        "category": {"type": ["string", "null"]}, "colour": {"type": ["string", "null"]},
        "min_price": _NUMBER, "max_price": _NUMBER,
        "concept": {"type": ["string", "null"], "pattern": "^<[^<>]+>$",
                    "description": "boost/bury/hide the concept's products: those a search for its placeholder alone "
                                   "lists as matches (a concept with a live token; else 400 invalid_merch)"},
        "amount": {"type": "number", "minimum": 0, "maximum": 1e6, "description": "boost/bury: score added/taken"},
        "start": _TIME, "end": _TIME, "enabled": {"type": "boolean"}}},
    "AnalyticsReport": {"type": "object", "properties": {
        "since": {"type": "number"}, "until": {"type": "number"}, "searches": {"type": "integer"},
        "clicked_searches": {"type": "integer"}, "clicks": {"type": "integer"},
        "ctr": {"type": ["number", "null"]}, "mean_position": {"type": ["number", "null"]},
        "zero_results": {"type": "integer"}, "top": {"type": "array"}, "zero": {"type": "array"},
        "no_clicks": {"type": "array"}, "concepts": {"type": "array"}, "days": {"type": "array"}}},
}


def paths() -> dict[str, Any]:
    synonym_id = {"name": "synonym_id", "in": "path", "required": True, "schema": ITEM_ID}
    rule_id = {"name": "rule_id", "in": "path", "required": True, "schema": ITEM_ID}
    rule_body = {"required": True, "content": {"application/json": {"schema": _ref("RuleInput")}}}
    removed = _json({"type": "object", "properties": {"removed": {"type": "integer"}}}, "removed")
    return {
        "/api/click": {"post": {
            "summary": "Report a click on a search result (the results page's beacon; rate-limited per address)",
            "operationId": "reportClick",
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "type": "object", "required": ["search_id", "product_id", "position"], "properties": {
                    "search_id": {"type": "string", "description": "the search_id of the results page"},
                    "product_id": {"type": "string", "minLength": 1, "maxLength": 200},
                    "position": {"type": "integer", "minimum": 1, "maximum": 100000}}}}}},
            "responses": {"204": {"description": "recorded"}, **_errors(400, 404, 429)}}},
        "/api/synonyms": {
            "get": {"summary": "Synonyms", "operationId": "listSynonyms", "security": SESSION,
                    "responses": {"200": _json({"type": "object", "properties": {
                        "synonyms": {"type": "array", "items": _ref("Synonym")}}}, "synonyms"), **_errors(401)}},
            "post": {"summary": "Add a synonym (takes effect within a second, on every web process)",
                     "operationId": "addSynonym", "security": STATE_CHANGE,
                     "requestBody": {"required": True, "content": {"application/json": {
                         "schema": _ref("SynonymInput")}}},
                     "responses": {"201": _json(_ref("Synonym"), "added"), **_errors(400, 401)}}},
        "/api/synonyms/{synonym_id}": {"delete": {
            "summary": "Remove a synonym", "operationId": "removeSynonym", "security": STATE_CHANGE,
            "parameters": [synonym_id], "responses": {"200": removed, **_errors(400, 401, 404)}}},
        "/api/rules": {
            "get": {"summary": "Merchandising rules", "operationId": "listRules", "security": SESSION,
                    "responses": {"200": _json({"type": "object", "properties": {
                        "rules": {"type": "array", "items": _ref("Rule")}}}, "rules"), **_errors(401)}},
            "post": {"summary": "Add a rule (pin, boost, bury or hide products for a query)",
                     "operationId": "addRule", "security": STATE_CHANGE, "requestBody": rule_body,
                     "responses": {"201": _json(_ref("Rule"), "added"), **_errors(400, 401)}}},
        "/api/rules/{rule_id}": {
            "get": {"summary": "A rule", "operationId": "getRule", "security": SESSION, "parameters": [rule_id],
                    "responses": {"200": _json(_ref("Rule"), "the rule"), **_errors(401, 404)}},
            "post": {"summary": "Replace a rule", "operationId": "updateRule", "security": STATE_CHANGE,
                     "parameters": [rule_id], "requestBody": rule_body,
                     "responses": {"200": _json(_ref("Rule"), "updated"), **_errors(400, 401, 404)}},
            "delete": {"summary": "Remove a rule", "operationId": "removeRule", "security": STATE_CHANGE,
                       "parameters": [rule_id], "responses": {"200": removed, **_errors(400, 401, 404)}}},
        "/api/analytics": {"get": {
            "summary": "Search analytics of the last `days` days", "operationId": "analytics", "security": SESSION,
            "parameters": [_query("days", {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_DAYS},
                                  "the period, ending now (default 30)")],
            "responses": {"200": _json(_ref("AnalyticsReport"), "the report"), **_errors(400, 401)}}},
    }
