"""The JSON API: the OpenAPI document (valid, and congruent with the app's routes), search by text and photo,
tokens, concepts and jobs with session + CSRF auth, and errors that are always JSON with a code and a message."""
import base64
import re

import pytest

from web.testing import api_login, png_bytes

PASSWORD = "api-pw"


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture
def admin(app):
    client = app.test_client()
    r = api_login(client, PASSWORD)
    assert r.status_code == 200 and r.json["admin"]
    return client


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_openapi_document_is_valid_and_matches_the_routes(client, app):
    from openapi_spec_validator import validate

    spec = client.get("/openapi.json").json
    validate(spec)
    described = {(re.sub(r"\{(\w+)\}", r"<\1>", path), method.upper())
                 for path, ops in spec["paths"].items() for method in ops}
    served = {(rule.rule.replace("<path:", "<"), method) for rule in app.url_map.iter_rules()
              if rule.rule.startswith("/api/") for method in rule.methods - {"HEAD", "OPTIONS"}}
    assert described == served
    # what the server requires is what the document says: the CSRF token (with the session cookie) exactly where
    # the app checks it, the page bounds of the app's own settings
    views = {(rule.rule.replace("<path:", "<"), method): app.view_functions[rule.endpoint]
             for rule in app.url_map.iter_rules() for method in rule.methods}
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            csrf = method in ("post", "delete") and not getattr(
                views[(re.sub(r"\{(\w+)\}", r"<\1>", path), method.upper())], "csrf_exempt", False)
            assert any("csrfToken" in req for req in op.get("security", [])) == csrf, (method, path)
            if csrf:
                assert op["security"] == [{"cookieSession": [], "csrfToken": []}], (method, path)
    schemes = spec["components"]["securitySchemes"]
    assert (schemes["csrfToken"]["in"], schemes["csrfToken"]["name"]) == ("header", "X-CSRF-Token")
    assert (schemes["cookieSession"]["in"], schemes["cookieSession"]["name"]) == ("cookie", "session")
    params = {p["name"]: p for p in spec["paths"]["/api/search"]["get"]["parameters"]}
    config = app.extensions["coinage"].query.config
    assert params["q"]["required"] and params["q"]["schema"]["minLength"] == 1
    assert (params["limit"]["schema"]["maximum"], params["offset"]["schema"]["maximum"]) == (config.max_limit,
                                                                                               config.max_offset)
    body = spec["components"]["schemas"]["SearchRequest"]
    assert body["properties"]["image"]["oneOf"][0]["minLength"] > 0 and body["additionalProperties"] is False
    assert body["properties"]["offset"]["maximum"] == config.max_offset


def test_search_get_returns_results_image_urls_and_the_preview_job(client, res):
    r = client.get("/api/search?q=red+dress&limit=2&category=dress")
    body = r.json
    assert r.status_code == 200 and body["mode"] == "products" and body["retrieval"] == "hybrid"
    assert len(body["products"]) == len(body["results"]) == 2 and body["next_offset"] == 2
    photos = [p for product in body["products"] for p in product["photos"]]
    assert len(photos) > 2 and all(p["payload"]["product_id"] == product["product_id"]
                                   for product in body["products"] for p in product["photos"])
    assert all(x["payload"]["category"] == "dress" and x["image_url"].startswith("/catalog/images/")
               for x in body["results"] + photos)
    assert body["facets"]["values"]["category"] == {"dress": body["facets"]["products"]}
    photo_page = client.get("/api/search?q=red+dress&limit=4&category=dress&mode=photos&preview=0").json
    assert photo_page["mode"] == "photos" and len(photo_page["results"]) == 4 and not photo_page["products"]
    preview = body["preview"]
    assert preview["state"] == "queued" and preview["url"] == f"/api/jobs/{preview['job']}"
    job = client.get(preview["url"])
    assert job.status_code == 200 and job.json["kind"] == "preview" and job.json["panel"]["state"] == "queued"
    res.make_worker().run_once(["preview"])
    done = client.get(preview["url"]).json
    assert done["status"] == "done" and done["panel"]["image"]["url"].startswith("/previews/")


def test_search_responses_never_show_internal_payload_fields(client, res):
    """The store keeps the indexer's bookkeeping (the content hash) in each point's payload; results show the
    product's fields only, by text and by photo, per product and per photo."""
    from engine.product import HASH, INTERNAL_FIELDS

    pages = [client.get("/api/search?q=red+dress&limit=3&preview=0").json,
             client.get("/api/search?q=red+dress&limit=3&mode=photos&preview=0").json,
             client.post("/api/search", json={"image": b64(png_bytes(5)), "limit": 3}).json]
    stored = res.store.retrieve(res.query.config.collection, [pages[0]["results"][0]["id"]])
    assert stored[0].payload.get(HASH)  # there is something to hide
    payloads = [x["payload"] for page in pages for x in page["results"]]
    payloads += [p["payload"] for page in pages for product in page["products"] for p in product["photos"]]
    assert len(payloads) > 9 and all(x["title"] and x["product_id"] for x in payloads)
    assert not [k for x in payloads for k in x if k in INTERNAL_FIELDS]


def test_a_shared_preview_job_is_cancelled_only_when_no_other_client_waits(app, admin):
    clients = [app.test_client(), app.test_client()]
    tokens = [c.get("/api/session").json["csrf_token"] for c in clients]
    jobs = [c.get("/api/search?q=old+backpack").json["preview"]["job"] for c in clients]
    assert jobs[0] == jobs[1]
    first = clients[0].post(f"/api/jobs/{jobs[0]}/cancel", headers={"X-CSRF-Token": tokens[0]})
    assert first.status_code == 200 and first.json["detached"] and first.json["status"] == "queued"
    assert first.json["panel"]["state"] == "cancelled" and "still waits" in first.json["panel"]["message"]
    assert clients[1].get(f"/api/jobs/{jobs[0]}").json["status"] == "queued"
    last = clients[1].post(f"/api/jobs/{jobs[0]}/cancel", headers={"X-CSRF-Token": tokens[1]})
    assert last.status_code == 200 and not last.json["detached"] and last.json["status"] == "cancelled"
    shared = clients[0].get("/api/search?q=old+red+backpack").json["preview"]["job"]
    assert clients[1].get("/api/search?q=old+red+backpack").json["preview"]["job"] == shared
    forced = admin.post(f"/api/jobs/{shared}/cancel")  # the admin's cancel stops it for everyone
    assert forced.json["status"] == "cancelled" and not forced.json["detached"]


def test_search_post_by_photo_needs_no_csrf(client):
    r = client.post("/api/search", json={"image": b64(png_bytes(5)), "limit": 3})
    assert r.status_code == 200 and len(r.json["results"]) == 3 and r.json["preview"] is None
    bad = client.post("/api/search", json={"image": "!!!"})
    assert bad.status_code == 400 and bad.json["error"]["field"] == "image"


@pytest.mark.parametrize("kwargs,field,code", [
    ({"json": {"limit": 3}}, "query", "missing_field"),
    ({"json": {"query": "dress", "limit": "ten"}}, None, "bad_query"),
    ({"json": {"query": "dress", "flavour": "red"}}, None, "bad_query"),  # an unknown field
    ({"json": {"query": "dress", "sort": "cheapest"}}, None, "bad_query"),
    ({"json": {"query": "dress", "preview": "yes"}}, "preview", "invalid_field"),
    ({"data": "not json", "content_type": "text/plain"}, None, "invalid_json"),
    ({"json": ["dress"]}, None, "invalid_json"),
])
def test_search_post_errors_name_the_field(client, kwargs, field, code):
    r = client.post("/api/search", **kwargs)
    assert r.status_code == 400 and r.is_json and r.json["error"]["code"] == code
    assert r.json["error"]["message"]
    if field:
        assert r.json["error"]["field"] == field and repr(field) in r.json["error"]["message"]


def test_search_get_errors(client):
    assert client.get("/api/search").json["error"] == {
        "code": "missing_field", "field": "q",
        "message": "missing field 'q': the search text, e.g. q=red dress (custom tokens as <name>)"}
    assert client.get("/api/search?q=x&limit=lots").json["error"]["field"] == "limit"
    unknown = client.get("/api/search?q=<nope>+dress")
    assert unknown.status_code == 400 and unknown.json["error"]["code"] == "unknown_token"
    assert unknown.json["error"]["token"] == "<nope>" and "suggestions" in unknown.json["error"]


@pytest.mark.parametrize("field,value,bound", [
    ("offset", 99999999999999999999999, "from 0 to 10000"), ("offset", 10001, "from 0 to 10000"),
    ("offset", -1, "from 0 to 10000"), ("limit", 99999999999999999999999, "from 1 to 100"),
    ("limit", 0, "from 1 to 100"),
])
def test_search_pages_beyond_the_bounds_are_a_400_naming_the_bound(client, res, field, value, bound):
    assert (res.query.config.max_offset, res.query.config.max_limit) == (10000, 100)  # the one definition
    for r in (client.get(f"/api/search?q=dress&{field}={value}&preview=0"),
              client.post("/api/search", json={"query": "dress", field: value, "preview": False})):
        assert r.status_code == 400 and r.json["error"]["code"] == "bad_query", r.json
        assert f"field {field!r} must be an integer {bound}" in r.json["error"]["message"]
    deepest = client.get(f"/api/search?q=dress&{field}={10000 if field == 'offset' else 100}&preview=0")
    assert deepest.status_code == 200


def test_integral_json_numbers_count_as_integers_as_in_json_schema(client):
    r = client.post("/api/search", json={"query": "dress", "limit": 3.0, "offset": 1.0, "seed": 2.0,
                                         "filters": {"stock": [5.0, 6]}, "preview": False})
    assert r.status_code == 200 and (r.json["limit"], r.json["offset"]) == (3, 1), r.json
    fractional = client.post("/api/search", json={"query": "dress", "limit": 3.5})
    assert fractional.status_code == 400 and "field 'limit' must be an integer" in fractional.json["error"]["message"]


def test_errors_are_json_never_html(client, res, monkeypatch):
    missing = client.get("/api/nothing-here")
    assert missing.status_code == 404 and missing.json["error"]["code"] == "not_found"
    wrong = client.put("/api/search")
    assert wrong.status_code in (400, 405) and wrong.is_json
    wrong = client.get("/api/login")
    assert wrong.status_code == 405 and wrong.json["error"]["code"] == "method_not_allowed" and "POST" in wrong.headers["Allow"]

    def broken(_request):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(res.query, "search", broken)
    r = client.get("/api/search?q=dress")
    assert r.status_code == 500 and r.json["error"]["code"] == "internal_error" and r.json["error"]["ref"]
    assert "disk on fire" not in r.json["error"]["message"]  # details stay in the log
    page = client.get("/search?q=dress")
    assert page.status_code == 500 and "internal error" in page.get_data(as_text=True)


def test_admin_api_needs_login_and_csrf(client, app):
    assert client.get("/api/concepts").status_code == 401
    assert client.post("/api/reindex").json["error"]["code"] == "csrf_failed"
    token = client.get("/api/session").json["csrf_token"]
    assert client.post("/api/reindex", headers={"X-CSRF-Token": token}).status_code == 401
    bad = client.post("/api/login", json={"user": "admin"}, headers={"X-CSRF-Token": token})
    assert bad.status_code == 400 and bad.json["error"]["field"] == "password"
    wrong = client.post("/api/login", json={"user": "admin", "password": "x"}, headers={"X-CSRF-Token": token})
    assert wrong.status_code == 401 and wrong.json["error"]["code"] == "bad_credentials"


def test_register_a_concept_by_json_and_follow_its_job(admin, res):
    body = {"placeholder": "<basil>", "parent": "mug", "images": [b64(png_bytes(i)) for i in range(3)],
            "attributes": ["red", "blue", "old"], "num_vectors": 2, "steps": 2}
    r = admin.post("/api/concepts", json=body)
    assert r.status_code == 202, r.json
    concept, job = r.json["concept"], r.json["job"]
    assert concept["placeholder"] == "<basil>" and concept["status"] == "registered" and concept["images"] == 3
    assert job["kind"] == "train" and job["status"] == "queued" and job["params"]["config"] == {"steps": 2}
    assert admin.post("/api/concepts", json=body).status_code == 409
    finished = res.make_worker().run_once(["train"])
    assert finished.status == "done", finished.error
    got = admin.get("/api/concepts/basil").json
    assert got["active_version"] == "v0001" and got["versions"][0]["status"] == "ready"
    tokens = admin.get("/api/tokens").json["tokens"]
    assert [t["placeholder"] for t in tokens] == ["<basil>"] and tokens[0]["parent"] == "mug"
    download = admin.get("/api/concepts/basil/token")
    assert download.status_code == 200 and download.data[8:9] == b"{"
    download.close()
    assert admin.post("/api/concepts/basil/deactivate").json["active_version"] is None
    assert admin.post("/api/concepts/basil/activate", json={"version": "v0001"}).json["active_version"] == "v0001"
    retrain = admin.post("/api/concepts/basil/retrain", json={"steps": 1})
    assert retrain.status_code == 202
    assert admin.post(f"/api/jobs/{retrain.json['job']['id']}/cancel").json["status"] == "cancelled"
    listed = admin.get("/api/jobs?kind=train").json["jobs"]
    assert {j["status"] for j in listed} == {"done", "cancelled"}
    assert admin.delete("/api/concepts/basil").json == {"deleted": "<basil>"}
    assert admin.get("/api/concepts/basil").status_code == 404


def test_missing_concepts_and_versions_are_404_and_a_lost_registration_race_is_409(admin, res,
                                                                                    lose_registration_race):
    for r in (admin.post("/api/concepts/nope/activate"), admin.post("/api/concepts/nope/activate", json={})):
        assert r.status_code == 404 and r.json["error"]["code"] == "concept_not_found", r.json
    body = {"placeholder": "<racer>", "parent": "mug", "images": [b64(png_bytes(i)) for i in range(3)]}
    assert admin.post("/api/concepts", json=body).status_code == 202
    try:
        for r in (admin.post("/api/concepts/racer/activate", json={"version": "v0099"}),
                  admin.get("/api/concepts/racer/token?version=v0099"), admin.get("/api/concepts/racer/token")):
            assert r.status_code == 404 and r.json["error"]["code"] == "concept_not_found", r.json
        sequential = admin.post("/api/concepts", json=body)
        lose_registration_race(res.registry)
        raced = admin.post("/api/concepts", json=body)
        for r in (sequential, raced):
            assert r.status_code == 409 and r.json["error"]["code"] == "concept_exists", r.json
            assert r.json["error"]["field"] == "placeholder"
        assert raced.json == sequential.json
    finally:
        assert admin.delete("/api/concepts/racer").status_code == 200  # cancels its queued training too


def test_registration_words_are_checked_once_deduplicated_and_warned_about(admin, res):
    body = {"placeholder": "<dress>", "parent": "Dress ", "images": [b64(png_bytes(i)) for i in range(3)]}
    same = admin.post("/api/concepts", json=body)
    assert same.status_code == 400 and same.json["error"]["field"] == "placeholder"
    assert "is its own parent word 'Dress'" in same.json["error"]["message"]
    body.update(placeholder="<pinafore>", attributes=["red", " RED", "red  "])
    repeated = admin.post("/api/concepts", json=body)
    assert repeated.status_code == 400 and repeated.json["error"]["field"] == "attributes"
    message = repeated.json["error"]["message"]
    assert "at least 2 distinct attribute words; got 1 distinct attribute word (red)" in message
    assert "<pinafore>" not in res.registry
    body.update(parent="xqzvb", attributes=["Red", "red", "old"])
    r = admin.post("/api/concepts", json=body)
    try:
        assert r.status_code == 202 and r.json["concept"]["attributes"] == ["red", "old"]
        assert len(r.json["warnings"]) == 1 and "'xqzvb' is spelled with 4 sub-word pieces" in r.json["warnings"][0]
    finally:
        admin.delete("/api/concepts/pinafore")


@pytest.mark.parametrize("body,field", [
    ({"parent": "mug", "images": []}, "placeholder"),
    ({"placeholder": "x", "images": []}, "parent"),
    ({"placeholder": "x", "parent": "mug"}, "images"),
    ({"placeholder": "x", "parent": "mug", "images": "abc"}, "images"),
    ({"placeholder": "x", "parent": "mug", "images": ["%%%"]}, "images"),
    ({"placeholder": "x", "parent": "mug", "images": [b64(png_bytes(0))]}, "images"),
    ({"placeholder": "x", "parent": "mug", "images": [b64(png_bytes(i)) for i in range(3)], "num_vectors": "two"},
     "num_vectors"),
])
def test_concept_registration_errors_name_the_field(admin, body, field):
    r = admin.post("/api/concepts", json=body)
    assert r.status_code == 400 and r.json["error"]["field"] == field, r.json


def test_jobs_visibility_and_reindex(admin, client, res):
    train_job = res.jobs.submit("train", {"placeholder": "<ghost>"})
    assert client.get(f"/api/jobs/{train_job}").status_code == 401  # not public
    assert admin.get(f"/api/jobs/{train_job}").json["kind"] == "train"
    assert client.get("/api/jobs/unknown").json["error"]["code"] == "job_not_found"
    res.jobs.request_cancel(train_job)
    r = admin.post("/api/reindex")
    assert r.status_code == 202 and r.json["job"]["kind"] == "reindex"
    assert admin.post("/api/reindex").json["job"]["id"] == r.json["job"]["id"]  # one at a time
    admin.post(f"/api/jobs/{r.json['job']['id']}/cancel")
    assert admin.get("/api/jobs?status=bogus").json["error"]["field"] == "status"
