"""The OpenAPI document says exactly what the server requires: schemathesis generates requests from
/openapi.json and runs them against the app in-process (WSGI), logged in through the documented flow
(GET /api/session, then POST /api/login with its csrf_token). Every operation must answer without a 5xx,
with a status code, content type and body the document describes, and accept every request the document
calls valid (bounded, derandomized examples: the same cases every run, offline)."""
import base64

import pytest

from web.testing import png_bytes

PASSWORD = "openapi-pw"
EXAMPLES = 25  # per operation

# 400s that a schema-valid request may still get, by error code: they depend on the server's state (which custom
# tokens exist) or on what JSON Schema cannot say (that base64 or file bytes are an image, that two fields
# contradict each other, that attribute words are distinct, that the placeholder is not its own parent word, that
# a word holds no control, invisible or bidi-override character: Unicode categories, which its regexes cannot name).
SEMANTIC_ERRORS = {"unknown_token", "conflicting_fields", "not_an_image", "unsupported_image", "image_too_small",
                   "image_too_many_pixels", "empty_file", "own_parent_word", "too_few_attributes", "unprintable_word",
                   "invalid_merch", "search_not_found"}  # a rule's fields that contradict; a click's unsigned id

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def logged_in(app) -> tuple[str, str]:
    """(session cookie, csrf token) of an admin session, by the flow the document describes; the session
    registers and trains one concept first, so that lists, tokens and jobs answer with something to check."""
    client = app.test_client()
    token = client.get("/api/session").json["csrf_token"]
    r = client.post("/api/login", json={"user": "admin", "password": PASSWORD}, headers={"X-CSRF-Token": token})
    assert r.status_code == 200 and r.json["admin"], r.json
    token = r.json["csrf_token"]
    images = [base64.b64encode(png_bytes(i)).decode() for i in range(3)]
    r = client.post("/api/concepts", headers={"X-CSRF-Token": token}, json={
        "placeholder": "<aurora>", "parent": "dress", "attributes": ["red", "old"], "images": images, "steps": 2})
    assert r.status_code == 202, r.json
    assert app.extensions["coinage"].make_worker().run_once(["train"]).status == "done"
    return client.get_cookie("session").value, token


def test_every_operation_does_what_the_openapi_document_says(app):
    import schemathesis
    from hypothesis import HealthCheck, Phase, given, settings
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (content_type_conformance, positive_data_acceptance,
                                                   response_schema_conformance, status_code_conformance)

    def schema_valid_requests_are_accepted(ctx, response, case):
        if response.status_code == 400 and response.json()["error"]["code"] in SEMANTIC_ERRORS:
            return None
        return positive_data_acceptance(ctx, response, case)

    checks = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
              schema_valid_requests_are_accepted]
    cookie, token = logged_in(app)
    schema = schemathesis.openapi.from_wsgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 29  # GET /api/suggest (understand26) and the merchandising operations joined the 18
    for operation in operations:
        # the credentials every operation's security requirement names (cookie + CSRF header), fixed
        strategy = operation.as_strategy(headers={"X-CSRF-Token": token}, cookies={"session": cookie})

        @settings(max_examples=EXAMPLES, derandomize=True, database=None, deadline=None,
                  phases=[Phase.explicit, Phase.generate],
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
        @given(case=strategy)
        def run(case):
            case.validate_response(case.call(), checks=checks)

        run()
