"""Malformed values inside well-formed requests (issue #27, minors): each is a 400 naming the field, never a
500 from deep inside the tokenizer, the database or the vector store, and never a job row."""
from __future__ import annotations

import pytest

from attack_kit import PASSWORD

SURROGATE = "\\ud800"  # JSON's escape of a lone surrogate: json.loads turns it into a str UTF-8 cannot encode


def post_json(client, url: str, text: str, **kw):
    return client.post(url, data=text.encode(), content_type="application/json", **kw)


@pytest.mark.parametrize("body, needle", [
    (f'{{"query": "red {SURROGATE} dress"}}', "'query' holds a lone surrogate"),
    (f'{{"query": "dress", "category": "{SURROGATE}"}}', "'category' holds a lone surrogate"),
    (f'{{"query": "dress", "filters": {{"category": "{SURROGATE}"}}}}', "'filters.category' holds a lone surrogate"),
    (f'{{"query": "dress", "filters": {{"{SURROGATE}": "x"}}}}', "lone surrogate"),
    ('{"query": "dress", "filters": {"a..b[": "x"}}', "not a payload field path"),
    ('{"query": "dress", "filters": {"": "x"}}', "not a payload field path"),
    ('{"query": "dress", "ranges": {"[[": [1, 2]}}', "not a payload field path"),
    ('{"query": "dress", "filters": {"price": 18446744073709551616}}', "64-bit integer"),
    ('{"query": "dress", "filters": {"price": [1, -9223372036854775809]}}', "64-bit integer"),
    ('{"query": "dress", "ranges": {"price": [50, 10]}}', "min 50 above max 10"),
    ('{"query": "dress", "seed": 4294967296}', "from 0 to 4294967295"),
    ('{"query": "dress", "seed": 18446744073709551616}', "from 0 to 4294967295"),
])
def test_json_search_fields_that_cannot_be_searched_are_a_400_naming_the_field(client, res, body, needle):
    jobs = res.jobs.count()
    r = post_json(client, "/api/search", body)
    assert r.status_code == 400, r.get_data(as_text=True)
    assert needle in r.json["error"]["message"]
    assert res.jobs.count() == jobs  # refused before any preview job exists


def test_a_valid_field_path_and_int64_bounds_still_search(client):
    r = client.post("/api/search", json={"query": "dress", "preview": False, "filters": {"category": "dress"},
                                         "ranges": {"price": [10, 10**3]}, "seed": 2**32 - 1})
    assert r.status_code == 200 and r.json["results"]


@pytest.mark.parametrize("url, needle", [
    ("/api/search?q=dress&gair=maybe", "'gair'"),
    ("/api/search?q=dress&facets=nope", "'facets'"),
    ("/api/search?q=dress&preview=maybe", "'preview'"),
    ("/api/search?q=dress&seed=4294967296", "from 0 to 4294967295"),
])
def test_query_parameters_out_of_their_domain_are_a_400(client, res, url, needle):
    jobs = res.jobs.count()
    r = client.get(url)
    assert r.status_code == 400 and needle in r.json["error"]["message"], r.get_data(as_text=True)
    assert res.jobs.count() == jobs


def test_boolean_query_parameters_read_false_words_as_false(client):
    r = client.get("/api/search?q=dress&facets=off&preview=0")
    assert r.status_code == 200 and r.json["facets"] is None


def test_a_lone_surrogate_at_the_anonymous_login_is_a_400(client):
    token = client.get("/api/session").json["csrf_token"]
    for body in (f'{{"user": "{SURROGATE}", "password": "x"}}', f'{{"user": "admin", "password": "{SURROGATE}"}}'):
        r = post_json(client, "/api/login", body, headers={"X-CSRF-Token": token})
        assert r.status_code == 400 and r.json["error"]["code"] == "invalid_field", r.get_data(as_text=True)
    ok = client.post("/api/login", json={"user": "admin", "password": PASSWORD}, headers={"X-CSRF-Token": token})
    assert ok.status_code == 200
