"""The OpenAPI 3.1 description of the JSON API, served at /openapi.json. It says exactly what the server
requires: the session cookie and X-CSRF-Token header of every state-changing operation (security schemes),
required fields, formats and bounds (the bounds from the app's own settings). Tests validate it, check that
every /api route is described and every described route exists, and run schemathesis against the app
(tests/test_web_openapi.py): no 5xx, responses as described, schema-valid requests accepted."""
from __future__ import annotations

from typing import Any

from engine.query.schema import FIELD_PATH as FIELD_PATH_RE, MAX_SEED, MODES, RETRIEVALS, SORTS
from engine.tokenizer import NAME_PATTERN

VERSION = "0.1.0"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    text = {400: "invalid request (the message names the field and the fix)", 401: "login required",
            403: "not allowed", 404: "not found", 409: "conflict with the current state",
            413: "upload too large", 429: "too many attempts or requests from this address (a rate limit)",
            503: "index or store unavailable"}
    return {str(c): _json(_ref("Error"), text[c]) for c in codes}


NAME = {"name": "name", "in": "path", "required": True, "description": "concept name: the placeholder without "
        "brackets ('aurora' for '<aurora>')", "schema": {"type": "string", "pattern": f"^{NAME_PATTERN}$"}}
JOB_ID = {"name": "job_id", "in": "path", "required": True, "schema": {"type": "string", "pattern": "^[0-9a-f]{16}$"}}
VERSION_ID = {"type": "string", "pattern": "^v[0-9]{4,9}$", "description": "a version id like 'v0001'"}
# Security requirements. Every POST and DELETE but POST /api/search needs the session cookie (GET /api/session
# sets it) and its csrf_token in the X-CSRF-Token header; admin operations need a session logged in by POST
# /api/login (whose answer carries the new csrf_token: it changes at login).
SESSION = [{"cookieSession": []}]
STATE_CHANGE = [{"cookieSession": [], "csrfToken": []}]
SECURITY_SCHEMES = {
    "cookieSession": {"type": "apiKey", "in": "cookie", "name": "session",
                      "description": "the session cookie, set by GET /api/session and renewed by POST /api/login"},
    "csrfToken": {"type": "apiKey", "in": "header", "name": "X-CSRF-Token",
                  "description": "the csrf_token of GET /api/session (or of POST /api/login, after logging in), sent "
                                 "with the same session cookie on every POST and DELETE but POST /api/search"}}
# Text of a query: custom tokens written <name>, no other '<' or '>'; the non-blank form has a character to search.
TOKEN = f"<{NAME_PATTERN}>"
QUERY_TEXT = f"^(?:[^<>]|{TOKEN})*$"
QUERY_NONBLANK = f"^\\s*(?:[^<>\\s]|{TOKEN})(?:[^<>]|{TOKEN})*$"
BASE64 = {"type": "string", "minLength": 4, "contentEncoding": "base64",
          "pattern": "^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"}
PRICE = {"type": "number", "minimum": -1e15, "maximum": 1e15}
FIELD_PATH = f"^(?:{FIELD_PATH_RE.pattern})$"  # a payload field path, as SearchRequest accepts it


def _query(name: str, schema: dict, description: str, required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": required, "schema": schema, "description": description}


SCHEMAS: dict[str, Any] = {
    "Error": {"type": "object", "required": ["error"], "properties": {"error": {
        "type": "object", "required": ["code", "message"], "properties": {
            "code": {"type": "string", "examples": ["missing_field", "unknown_token", "csrf_failed"]},
            "message": {"type": "string", "description": "what is wrong and how to fix it"},
            "field": {"type": "string", "description": "the request field at fault, when one is"},
            "suggestions": {"type": "array", "items": {"type": "string"},
                            "description": "registered tokens close to an unknown one"}}}}},
    "Product": {"type": "object", "properties": {
        "rank": {"type": "integer"}, "product_id": {"type": "string"}, "score": {"type": "number"},
        "payload": {"type": "object", "description": "the best photo's payload (title, category, price, ...)"},
        "photos": {"type": "array", "items": _ref("Result"), "description": "matching photos, best first"},
        "related": {"type": "boolean", "description": "below the relevance floor: a related item listed after "
                                                      "the query's matches, not in the count or the facets"}}},
    "Correction": {"type": "object", "properties": {
        "original": {"type": "string"}, "corrected": {"type": "string", "description": "what the lexical side searched"},
        "changes": {"type": "array", "items": {"type": "array", "items": {"type": "string"}}},
        "dense": {"type": "string", "description": "what the dense side searched: only certain typos corrected"},
        "suggestion": {"type": ["string", "null"], "description": "Did you mean: a query not searched"},
        "suggested": {"type": "array", "items": {"type": "array", "items": {"type": "string"}}}}},
    "Facets": {"type": "object", "properties": {
        "values": {"type": "object", "description": "category / colour -> value -> matching products",
                   "additionalProperties": {"type": "object", "additionalProperties": {"type": "integer"}}},
        "price": {"type": "array", "items": {"type": "object", "properties": {
            "min": {"type": ["number", "null"]}, "max": {"type": ["number", "null"]}, "count": {"type": "integer"}}}},
        "products": {"type": "integer", "description": "distinct products among the query's candidates"},
        "complete": {"type": "boolean", "description": "false when more products could match further down"}}},
    "Result": {"type": "object", "properties": {
        "rank": {"type": "integer"}, "id": {"type": "string"}, "score": {"type": "number"},
        "payload": {"type": "object"}, "image_url": {"type": ["string", "null"]}}},
    "PreviewPanel": {"type": "object", "properties": {
        "state": {"type": "string", "enum": ["queued", "running", "done", "failed", "cancelled", "unavailable"]},
        "message": {"type": "string"}, "job": {"type": ["string", "null"]}, "url": {"type": ["string", "null"]},
        "w_star": {"type": ["number", "null"]}, "chosen": {"type": ["number", "null"]}, "gair": {"type": "boolean"},
        "gair_ranks": {"type": "boolean", "description": "GAIR's w* ranks the results; false: w = 1 ranks and "
                                                          "GAIR's pick is marked in the strip"},
        "prompt": {"type": ["string", "null"]}, "progress": {"type": "object"},
        "image": {"type": ["object", "null"]}, "strip": {"type": "array", "items": {"type": "object"}}}},
    "SearchResponse": {"type": "object", "properties": {
        "query": {"type": "string"}, "prompt": {"type": ["string", "null"]},
        "tokens": {"type": "array", "items": {"type": "string"}}, "notes": {"type": "array", "items": {"type": "string"}},
        "method": {"type": "string"}, "weight": {"type": ["number", "null"]}, "weight_source": {"type": "string"},
        "concept_photos": {"type": ["number", "null"], "description": "weight of the concept's photo prototype "
                                                                      "fused into the composed query; null: none"},
        "results": {"type": "array", "items": _ref("Result")}, "limit": {"type": "integer"},
        "offset": {"type": "integer"}, "next_offset": {"type": ["integer", "null"]},
        "collection": {"type": "string"}, "backbone": {"type": "string"}, "timings_ms": {"type": "object"},
        "preview": {"oneOf": [_ref("PreviewPanel"), {"type": "null"}]},
        "mode": {"type": "string", "enum": ["products", "photos"],
                 "description": "products: `products` is the page and `results` each product's best photo"},
        "products": {"type": "array", "items": _ref("Product")},
        "retrieval": {"type": "string", "enum": ["hybrid", "dense", "lexical"]},
        "sort": {"type": "string", "enum": ["relevance", "price_asc", "price_desc"]},
        "correction": {"oneOf": [_ref("Correction"), {"type": "null"}]},
        "facets": {"oneOf": [_ref("Facets"), {"type": "null"}]},
        "interpretation": {"oneOf": [_ref("Interpretation"), {"type": "null"}],
                           "description": "what query understanding read out of the text; null when off"},
        "search_id": {"type": "string", "description": "send it back with POST /api/click"},
        "merch": {"type": "array", "items": {"type": "object"},
                  "description": "admin only: the synonyms and rules that shaped the results"}}},
    "Constraint": {"type": "object", "properties": {
        "key": {"type": "string", "description": "send it in `ignore` to rerun the query without this constraint"},
        "kind": {"type": "string", "enum": ["price", "exclude", "facet", "identifier", "concept"]},
        "label": {"type": "string", "examples": ["price under 60", "not pink", "<newcomer>"]},
        "removed": {"type": "string", "description": "the words of the query it was read from"},
        "field": {"type": ["string", "null"]}, "values": {"type": "array", "items": {"type": "string"}},
        "min_price": {"type": ["number", "null"]}, "max_price": {"type": ["number", "null"]},
        "hard": {"type": "boolean", "description": "false: recognised only (a facet value kept in the words)"}}},
    "Interpretation": {"type": "object", "properties": {
        "original": {"type": "string"}, "text": {"type": "string", "description": "the text left for retrieval"},
        "removed": {"type": "array", "items": {"type": "string"}},
        "constraints": {"type": "array", "items": _ref("Constraint")},
        "ignored": {"type": "array", "items": {"type": "string"}}, "notes": {"type": "array", "items": {"type": "string"}},
        "lexical_words": {"type": "object", "additionalProperties": {"type": "string"},
                          "description": "placeholder -> the word typed, kept for the lexical side (a concept "
                                         "read both ways: QueryConfig.concept_word_reading 'both' or 'name')"}}},
    "Suggestion": {"type": "object", "properties": {
        "text": {"type": "string"}, "kind": {"type": "string", "enum": ["synonym", "concept", "category", "colour",
                                                                         "pattern", "word", "name"]},
        "count": {"type": "integer", "description": "products it finds"},
        "query": {"type": "string", "description": "the query to search when it is chosen"}}},
    "Job": {"type": "object", "properties": {
        "id": {"type": "string"}, "kind": {"type": "string", "enum": ["train", "reindex", "preview"]},
        "params": {"type": "object"},
        "status": {"type": "string", "enum": ["queued", "running", "done", "failed", "cancelled"]},
        "progress": {"type": "object"}, "result": {}, "error": {"type": ["string", "null"]},
        "cancel_requested": {"type": "boolean"}, "attempts": {"type": "integer"},
        "interruptions": {"type": "integer"}, "created": {"type": "number"},
        "started": {"type": ["number", "null"]}, "heartbeat": {"type": ["number", "null"]},
        "finished": {"type": ["number", "null"]}, "seconds": {"type": ["number", "null"]},
        "panel": _ref("PreviewPanel"),
        "detached": {"type": "boolean", "description": "cancel only: true when the job goes on for the others "
                     "waiting on it (this client no longer waits; its panel says so)"}}},
    "JobAccepted": {"type": "object", "properties": {"job": _ref("Job"), "job_url": {"type": "string"}}},
    "Token": {"type": "object", "properties": {
        "placeholder": {"type": "string"}, "parent": {"type": "string"}, "method": {"type": "string"},
        "version": {"type": ["string", "null"]}, "thumbnail": {"type": "string"}}},
    "Version": {"type": "object", "properties": {
        "version": {"type": "string"}, "status": {"type": "string"}, "method": {"type": "string"},
        "backbone_id": {"type": ["string", "null"]}, "created": {"type": "string"}, "updated": {"type": "string"},
        "metrics": {"type": "object"}, "error": {"type": ["string", "null"]}}},
    "Concept": {"type": "object", "properties": {
        "placeholder": {"type": "string"}, "name": {"type": "string"}, "parent": {"type": "string"},
        "attributes": {"type": "array", "items": {"type": "string"}}, "method": {"type": "string"},
        "num_vectors": {"type": "integer"},
        "status": {"type": "string", "enum": ["registered", "training", "ready", "failed", "cancelled"]},
        "active_version": {"type": ["string", "null"]}, "created": {"type": "string"}, "updated": {"type": "string"},
        "metrics": {"type": "object"}, "error": {"type": ["string", "null"]}, "images": {"type": "integer"},
        "thumbnail": {"type": "string"}, "training_job": {"oneOf": [_ref("Job"), {"type": "null"}]},
        "versions": {"type": "array", "items": _ref("Version")}}},
    "Session": {"type": "object", "properties": {
        "csrf_token": {"type": "string"}, "admin": {"type": "boolean"}, "user": {"type": ["string", "null"]}}},
}


def _search_request(query, limits) -> dict[str, Any]:
    """SearchRequest: `query` (QueryConfig) and `limits` (LimitSettings) give the bounds the server applies."""
    text = {"type": "string", "maxLength": query.max_query_chars, "pattern": QUERY_TEXT,
            "description": "text; custom tokens as <name>, e.g. '<aurora> dress on a beach'"}
    integer = {"type": "integer", "minimum": -2**53, "maximum": 2**53}
    value = {"oneOf": [{"type": "string"}, integer]}
    field_name = {"pattern": "^[A-Za-z_][A-Za-z0-9_]{0,63}$"}
    open_price = {"oneOf": [PRICE, {"type": "null"}]}
    return {"type": "object", "additionalProperties": False, "properties": {
        "query": text,
        "image": {"oneOf": [{**BASE64, "description": "base64 of a PNG/JPEG/WebP photo to search by (at most "
                                                      f"{limits.max_image_bytes} bytes decoded)"}, {"type": "null"}]},
        "category": {"oneOf": [{"type": "string"}, {"type": "array", "minItems": 1, "items": {"type": "string"}},
                               {"type": "null"}]},
        "filters": {"type": "object", "description": "payload field -> exact value or a non-empty list of them",
                    "propertyNames": field_name, "additionalProperties": {"oneOf": [
                        value, {"type": "array", "minItems": 1, "items": {"type": "string"}},
                        {"type": "array", "minItems": 1, "items": integer}]}},
        "ranges": {"type": "object", "description": "payload field -> [min, max] (null leaves a side open)",
                   "propertyNames": field_name, "additionalProperties": {"oneOf": [
                       {"type": "array", "prefixItems": [PRICE, open_price], "minItems": 2, "maxItems": 2},
                       {"type": "array", "prefixItems": [{"type": "null"}, PRICE], "minItems": 2, "maxItems": 2}]}},
        "min_price": open_price, "max_price": open_price,
        "limit": {"type": ["integer", "null"], "minimum": 1, "maximum": query.max_limit},
        "offset": {"type": "integer", "minimum": 0, "maximum": query.max_offset},
        "gair": {"type": ["boolean", "null"]},
        "weight": {"type": ["number", "null"], "minimum": 0, "maximum": 1,
                   "description": "fixed composition weight w; null: GAIR's w* when known, else 1"},
        "seed": {"type": ["integer", "null"], "minimum": 0, "maximum": MAX_SEED},
        "method": {"type": "string", "enum": ["composed", "text-only", "text+image"]},
        "preview": {"type": "boolean", "default": True, "description": "queue the preview job for a text query"},
        "colour": {"oneOf": [{"type": "string"}, {"type": "array", "minItems": 1, "items": {"type": "string"}},
                             {"type": "null"}]},
        "mode": {"type": "string", "enum": list(MODES), "default": "products",
                 "description": "a page of products (each with its matching photos) or of photos"},
        "retrieval": {"type": "string", "enum": list(RETRIEVALS), "default": "auto",
                      "description": "auto: dense for a query with a custom token, else hybrid; hybrid: CLIP and "
                                     "BM25 fused in the store; or one side alone"},
        "sort": {"type": "string", "enum": list(SORTS), "default": "relevance"},
        "correct": {"type": "boolean", "default": True,
                    "description": "correct typos against the catalog's words; false searches the query as typed"},
        "facets": {"type": "boolean", "default": True,
                   "description": "count categories, colours and price ranges over the matching products"},
        "understand": {"type": "boolean", "default": True,
                       "description": "read prices, negations, ids and concept names out of the text"},
        "ignore": {"type": "array", "maxItems": 20, "items": {"type": "string", "maxLength": 200},
                   "description": "keys of understood constraints to leave unread (interpretation.constraints)"},
        "exclude": {"type": "object", "description": "payload field -> values a result must not have",
                    "propertyNames": {"pattern": FIELD_PATH}, "additionalProperties": {
                        "type": "array", "minItems": 1, "items": {"type": "string"}}}},
        "anyOf": [{"required": ["query"], "properties": {"query": {"pattern": QUERY_NONBLANK}}},
                  {"required": ["image"], "properties": {"image": {"type": "string"}}}],
        "description": "a text query, a photo, or both"}


def _concept_registration(limits) -> dict[str, Any]:
    from trainer.words import MAX_ATTRIBUTES

    from .concepts_admin import MAX_STEPS, MAX_VECTORS

    images = {"minItems": limits.min_concept_images, "maxItems": limits.max_concept_images}
    word = {"type": "string", "maxLength": 40, "pattern": "^[^<>]*$"}
    return {"type": "object", "required": ["placeholder", "parent", "images"], "properties": {
        "placeholder": {"type": "string", "pattern": f"^(?:{TOKEN}|{NAME_PATTERN})$",
                        "description": "'<aurora>' or 'aurora'; not the parent word itself"},
        "parent": {"type": "string", "maxLength": 60, "pattern": "^[^<>]*[^<>\\s][^<>]*$",
                   "description": "the category word, e.g. 'dress'"},
        "images": {"type": "array", **images, "items": BASE64,
                   "description": "base64 of PNG/JPEG/WebP files (multipart: files in the field 'images')"},
        "attributes": {"oneOf": [{"type": "array", "items": word, "maxItems": MAX_ATTRIBUTES},
                                 {"type": "string", "pattern": "^[^<>]*$"}],
                       "description": "attribute words (distinct ones count; the projection needs at least 2); "
                                      "empty: chosen automatically"},
        "method": {"type": "string", "enum": ["prompt-tuning", "textual-inversion", "ti+ce", "ti+ce+proj"]},
        "num_vectors": {"type": "integer", "minimum": 1, "maximum": MAX_VECTORS},
        "steps": {"type": "integer", "minimum": 1, "maximum": MAX_STEPS}}}, images


def spec(query=None, limits=None) -> dict[str, Any]:
    """The document for a QueryConfig and LimitSettings (the app passes its own; None: the defaults)."""
    from engine.query import QueryConfig
    from web.jobs import STATUSES
    from web.settings import LimitSettings

    from .concepts_admin import MAX_STEPS

    query, limits = query or QueryConfig(), limits or LimitSettings()
    registration, images = _concept_registration(limits)
    search_params = [
        _query("q", {"type": "string", "minLength": 1, "maxLength": query.max_query_chars, "pattern": QUERY_NONBLANK},
               "search text; custom tokens as <name>", required=True),
        _query("category", {"type": "string"}, "exact category (repeat for any of several)"),
        _query("min_price", PRICE, "inclusive lower price bound (not above max_price)"),
        _query("max_price", PRICE, "inclusive upper price bound"),
        _query("limit", {"type": "integer", "minimum": 1, "maximum": query.max_limit}, "results per page"),
        _query("offset", {"type": "integer", "minimum": 0, "maximum": query.max_offset},
               "results skipped (pagination)"),
        _query("w", {"type": "number", "minimum": 0, "maximum": 1}, "fixed composition weight"),
        _query("gair", {"type": "boolean"}, "run GAIR in the preview job (default on)"),
        _query("seed", {"type": "integer", "minimum": 0, "maximum": MAX_SEED}, "diffusion seed of the preview"),
        _query("method", {"type": "string", "enum": ["composed", "text-only", "text+image"]}, "query vector"),
        _query("preview", {"type": "boolean"}, "queue the preview job (default true)"),
        _query("colour", {"type": "string"}, "exact colour (repeat for any of several)"),
        _query("mode", {"type": "string", "enum": ["products", "photos"]}, "results per product (default) or photo"),
        _query("retrieval", {"type": "string", "enum": list(RETRIEVALS)}, "retrieval sides (default auto: dense for a "
                                                                          "custom token, else hybrid)"),
        _query("sort", {"type": "string", "enum": ["relevance", "price_asc", "price_desc"]}, "result order"),
        _query("correct", {"type": "boolean"}, "correct typos (default true)"),
        _query("facets", {"type": "boolean"}, "count facets (default true)"),
        _query("understand", {"type": "boolean"}, "read prices, negations, ids and concept names (default true)"),
        _query("ignore", {"type": "array", "maxItems": 20, "items": {"type": "string", "maxLength": 200}},
               "a constraint key to leave unread (repeat for several)"),
    ]
    admin = SESSION
    paths: dict[str, Any] = {
        "/api/session": {"get": {"summary": "The session's CSRF token and whether it is logged in",
                                 "operationId": "getSession", "responses": {"200": _json(_ref("Session"), "session")}}},
        "/api/login": {"post": {
            "summary": "Log in as admin (sets the session cookie)", "operationId": "login", "security": STATE_CHANGE,
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "type": "object", "required": ["user", "password"],
                "properties": {"user": {"type": "string"}, "password": {"type": "string"}}}}}},
            "responses": {"200": _json(_ref("Session"), "logged in"), **_errors(400, 401, 429)}}},
        "/api/logout": {"post": {"summary": "Log out", "operationId": "logout", "security": STATE_CHANGE,
                                 "responses": {"200": _json({"type": "object"}, "logged out"), **_errors(400)}}},
        "/api/suggest": {"get": {
            "summary": "Suggestions for the text being typed (names, categories, facet values, concept names)",
            "operationId": "suggest", "parameters": [
                _query("q", {"type": "string", "maxLength": 200}, "the text typed so far", required=True),
                _query("limit", {"type": "integer", "minimum": 1, "maximum": 50}, "suggestions (default 8)")],
            "responses": {"200": _json({"type": "object", "properties": {
                "q": {"type": "string"}, "suggestions": {"type": "array", "items": _ref("Suggestion")}}},
                "suggestions, best first"), **_errors(400)}}},
        "/api/search": {
            "get": {"summary": "Search by text (results at once; the preview is a job to poll)",
                    "operationId": "searchGet", "parameters": search_params,
                    "responses": {"200": _json(_ref("SearchResponse"), "ranked results"), **_errors(400, 429, 503)}},
            "post": {"summary": "Search by text and/or photo (JSON body; no CSRF token needed: read-only)",
                     "operationId": "searchPost",
                     "security": [],
                     "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("SearchRequest")}}},
                     "responses": {"200": _json(_ref("SearchResponse"), "ranked results"),
                                   **_errors(400, 413, 429, 503)}}},
        "/api/tokens": {"get": {"summary": "Live custom tokens (autocomplete)", "operationId": "listTokens",
                                "responses": {"200": _json({"type": "object", "properties": {
                                    "tokens": {"type": "array", "items": _ref("Token")}}}, "tokens")}}},
        "/api/concepts": {
            "get": {"summary": "Registered concepts", "operationId": "listConcepts", "security": admin,
                    "responses": {"200": _json({"type": "object", "properties": {
                        "concepts": {"type": "array", "items": _ref("Concept")}}}, "concepts"), **_errors(401)}},
            "post": {"summary": "Register a concept from 3-50 images and queue its training",
                     "operationId": "createConcept", "security": STATE_CHANGE,
                     "requestBody": {"required": True, "content": {
                         "application/json": {"schema": _ref("ConceptRegistration")},
                         "multipart/form-data": {"schema": {
                             **registration, "properties": {
                                 **registration["properties"], "attributes": {"type": "string", "pattern": "^[^<>]*$"},
                                 "images": {"type": "array", **images, "items": {
                                     "type": "string", "format": "binary", "contentMediaType": "image/png"}}}}}}},
                     "responses": {"202": _json({"type": "object", "properties": {
                         "concept": _ref("Concept"), "job": _ref("Job"), "job_url": {"type": "string"},
                         "warnings": {"type": "array", "items": {"type": "string"},
                                      "description": "what trains but may not work well (e.g. a parent word the "
                                                     "tokenizer does not know)"}}},
                         "registered; training queued"), **_errors(400, 401, 409, 413)}}},
        "/api/concepts/{name}": {
            "get": {"summary": "One concept with its versions", "operationId": "getConcept", "security": admin,
                    "parameters": [NAME], "responses": {"200": _json(_ref("Concept"), "the concept"), **_errors(401, 404)}},
            "delete": {"summary": "Delete a concept, its versions and files (cancels its training)",
                       "operationId": "deleteConcept", "security": STATE_CHANGE, "parameters": [NAME],
                       "responses": {"200": _json({"type": "object"}, "deleted"), **_errors(400, 401, 404)}}},
        "/api/concepts/{name}/activate": {"post": {
            "summary": "Make a version live (default: the newest finished one)", "operationId": "activateConcept",
            "security": STATE_CHANGE, "parameters": [NAME],
            "requestBody": {"required": False, "content": {"application/json": {"schema": {
                "type": "object", "properties": {"version": VERSION_ID}}}}},
            "responses": {"200": _json(_ref("Concept"), "activated"), **_errors(400, 401, 404, 409)}}},
        "/api/concepts/{name}/deactivate": {"post": {
            "summary": "Stop serving the concept's token", "operationId": "deactivateConcept", "security": STATE_CHANGE,
            "parameters": [NAME],
            "responses": {"200": _json(_ref("Concept"), "deactivated"), **_errors(400, 401, 404)}}},
        "/api/concepts/{name}/retrain": {"post": {
            "summary": "Queue a new training run (resumes an interrupted compatible one)",
            "operationId": "retrainConcept", "security": STATE_CHANGE, "parameters": [NAME],
            "requestBody": {"required": False, "content": {"application/json": {"schema": {
                "type": "object", "properties": {"steps": {"type": "integer", "minimum": 1, "maximum": MAX_STEPS}}}}}},
            "responses": {"202": _json(_ref("JobAccepted"), "training queued"), **_errors(400, 401, 404)}}},
        "/api/concepts/{name}/token": {"get": {
            "summary": "Download the token file (safetensors, loadable by diffusers' load_textual_inversion)",
            "operationId": "downloadToken", "security": admin,
            "parameters": [NAME, _query("version", VERSION_ID, "version id (default: the live one)")],
            "responses": {"200": {"description": "the token file", "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}},
                **_errors(400, 401, 404)}}},
        "/api/jobs": {"get": {
            "summary": "Recent jobs", "operationId": "listJobs", "security": admin,
            "parameters": [_query("kind", {"type": "string", "enum": ["train", "reindex", "preview"]}, "job kind"),
                           _query("status", {"type": "string", "enum": list(STATUSES)}, "job status"),
                           _query("limit", {"type": "integer", "minimum": 1, "maximum": 500}, "how many")],
            "responses": {"200": _json({"type": "object", "properties": {
                "jobs": {"type": "array", "items": _ref("Job")}}}, "jobs"), **_errors(400, 401)}}},
        "/api/jobs/{job_id}": {"get": {
            "summary": "A job's status, progress and result (preview jobs are public)", "operationId": "getJob",
            "parameters": [JOB_ID], "responses": {"200": _json(_ref("Job"), "the job"), **_errors(401, 404)}}},
        "/api/jobs/{job_id}/cancel": {"post": {
            "summary": "Ask a job to stop (the admin: any job, for everyone; anyone else: a preview, for themself: "
                       "it stops when no one else waits on it)", "operationId": "cancelJob",
            "security": STATE_CHANGE, "parameters": [JOB_ID],
            "responses": {"200": _json(_ref("Job"), "cancellation requested"), **_errors(400, 401, 404)}}},
        "/api/reindex": {"post": {
            "summary": "Rebuild the product index from the configured catalog (blue/green)",
            "operationId": "reindex", "security": STATE_CHANGE,
            "responses": {"202": _json(_ref("JobAccepted"), "reindex queued"), **_errors(400, 401, 409)}}},
    }
    from . import merch_openapi  # synonyms, rules, analytics, the click beacon

    paths.update(merch_openapi.paths())
    return {
        "openapi": "3.1.0",
        "info": {"title": "Coinage", "version": VERSION,
                 "description": "Product search that a shop teaches new words (custom tokens), with generated "
                                "previews. Errors are JSON objects {error: {code, message}}. Sessions: GET "
                                "/api/session sets the session cookie and returns its csrf_token; every POST and "
                                "DELETE but POST /api/search sends that token in the X-CSRF-Token header with the "
                                "cookie. POST /api/login logs the session in and returns the new csrf_token."},
        "paths": paths,
        "components": {"schemas": {**SCHEMAS, **merch_openapi.SCHEMAS, "SearchRequest": _search_request(query, limits),
                                   "ConceptRegistration": registration}, "securitySchemes": SECURITY_SCHEMES},
    }
