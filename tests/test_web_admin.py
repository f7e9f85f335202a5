"""Admin pages on a tiny indexed catalog: login/logout, CSRF on every state change, concept registration with
upload checks and attribute suggestions, training through the job worker with live progress, samples, activate /
deactivate / retrain / delete, token download, catalog reindex with rejected rows, and the jobs page."""
import dataclasses
import io
import json
import re

import pytest

from engine.tokens import load_token
from web import create_app
from web.testing import png_bytes, tiny_settings, with_limits

HX = {"HX-Request": "true"}
PASSWORD = "secret-pw"


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def csrf(client):
    return client.get("/api/session").json["csrf_token"]


def log_in(client, password=PASSWORD):
    return client.post("/admin/login", data={"user": "admin", "password": password, "csrf_token": csrf(client)})


@pytest.fixture
def admin(app):
    client = app.test_client()
    assert log_in(client).status_code == 303
    return client


def post(client, url, data=None, **kw):
    return client.post(url, data={**(data or {}), "csrf_token": csrf(client)}, **kw)


def fetch(client, url, **kw):
    r = client.get(url, **kw)
    r.get_data()
    r.close()
    return r


def images(n=3, seed=0, colour=(220, 30, 30)):
    return [(io.BytesIO(png_bytes(seed + i, colour=colour)), f"photo{i}.png") for i in range(n)]


def register(client, name="aurora", n=3, **fields):
    data = {"placeholder": name, "parent": "dress", "attributes": "red, striped, dark", "method": "ti+ce+proj",
            "num_vectors": "2", "steps": "3", "images": images(n), **fields}
    return post(client, "/admin/concepts", data, content_type="multipart/form-data")


def test_admin_pages_need_a_login(app):
    client = app.test_client()
    r = client.get("/admin/concepts")
    assert r.status_code == 302 and "/admin/login?next=/admin/concepts" in r.headers["Location"]
    assert client.get("/api/concepts").status_code == 401 and client.get("/api/concepts").json["error"]["code"] == "login_required"
    assert fetch(client, "/admin/concepts/aurora/token.safetensors").status_code == 302


def test_login_logout_and_wrong_password(app):
    client = app.test_client()
    assert client.get("/admin/login").status_code == 200
    bad = log_in(client, "guess")
    assert bad.status_code == 401 and "Wrong user name or password" in bad.get_data(as_text=True)
    ok = client.post("/admin/login", data={"user": "admin", "password": PASSWORD, "csrf_token": csrf(client),
                                           "next": "/admin/catalog"})
    assert ok.status_code == 303 and ok.headers["Location"].endswith("/admin/catalog")
    assert client.get("/admin/concepts").status_code == 200
    evil = client.post("/admin/login", data={"user": "admin", "password": PASSWORD, "csrf_token": csrf(client),
                                             "next": "//evil.example/"})
    assert evil.headers["Location"].endswith("/admin/concepts")  # no open redirect
    assert post(client, "/admin/logout").status_code == 303
    assert client.get("/admin/concepts").status_code == 302


BYPASSES = ["//evil.example/", "/\t/evil.example", "/\n/evil.example", "/\\evil.example", "\\\\evil.example",
            "/%2F/evil.example", "%2F%2Fevil.example", "/%2f%2fevil.example", "/%5Cevil.example", "/%09/evil.example",
            "/%252F/evil.example", "/%25252F/evil.example", " //evil.example", "///evil.example",
            "https://evil.example/", "http:/evil.example", "javascript:alert(1)", "/\x00/evil.example", "evil.example"]


@pytest.mark.parametrize("target", BYPASSES)
def test_login_redirects_only_to_paths_on_this_site(app, target):
    """No open redirect: the known bypass forms (tab, newline, backslash, //, encoded variants) go to the default."""
    client = app.test_client()
    page = client.get("/admin/login", query_string={"next": target}).get_data(as_text=True)
    assert 'name="next" value=""' in page  # the login page does not copy an unsafe target into its form
    r = client.post("/admin/login", data={"user": "admin", "password": PASSWORD, "csrf_token": csrf(client),
                                          "next": target})
    assert r.status_code == 303 and r.headers["Location"] == "/admin/concepts", r.headers["Location"]


def test_login_keeps_a_path_on_this_site(app):
    client = app.test_client()
    target = "/admin/jobs?kind=train"
    page = client.get("/admin/login", query_string={"next": target}).get_data(as_text=True)
    assert 'name="next" value="/admin/jobs?kind=train"' in page
    r = client.post("/admin/login", data={"user": "admin", "password": PASSWORD, "csrf_token": csrf(client),
                                          "next": target})
    assert r.headers["Location"] == target


def test_every_state_change_needs_the_csrf_token(admin, res):
    for url in ("/admin/logout", "/admin/concepts", "/admin/catalog/reindex", "/admin/concepts/x/delete",
                "/api/logout", "/api/reindex"):
        r = admin.post(url)
        assert r.status_code == 400 and b"csrf" in r.data.lower(), url
    r = admin.post("/admin/catalog/reindex", headers={**HX, "X-CSRF-Token": "forged"})
    assert r.status_code == 400 and 'data-code="csrf_failed"' in r.get_data(as_text=True)
    fresh = admin.application.test_client()
    assert fresh.post("/admin/login", data={"user": "admin", "password": PASSWORD}).status_code == 400
    assert res.jobs.count("reindex") == 0


def test_login_is_throttled_after_many_failures(app):
    client = app.test_client()
    token = csrf(client)
    codes = [client.post("/admin/login", data={"user": "admin", "password": "no", "csrf_token": token},
                         environ_base={"REMOTE_ADDR": "10.9.9.9"}).status_code for _ in range(11)]
    assert codes[:10] == [401] * 10 and codes[10] == 429


@pytest.mark.parametrize("hops", [0, 1])
def test_login_throttle_counts_per_forwarded_client_only_behind_a_configured_proxy(tmp_path, hops):
    """COINAGE_PROXY_HOPS=1 (deploy/): two clients behind the same proxy get their own buckets, so an attacker
    cannot lock the admin out; 0 (no proxy): X-Forwarded-For is ignored, or a client could pick its own bucket."""
    from web.settings import AppSettings

    assert AppSettings.from_env({"COINAGE_PROXY_HOPS": str(hops)}, data_dir=tmp_path).proxy_hops == hops
    app = create_app(tiny_settings(tmp_path, password=PASSWORD, proxy_hops=hops))
    try:
        client = app.test_client()
        token = csrf(client)

        def attempt(forwarded_for: str) -> int:
            return client.post("/admin/login", data={"user": "admin", "password": "no", "csrf_token": token},
                               headers={"X-Forwarded-For": forwarded_for},
                               environ_base={"REMOTE_ADDR": "10.0.0.2"}).status_code  # the proxy

        assert [attempt("203.0.113.7") for _ in range(11)] == [401] * 10 + [429]
        assert attempt("198.51.100.9") == (401 if hops else 429)
        # a forged first value does not help: the proxy appends the address it saw, and only that one is trusted
        assert attempt("198.51.100.9, 203.0.113.7") == 429
    finally:
        app.extensions["coinage"].close()


@pytest.mark.parametrize("fields,n,code,needle", [
    ({"parent": ""}, 3, 400, "missing field &#39;parent&#39;"),
    ({"placeholder": "Bad Name"}, 3, 400, "malformed placeholder"),
    ({"method": "magic"}, 3, 400, "must be one of"),
    ({"num_vectors": "99"}, 3, 400, "must be from 1 to 16"),
    ({"attributes": "red"}, 3, 400, "at least 2 distinct attribute words"),
    ({"attributes": "red, red, red"}, 3, 400, "at least 2 distinct attribute words; got 1 distinct attribute word"),
    ({"attributes": "Red,  red ,RED"}, 3, 400, "repeats, case and spacing do not count"),
    ({"placeholder": "dress", "parent": " Dress "}, 3, 400, "is its own parent word"),
    ({}, 2, 400, "upload 3 to 50 images"),
])
def test_registration_checks_fields_and_images(admin, fields, n, code, needle):
    r = register(admin, "checked", n=n, **fields)
    html = r.get_data(as_text=True)
    assert r.status_code == code and needle in html and 'id="concept-form"' in html


def test_registration_deduplicates_attributes_and_warns_about_an_unknown_parent_word(admin, res):
    r = register(admin, "deduped", parent="dungarees", attributes="Red, red,  dark  blue, Dark Blue")
    assert r.status_code == 303, r.get_data(as_text=True)
    try:
        assert res.registry.get("<deduped>").attributes == ["red", "dark blue"]
        page = admin.get("/admin/concepts/deduped").get_data(as_text=True)
        assert "Warning: the parent word &#39;dungarees&#39; is not in the backbone tokenizer&#39;s vocabulary" in page
        assert "3 sub-word pieces (dun | gare | es)" in page
    finally:
        post(admin, "/admin/concepts/deduped/delete")


def test_deleting_a_concept_while_it_trains_stops_its_job_without_orphan_files(admin, res, monkeypatch):
    assert register(admin, "doomed").status_code == 303
    folder = res.registry.concept_dir("<doomed>")
    real = res.jobs.progress

    def progress(job_id, event, attempt):
        if event.get("phase") == "train" and event.get("step") == 1:
            assert post(admin, "/admin/concepts/doomed/delete").status_code == 303
        return real(job_id, event, attempt=attempt)

    monkeypatch.setattr(res.jobs, "progress", progress)
    job = res.make_worker().run_once(["train"])
    assert job.status == "cancelled" and "<doomed> was deleted while it trained" in job.error, job.error
    assert "retrain" not in job.error.lower() and not folder.exists()


def test_registration_refuses_non_images_and_oversized_ones(admin, app):
    data = {"placeholder": "typed", "parent": "mug",
            "images": images(2) + [(io.BytesIO(b"GIF89a" + b"\0" * 100), "x.gif")]}
    r = post(admin, "/admin/concepts", data, content_type="multipart/form-data")
    assert r.status_code == 400 and "not an image Coinage can read" in r.get_data(as_text=True)
    gif = io.BytesIO()
    __import__("PIL.Image").Image.new("RGB", (32, 32)).save(gif, format="GIF")
    data["images"] = images(2) + [(io.BytesIO(gif.getvalue()), "x.gif")]
    r = post(admin, "/admin/concepts", data, content_type="multipart/form-data")
    assert r.status_code == 400 and "is a GIF image; upload PNG, JPEG, WEBP" in r.get_data(as_text=True)


def test_request_and_image_size_limits(tmp_path):
    settings = with_limits(tiny_settings(tmp_path), max_request_bytes=20_000, max_image_bytes=3_000,
                           max_image_pixels=64 * 64)
    app = create_app(settings)
    try:
        client = app.test_client()
        log_in(client)
        def big():
            return [(io.BytesIO(b"\x89PNG" + b"\0" * 30_000), "huge.png")]

        r = post(client, "/admin/concepts", {"placeholder": "big", "parent": "mug", "images": big()},
                 content_type="multipart/form-data")
        assert r.status_code == 413 and "MiB the server accepts" in r.get_data(as_text=True)
        api = client.post("/api/concepts", data={"images": big(), "placeholder": "big", "parent": "mug"},
                          headers={"X-CSRF-Token": csrf(client)}, content_type="multipart/form-data")
        assert api.status_code == 413 and api.json["error"]["code"] == "too_large"
        noisy = io.BytesIO()
        __import__("PIL.Image").Image.effect_noise((60, 60), 100).convert("RGB").save(noisy, format="PNG")
        files = images(2) + [(io.BytesIO(noisy.getvalue()), "noisy.png")]
        r = post(client, "/admin/concepts", {"placeholder": "big", "parent": "mug", "images": files},
                 content_type="multipart/form-data")
        assert r.status_code == 413 and "&#39;noisy.png&#39; is" in r.get_data(as_text=True)
        wide = io.BytesIO()
        __import__("PIL.Image").Image.new("RGB", (200, 30)).save(wide, format="PNG")
        files = images(2) + [(io.BytesIO(wide.getvalue()), "wide.png")]
        r = post(client, "/admin/concepts", {"placeholder": "big", "parent": "mug", "images": files},
                 content_type="multipart/form-data")
        assert r.status_code == 400 and "200x30 pixels, over the limit" in r.get_data(as_text=True)
    finally:
        app.extensions["coinage"].close()


def test_attribute_suggestions_from_the_images(admin):
    data = {"parent": "dress", "images": images(3)}
    r = post(admin, "/admin/concepts/suggest", data, headers=HX, content_type="multipart/form-data")
    html = r.get_data(as_text=True)
    words = re.search(r'name="attributes" type="text" value="([^"]*)"', html).group(1).split(", ")
    assert r.status_code == 200 and len(words) == 12 and "Suggested from your images" in html
    few = post(admin, "/admin/concepts/suggest", {"parent": "dress"}, headers=HX, content_type="multipart/form-data")
    assert "to get suggestions" in few.get_data(as_text=True)
    typed = post(admin, "/admin/concepts/suggest", {"parent": "dress", "images": images(3), "attributes": "mine, too"},
                 headers=HX, content_type="multipart/form-data").get_data(as_text=True)
    assert 'value="mine, too"' in typed and "Kept the attributes you typed" in typed


def test_register_train_watch_activate_and_search_with_the_new_word(admin, res):
    r = register(admin, "aurora")
    assert r.status_code == 303 and r.headers["Location"].endswith("/admin/concepts/aurora")
    page = admin.get("/admin/concepts/aurora").get_data(as_text=True)
    assert 'data-status="queued"' in page and "hx-trigger=\"load delay:1s\"" in page
    job = res.make_worker().run_once(["train"])
    assert job.status == "done", job.error
    assert job.result["version"] == "v0001" and job.result["activated"]
    assert job.progress["phase"] == "done" and len(job.progress["history"]) == 3
    fragment = admin.get("/admin/concepts/aurora/training?was=running", headers=HX)
    text = fragment.get_data(as_text=True)
    assert 'id="training-done"' in text and "v0001" in text and "<svg" in text and "hx-trigger" not in text
    assert json.loads(fragment.headers["HX-Trigger"]) == {"concept-updated": {"status": "done"}}
    detail = admin.get("/admin/concepts/aurora").get_data(as_text=True)
    assert 'id="live-version">v0001' in detail and 'id="samples"' in detail
    assert fetch(admin, "/admin/concepts/aurora/versions/v0001/samples.png").mimetype == "image/png"
    assert fetch(admin, "/admin/concepts/aurora/images/0.png").mimetype == "image/png"
    listing = admin.get("/admin/concepts").get_data(as_text=True)
    assert 'data-concept="aurora"' in listing and "ti+ce+proj" in listing and "norm ratio" in listing
    # the shopper side now knows the word
    client = admin.application.test_client()
    assert 'data-token="&lt;aurora&gt;"' in client.get("/search/suggest?q=<a").get_data(as_text=True)
    assert fetch(client, "/concepts/aurora/thumb.png").mimetype == "image/png"
    found = client.get("/search?q=<aurora>+dress", headers=HX).get_data(as_text=True)
    assert found.count('<article class="card') == 6 and 'data-source="default"' in found


def test_token_download_is_a_diffusers_style_file(admin, res, tmp_path):
    r = fetch(admin, "/admin/concepts/aurora/token.safetensors")
    assert r.status_code == 200 and "attachment" in r.headers["Content-Disposition"]
    path = tmp_path / "aurora.safetensors"
    path.write_bytes(r.data)
    from safetensors.torch import load_file

    tensors = load_file(str(path))
    assert list(tensors) == ["<aurora>"] and tensors["<aurora>"].shape == (2, res.backbone.text_width)
    assert load_token(path, backbone_id="tiny-random").meta.parent == "dress"


def _gair_panel(admin, res, query: str) -> tuple[str, str]:
    """The search page's first HTML and its preview panel once the worker has run GAIR."""
    client = admin.application.test_client()
    html = client.get(f"/search?q={query}", headers=HX).get_data(as_text=True)
    poll = re.search(r'hx-get="(/search/preview/[^"]+)"', html).group(1).replace("&amp;", "&")
    worker = res.make_worker()
    while worker.run_once(["preview"]) is not None:
        pass
    return html, client.get(poll, headers=HX).get_data(as_text=True)


def test_gair_preview_for_the_new_word_explains_and_w_1_ranks(admin, res):
    """The default (QueryConfig.gair_ranks False): GAIR draws every w and marks its pick, the results stay
    ranked at w = 1 with the concept's photos, and the page says so."""
    html, done = _gair_panel(admin, res, "<aurora>+dress")
    assert "ranked with w = <b>1.00</b>" in html and "(default)" in html and "with the concept's own photos" in html
    assert "until GAIR" not in html
    assert 'data-state="done"' in done and "the default, which ranks the results; GAIR's pick (w* =" in done
    assert len(re.findall(r'<a href="/search\?[^"]*w=', done)) == 3  # the strip: one preview per w of the grid
    assert "chosen" in re.search(r"<a [^>]*data-w=\"1.0\"[^>]*>", done).group(0)  # the preview shown: w = 1
    assert 'hx-swap-oob' not in done  # nothing to re-rank


def test_gair_preview_for_the_new_word_reranks_the_results_when_gair_ranks(admin, res, monkeypatch):
    monkeypatch.setattr(res.query, "config", dataclasses.replace(res.query.config, gair_ranks=True))
    html, done = _gair_panel(admin, res, "<aurora>+dress+on+a+beach")
    assert "(default, until GAIR has chosen)" in html
    assert 'data-state="done"' in done and "chosen by GAIR" in done
    assert 'id="results" hx-swap-oob="true"' in done and "(GAIR's choice)" in done
    client = admin.application.test_client()
    w = re.search(r'data-w="([0-9.]+)"', done).group(1)
    picked = client.get(f"/search?q=<aurora>+dress&w={w}", headers=HX).get_data(as_text=True)
    assert "your choice" in picked and 'data-state="done"' in picked and 'class="chosen' in picked


def test_deactivate_activate_retrain_and_delete(admin, res):
    assert post(admin, "/admin/concepts/aurora/deactivate").status_code == 303
    assert res.registry.get("<aurora>").active_version is None
    client = admin.application.test_client()
    assert "unknown custom token" in client.get("/search?q=<aurora>", headers=HX).get_data(as_text=True)
    assert fetch(client, "/concepts/aurora/thumb.png").status_code == 404  # inactive: admin only
    assert post(admin, "/admin/concepts/aurora/activate", {"version": "v0001"}).status_code == 303
    assert res.registry.get("<aurora>").active_version == "v0001"
    assert post(admin, "/admin/concepts/aurora/retrain", {"steps": "2"}).status_code == 303
    job = res.jobs.latest("train", "train:<aurora>")
    assert job.status == "queued" and job.params["config"] == {"steps": 2}
    assert post(admin, "/admin/concepts/aurora/cancel").status_code == 303
    assert res.jobs.get(job.id).status == "cancelled"
    r = post(admin, "/admin/concepts/aurora/delete", headers=HX)
    assert r.status_code == 204 and r.headers["HX-Redirect"] == "/admin/concepts"
    assert "<aurora>" not in res.registry
    assert admin.get("/admin/concepts/aurora").status_code == 404


def test_catalog_page_reindex_job_and_rejected_rows(admin, res):
    catalog = res.settings.catalog
    original = catalog.read_text()
    catalog.write_text(original + json.dumps({"id": "broken-1", "title": "Ghost", "image": "images/none.png"}) + "\n")
    try:
        page = admin.get("/admin/catalog").get_data(as_text=True)
        assert "No reindex job yet" in page and str(catalog) in page
        r = post(admin, "/admin/catalog/reindex", headers=HX)
        assert r.status_code == 200 and 'data-status="queued"' in r.get_data(as_text=True)
        job = res.make_worker().run_once(["reindex"])
        assert job.status == "done", job.error
        assert job.result["switched"] and job.result["ingest"]["rejected"] == 1
        fragment = admin.get(f"/admin/catalog/jobs/{job.id}", headers=HX).get_data(as_text=True)
        assert 'id="rejects"' in fragment and "broken-1" in fragment and "Search now uses" in fragment
        assert res.store.get_alias("products") == job.result["collection"]
        client = admin.application.test_client()
        assert client.get("/search?q=dress", headers=HX).status_code == 200  # search follows the new collection
    finally:
        catalog.write_text(original)


def test_jobs_page_lists_and_cancels(admin, res):
    job_id = res.jobs.submit("train", {"placeholder": "<ghost>", "config": {}})
    html = admin.get("/admin/jobs").get_data(as_text=True)
    assert f'data-job="{job_id}"' in html and "&lt;ghost&gt;" in html
    assert admin.get("/admin/jobs?kind=reindex", headers=HX).get_data(as_text=True).count("data-job=") >= 1
    r = post(admin, f"/admin/jobs/{job_id}/cancel")
    assert r.status_code == 303 and res.jobs.get(job_id).status == "cancelled"


def test_a_training_job_survives_a_restart_of_the_web_process(tmp_path):
    import time

    from web.jobs import JobStore

    first = create_app(tiny_settings(tmp_path))
    res = first.extensions["coinage"]
    res.registry.register("<phoenix>", "mug", [png_bytes(i) for i in range(3)], attributes=["red", "blue"],
                          num_vectors=1)
    job_id = res.jobs.submit("train", {"placeholder": "<phoenix>", "config": {"steps": 2}}, dedupe_key="train:<phoenix>")
    JobStore(res.settings.jobs_db, clock=lambda: time.time() - 3600).claim("killed-web-process")
    first.extensions["coinage"].close()  # the process "dies" with the job running

    second = create_app(tiny_settings(tmp_path, worker="thread"))  # the restart: its worker thread recovers the job
    try:
        jobs = second.extensions["coinage"].jobs
        deadline = time.monotonic() + 120
        while jobs.get(job_id).active and time.monotonic() < deadline:
            time.sleep(0.1)
        job = jobs.get(job_id)
        assert job.status == "done" and job.interruptions == 1 and job.attempts == 2, job.error
        assert second.extensions["coinage"].registry.get("<phoenix>").active_version == "v0001"
    finally:
        second.extensions["coinage"].close()


def test_concept_thumb_is_not_found_only_for_unknown_or_malformed_names(app, res, monkeypatch):
    from engine.database import DatabaseError

    client = app.test_client()
    assert fetch(client, "/concepts/nobody/thumb.png").status_code == 404
    assert fetch(client, "/concepts/Not%20A%20Name/thumb.png").status_code == 404

    def database_down(placeholder):
        raise DatabaseError("the concept database is unreachable; start PostgreSQL or check COINAGE_DATABASE_URL")

    monkeypatch.setattr(res.registry, "get", database_down)
    r = fetch(client, "/concepts/nobody/thumb.png")
    assert r.status_code == 503 and "concept database is unreachable" in r.get_data(as_text=True)
