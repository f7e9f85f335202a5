"""The HTTP surface attacked the way the internet will: every admin route without a login and without the
CSRF token (enumerated from the app's URL map, so a new route is covered automatically), path traversal
in every route that serves a file, oversized bodies, and malformed JSON. Each answer is a 3xx/4xx with
a clear code, never a 500, never a leaked file, and nothing changes."""
from __future__ import annotations

import base64
import json
import re

import pytest
import torch
from werkzeug.routing import Rule

from engine.tokens import CustomToken, TokenMeta, save_token

from attack_kit import PASSWORD

SAMPLE_ARGS = {"name": "aurora", "job_id": "JOB", "version": "v0001", "index": 0, "filename": "images/p0000/0.png",
               "key": "0" * 64, "sha": "0" * 64}
API_ADMIN = {"api.list_concepts", "api.create_concept", "api.get_concept", "api.delete_concept", "api.activate",
             "api.deactivate", "api.retrain", "api.token", "api.list_jobs", "api.reindex"}


@pytest.fixture(scope="module")
def site(app, tmp_path_factory):
    """The shared app with one live concept <aurora> and one queued training job (removed afterwards)."""
    res = app.extensions["coinage"]
    token = save_token(CustomToken("<aurora>", torch.randn(2, 32), TokenMeta("dress", "tiny-random")),
                       tmp_path_factory.mktemp("token") / "aurora.safetensors")
    res.registry.import_token(token, parent="dress", backbone_id="tiny-random", width=32)
    job = res.jobs.submit("train", {"placeholder": "<aurora>", "config": {}}, dedupe_key="train:<aurora>")
    yield app, job
    res.jobs.request_cancel(job)
    res.registry.delete("<aurora>")


def state(app) -> tuple:
    res = app.extensions["coinage"]
    concepts = [(c.placeholder, c.active_version, c.status) for c in res.registry.list()]
    jobs = sorted((j.id, j.kind, j.status, j.cancel_requested) for j in res.jobs.list(limit=1000))
    return concepts, jobs


def protected_routes(app, job: str) -> list[tuple[str, str, str]]:
    """(method, url, endpoint) of every admin route, with sample arguments filled in."""
    out = []
    rule: Rule
    for rule in app.url_map.iter_rules():
        if not (rule.endpoint.startswith("admin.") and rule.endpoint != "admin.login") and rule.endpoint not in API_ADMIN:
            continue
        args = {a: (job if a == "job_id" else SAMPLE_ARGS[a]) for a in rule.arguments}
        url = rule.build(args, append_unknown=False)[1]
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            out.append((method, url, rule.endpoint))
    out += [("GET", f"/api/jobs/{job}", "api.get_job"), ("POST", f"/api/jobs/{job}/cancel", "api.cancel_job"),
            ("POST", f"/jobs/{job}/cancel", "search.cancel_preview")]  # a training job is not a shopper's
    return out


def csrf(client) -> str:
    return client.get("/api/session").json["csrf_token"]


def test_every_admin_route_refuses_anonymous_and_csrf_less_requests(site):
    app, job = site
    before = state(app)
    routes = protected_routes(app, job)
    assert len(routes) >= 35
    anon = app.test_client()
    admin = app.test_client()
    admin.post("/api/login", json={"user": "admin", "password": PASSWORD}, headers={"X-CSRF-Token": csrf(admin)})
    for method, url, endpoint in routes:
        api = url.startswith("/api/") or url.startswith("/jobs/")
        if method == "GET":
            r = anon.get(url)
            r.close()
            if api:
                assert r.status_code in (401, 403, 404), (url, r.status_code)
            else:
                assert r.status_code == 302 and "/admin/login" in r.headers["Location"], (url, r.status_code)
            continue
        bare = anon.open(url, method=method)  # no token at all
        assert bare.status_code == 400 and b"csrf" in bare.data.lower(), (method, url, bare.status_code)
        forged = anon.open(url, method=method, headers={"X-CSRF-Token": "0" * 43})
        assert forged.status_code == 400, (method, url, forged.status_code)
        logged_out = anon.open(url, method=method, headers={"X-CSRF-Token": csrf(anon)})
        if endpoint == "admin.logout":  # logging out a visitor who is not logged in changes nothing
            assert logged_out.status_code == 303
        else:
            assert logged_out.status_code in (302, 401, 403), (method, url, logged_out.status_code)
        no_token_admin = admin.open(url, method=method)  # a cross-site form post riding the admin's cookie
        assert no_token_admin.status_code == 400, (method, url, no_token_admin.status_code)
    assert state(app) == before


TRAVERSALS = [
    "/catalog/../jobs.sqlite3", "/catalog/%2e%2e/jobs.sqlite3", "/catalog/%252e%252e/secret_key",
    "/catalog/images/..%2f..%2fsecret_key", "/catalog/..%5c..%5csecret_key.png", "/catalog//etc/passwd",
    "/catalog/%2fetc%2fpasswd", "/catalog/images/p0000/0.png%00.txt", "/catalog/world/../../secret_key.png",
    "/catalog/images/../../../../../../etc/hostname.png", "/previews/..%2f..%2fsecret_key.png", "/previews/...png",
    "/previews/" + "a" * 5000 + ".png", "/search/photo/..", "/search/photo/..%2f..%2fsecret_key",
    "/search/photo/" + "0" * 63 + "/", "/concepts/..%2f..%2fsecret_key/thumb.png", "/concepts/../thumb.png",
    "/static/../secret_key", "/static/%2e%2e/%2e%2e/web/__init__.py",
]
ADMIN_TRAVERSALS = [
    "/admin/concepts/aurora/token.safetensors?version=../../../../secret_key",
    "/admin/concepts/aurora/token.safetensors?version=v0001/../../../../secret_key",
    "/admin/concepts/..%2f..%2fjobs/token.safetensors", "/admin/concepts/aurora/versions/../samples.png",
    "/admin/concepts/aurora/versions/..%2f..%2f..%2f/samples.png", "/admin/concepts/aurora/images/-1.png",
    "/admin/concepts/aurora/images/99999999999999999999.png", "/api/concepts/..%2f..%2fsecret_key/token",
    "/api/concepts/aurora/token?version=../../secret_key",
]


def test_path_traversal_in_file_routes_finds_nothing(site):
    app, _ = site
    root = app.extensions["coinage"].settings.data_dir
    secrets = [(root / "secret_key").read_bytes() if (root / "secret_key").exists() else b"\0no-secret\0",
               b"SQLite format 3", b"root:x:0:0", b"from __future__"]
    admin = app.test_client()
    admin.post("/api/login", json={"user": "admin", "password": PASSWORD}, headers={"X-CSRF-Token": csrf(admin)})
    for client, urls in ((app.test_client(), TRAVERSALS), (admin, ADMIN_TRAVERSALS)):
        for url in urls:
            r = client.get(url, follow_redirects=True)
            body = r.get_data()
            r.close()
            assert r.status_code in (400, 404), (url, r.status_code)
            assert not any(s in body for s in secrets), url


def multipart(token: str, data: bytes) -> bytes:
    """A multipart body built by hand (the test client would spool a big file to an unclosed temp file)."""
    return (b"--B\r\nContent-Disposition: form-data; name=\"csrf_token\"\r\n\r\n" + token.encode() +
            b"\r\n--B\r\nContent-Disposition: form-data; name=\"photo\"; filename=\"big.png\"\r\n"
            b"Content-Type: image/png\r\n\r\n" + data + b"\r\n--B--\r\n")


def test_oversized_bodies_are_refused_before_they_are_read(site):
    app, _ = site
    client = app.test_client()
    limit = app.config["MAX_CONTENT_LENGTH"]
    blob = b"\0" * (limit + 1)
    token = csrf(client)
    for url, kw in (("/api/search", {"data": blob, "content_type": "application/json"}),
                    ("/search/photo", {"data": multipart(token, blob), "content_type": "multipart/form-data; boundary=B"}),
                    ("/admin/login", {"data": {"user": "admin", "password": "x" * (limit + 1), "csrf_token": token}})):
        r = client.post(url, **kw)
        assert r.status_code == 413 and b"COINAGE_MAX_UPLOAD_MB" in r.data, (url, r.status_code)
    big_image = b"\x89PNG\r\n\x1a\n" + b"\0" * (app.extensions["coinage"].settings.limits.max_image_bytes + 1)
    r = client.post("/api/search", json={"image": base64.b64encode(big_image).decode()})
    assert r.status_code == 413 and r.json["error"]["code"] == "image_too_large"


MALFORMED = [
    (b"{not json", "application/json"), (b"[1, 2]", "application/json"), (b'"just a string"', "application/json"),
    (b"null", "application/json"), (b"", "application/json"), (b"\xff\xfe\x00{", "application/json"),
    (b'{"query": "red dress"}', "text/plain"), (b"[" * 100_000 + b"]" * 100_000, "application/json"),
    (b'{"query": ' * 50_000 + b'"x"' + b"}" * 50_000, "application/json"),
    (b'{"query": "dress", "limit": 1e999}', "application/json"), (b'{"query": "dress", "weight": NaN}', "application/json"),
    (b'{"query": "dress", "limit": ' + b"9" * 5000 + b"}", "application/json"),
    (b'{"query": "dress", "offset": -1}', "application/json"),
    (b'{"query": "dress", "filters": {"category": {"$ne": 1}}}', "application/json"),
    (b'{"query": "dress", "filters": {"price": [[1]]}}', "application/json"),
    (b'{"query": "dress", "ranges": {"price": ["a", 3]}}', "application/json"),
    (b'{"query": "dress", "category": []}', "application/json"),
    (b'{"query": 5}', "application/json"), (b'{"query": "dress", "image": 5}', "application/json"),
    (b'{"query": "dress", "preview": "yes"}', "application/json"),
    (json.dumps({"query": "x" * 100_000}).encode(), "application/json"),
]


@pytest.mark.parametrize("body, ctype", MALFORMED, ids=[f"body{i}" for i in range(len(MALFORMED))])
def test_malformed_json_is_a_400_naming_the_problem(site, body, ctype):
    app, _ = site
    client = app.test_client()
    r = client.post("/api/search", data=body, content_type=ctype)
    assert r.status_code == 400 and r.is_json, (r.status_code, r.data[:300])
    error = r.json["error"]
    assert error["code"] != "internal_error" and len(error["message"]) > 10
    token = csrf(client)
    r = client.post("/api/login", data=body, content_type=ctype, headers={"X-CSRF-Token": token})
    assert r.status_code == 400 and r.is_json and r.json["error"]["code"] != "internal_error", r.data
    admin = client.application.test_client()
    admin.post("/api/login", json={"user": "admin", "password": PASSWORD}, headers={"X-CSRF-Token": csrf(admin)})
    token = csrf(admin)
    for url in ("/api/concepts", "/api/concepts/aurora/activate", "/api/concepts/aurora/retrain"):
        r = admin.post(url, data=body, content_type=ctype, headers={"X-CSRF-Token": token})
        assert r.status_code < 500 and r.is_json, (url, r.status_code, r.data[:300])
        assert r.status_code != 202 or url.endswith("/retrain"), url


def test_query_strings_from_hell(site):
    app, _ = site
    client = app.test_client()
    for qs in ("q=%00", "q=%ff%fe", "q=" + "<" * 5000, "q=dress&limit=-5", "q=dress&limit=1e9", "q=dress&page=-1",
               "q=dress&page=99999999999999999999", "q=dress&min_price=nan", "q=dress&max_price=-inf",
               "q=dress&w=2", "q=dress&w=nan", "q=dress&category=" + "c" * 10_000, "q=<aurora>&w=0.5&seed=-1",
               "q=dress&photo=../../secret_key", "q=dress&photo=" + "0" * 64):
        for url in (f"/search?{qs}", f"/api/search?{qs}"):
            r = client.get(url, headers={"HX-Request": "true"})
            assert r.status_code in (200, 400, 404), (url, r.status_code)
            if r.status_code != 200 and url.startswith("/api/"):
                assert r.json["error"]["code"] != "internal_error"
            assert not re.search(rb"internal error", r.data), url
