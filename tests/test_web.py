"""Shopper pages and operations routes on a tiny indexed catalog (tiny-random backbone): search, partials,
previews (job, polling fragment, strip, re-ranking, cancel), photo search, autocomplete, pagination, errors,
catalog images without path traversal, /healthz, /readyz, /metrics, security headers and the app factory."""
import re

import pytest
import torch

from web import create_app
from web.settings import AppSettings, SettingsError
from web.testing import png_bytes, tiny_settings

HX = {"HX-Request": "true"}


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def states(html):
    return re.findall(r'data-state="(\w+)"', html)


def fetch(client, url, **kw):
    """GET and close (file responses hold the file open until closed)."""
    r = client.get(url, **kw)
    r.get_data()
    r.close()
    return r


def run_previews(res):
    worker = res.make_worker()
    while worker.run_once(["preview"]) is not None:
        pass


def test_start_page_is_a_full_page_with_vendored_htmx_and_csrf_meta(client):
    r = client.get("/")
    html = r.get_data(as_text=True)
    assert r.status_code == 200 and "<!doctype html>" in html
    assert '/static/htmx-2.0.11.min.js' in html and 'name="csrf-token"' in html and "X-CSRF-Token" in html
    assert "Search the shop in your own words" in html and "Try:" in html and "striped dress" in html  # from the catalog
    assert fetch(client, "/static/htmx-2.0.11.min.js").status_code == 200


def test_text_search_shows_results_at_once_and_queues_a_preview(client, res):
    r = client.get("/search?q=red+dress")
    html = r.get_data(as_text=True)
    assert r.status_code == 200 and "<!doctype html>" in html
    # every product card: the query's matches and the related items after them (class "card related")
    assert html.count('<article class="card') == 6 and "/catalog/images/" in html
    assert states(html) == ["queued"] and "Cancel preview" in html and 'hx-trigger="load delay:500ms"' in html
    partial = client.get("/search?q=red+dress", headers=HX).get_data(as_text=True)
    assert "<!doctype html>" not in partial and 'class="search-layout"' in partial
    assert states(partial) == ["queued"]  # the same job: identical queries share one generation
    assert res.jobs.count("preview") == 1


def test_the_preview_job_the_page_queues_is_the_one_the_query_service_names(client, res):
    """The service owns what determines a preview; the page asks it (no key of its own)."""
    import web.search_state
    from engine.query import SearchRequest

    client.get("/search?q=blue+scarf", headers=HX)
    identity = res.query.preview_job(SearchRequest.from_json({"query": "blue   scarf"}))
    job = res.jobs.latest("preview", identity.key)
    assert job is not None and job.params == identity.params and job.dedupe_key == identity.key
    assert not hasattr(web.search_state, "preview_key")


def test_preview_fragment_fills_in_when_the_job_finishes(client, res):
    html = client.get("/search?q=striped+mug", headers=HX).get_data(as_text=True)
    poll = re.search(r'hx-get="(/search/preview/[^"]+)"', html).group(1).replace("&amp;", "&")
    assert states(client.get(poll, headers=HX).get_data(as_text=True)) == ["queued"]
    run_previews(res)
    done = client.get(poll, headers=HX).get_data(as_text=True)
    assert states(done) == ["done"] and "hx-trigger" not in done.split("</section>")[0]
    key = re.search(r'src="/previews/([0-9a-f]{32})\.png"', done).group(1)
    png = client.get(f"/previews/{key}.png")
    assert png.status_code == 200 and png.mimetype == "image/png" and png.data[:4] == b"\x89PNG"
    assert client.get("/previews/not-a-key.png").status_code == 404
    again = client.get("/search?q=striped+mug", headers=HX).get_data(as_text=True)
    assert states(again) == ["done"]  # a finished preview is reused at once


def test_cancel_a_preview(client, res):
    html = client.get("/search?q=green+lamp", headers=HX).get_data(as_text=True)
    job_id = re.search(r"/jobs/([0-9a-f]+)/cancel", html).group(1)
    token = client.get("/api/session").json["csrf_token"]
    r = client.post(f"/jobs/{job_id}/cancel", data={"q": "green lamp"}, headers={**HX, "X-CSRF-Token": token})
    assert r.status_code == 200 and states(r.get_data(as_text=True)) == ["cancelled"]
    assert res.jobs.get(job_id).status == "cancelled"
    again = client.get("/search?q=green+lamp", headers=HX).get_data(as_text=True)
    assert states(again) == ["queued"]  # searching again generates a new preview


def test_a_shared_preview_is_cancelled_for_one_shopper_until_the_last_one_cancels(app, res):
    alice, bob = app.test_client(), app.test_client()
    html = alice.get("/search?q=grey+teapot", headers=HX).get_data(as_text=True)
    job_id = re.search(r"/jobs/([0-9a-f]+)/cancel", html).group(1)
    assert re.search(r"/jobs/([0-9a-f]+)/cancel", bob.get("/search?q=grey+teapot", headers=HX)
                     .get_data(as_text=True)).group(1) == job_id  # identical queries share one job

    def cancel(client):
        token = client.get("/api/session").json["csrf_token"]
        return client.post(f"/jobs/{job_id}/cancel", data={"q": "grey teapot"}, headers={**HX, "X-CSRF-Token": token})

    first = cancel(alice).get_data(as_text=True)
    assert states(first) == ["cancelled"] and "1 other shopper still waits for it" in first
    assert res.jobs.get(job_id).status == "queued"  # bob's preview goes on
    assert states(bob.get("/search?q=grey+teapot", headers=HX).get_data(as_text=True)) == ["queued"]
    assert states(cancel(bob).get_data(as_text=True)) == ["cancelled"]
    assert res.jobs.get(job_id).status == "cancelled"  # the last one waiting cancelled it


def test_cancel_needs_csrf_and_only_cancels_previews(client, res):
    job_id = res.jobs.submit("train", {"placeholder": "<x>"})
    assert client.post(f"/jobs/{job_id}/cancel").status_code == 400  # no CSRF token
    token = client.get("/api/session").json["csrf_token"]
    r = client.post(f"/jobs/{job_id}/cancel", headers={"X-CSRF-Token": token})
    assert r.status_code == 403 and res.jobs.get(job_id).status == "queued"
    res.jobs.request_cancel(job_id)


def test_pagination_links_walk_the_ranking(client):
    first = client.get("/search?q=dress", headers=HX).get_data(as_text=True)
    nxt = re.search(r'href="(/search\?[^"]*page=2[^"]*)"', first).group(1).replace("&amp;", "&")
    second = client.get(nxt, headers=HX).get_data(as_text=True)
    assert "Results 7–12" in second and "Page 2" in second and "← Previous" in second
    ids = lambda html: re.findall(r'data-product="([^"]+)"', html)  # noqa: E731
    assert len(ids(second)) == 6


def test_filters_limit_category_and_price(client, res):
    html = client.get("/search?q=thing&category=mug&max_price=20", headers=HX).get_data(as_text=True)
    cards = re.findall(r'<span class="price">([0-9.,]+)</span><span>(\w[\w-]*)</span>', html)
    assert cards and all(cat == "mug" and float(price) <= 20 for price, cat in cards)


def test_related_items_follow_the_matches_under_a_divider_and_are_not_counted(client):
    # words that name no facet value ("striped" would count every striped product: engine.query.candidates)
    html = client.get("/search?q=nice+thing", headers=HX).get_data(as_text=True)
    cards = re.findall(r'<article class="card( related)?"', html)
    assert "related-divider" in html  # the random tiny catalog has a clear drop in scores within the first page
    related = [bool(c) for c in cards]
    assert related == sorted(related) and any(related) and html.count("related-divider") == 1
    count = int(re.search(r"Results 1–\d+: (?:about )?(\d+) products? matching", html).group(1))
    assert count == related.count(False) and "matching, then related items" in html


def test_one_card_per_product_facets_narrow_sort_by_price_and_correct_typos(client):
    html = client.get("/search?q=striped+thing", headers=HX).get_data(as_text=True)
    products = re.findall(r'data-product="([^"]+)"', html)
    assert products and len(products) == len(set(products))  # one card per product
    assert re.search(r"Results 1–\d+(?: of|:) (about )?\d+\s+products", html) and 'id="facets"' in html
    link = re.search(r'data-facet="category".*?href="(/search\?[^"]*category=(\w[\w-]*)[^"]*)"', html, re.S)
    url, category = link.group(1).replace("&amp;", "&"), link.group(2)
    narrowed = client.get(url, headers=HX).get_data(as_text=True)
    cards = re.findall(r'<span class="price">([0-9.,]+)</span><span>(\w[\w-]*)</span>', narrowed)
    assert cards and {c for _, c in cards} == {category} and f"{category} ×" in narrowed  # the active facet
    cheap = client.get("/search?q=striped+thing&sort=price_asc", headers=HX).get_data(as_text=True)
    prices = [float(p.replace(",", "")) for p, _ in re.findall(r'<span class="price">([0-9.,]+)</span><span>(\w[\w-]*)</span>', cheap)]
    assert prices == sorted(prices) and "<b>Price: low to high</b>" in cheap
    # a price order is no relevance order: the cards show no relevance score then (they do by relevance)
    assert 'title="relevance to the query"' in html and 'title="relevance to the query"' not in cheap
    typo = client.get("/search?q=strped+dres", headers=HX).get_data(as_text=True)
    assert 'id="correction"' in typo and "Showing results for <b>“striped dress”</b>" in typo
    as_typed = re.search(r'search instead for\s+<a href="([^"]+)"', typo).group(1).replace("&amp;", "&")
    assert "exact=1" in as_typed and 'id="correction"' not in client.get(as_typed, headers=HX).get_data(as_text=True)


@pytest.mark.parametrize("query,status,needle", [
    ("/search?q=", 400, "empty query"),
    ("/search?q=%20%20", 400, "empty query"),
    ("/search?q=dress&min_price=cheap", 400, "Min price must be a number"),
    ("/search?q=dress&min_price=50&max_price=10", 400, "swap them"),
    ("/search?q=dress&page=0", 400, "page must be a whole number"),
    ("/search?q=dress&page=" + "9" * 5000, 400, "page must be a whole number"),
    ("/search?q=dress&page=%C2%B2", 400, "page must be a whole number"),  # a unicode digit
    # the API's offset bound (QueryConfig.max_offset 10000), in pages of 6: page 1667 starts at offset 9996
    ("/search?q=dress&page=1668", 400, "past the deepest page served (1667: offsets up to 10000)"),
    ("/search?q=a+<broken", 400, "unbalanced"),
])
def test_bad_queries_get_a_clear_message(client, query, status, needle):
    r = client.get(query, headers=HX)
    assert r.status_code == status and needle in r.get_data(as_text=True)


def test_unknown_token_suggests_the_registered_ones(client, res, monkeypatch):
    from engine.tokens import CustomToken, TokenMeta, TokenSet

    meta = TokenMeta(parent="dress", backbone_id="tiny-random", attributes=["red", "old"])
    fake = TokenSet([CustomToken("<aurora>", torch.zeros(2, res.backbone.text_width), meta)])
    monkeypatch.setattr(res.query, "_tokens", lambda: fake)
    r = client.get("/search?q=<aurore>+dress", headers=HX)
    html = r.get_data(as_text=True)
    assert r.status_code == 400 and 'data-code="unknown_token"' in html and "Did you mean" in html
    assert "&lt;aurora&gt; dress" in html  # the corrected query, as a link


def test_search_by_photo_and_page_through_it(client):
    token = client.get("/api/session").json["csrf_token"]
    r = client.post("/search/photo", data={"photo": (__import__("io").BytesIO(png_bytes(3)), "me.png"),
                                           "csrf_token": token}, headers=HX, content_type="multipart/form-data")
    html = r.get_data(as_text=True)
    assert r.status_code == 200 and html.count('<article class="card') == 6 and "Products that look like your photo" in html
    url = r.headers["HX-Push-Url"]
    sha = re.search(r"photo=([0-9a-f]{64})", url).group(1)
    assert fetch(client, f"/search/photo/{sha}").status_code == 200
    assert client.get(f"/search?photo={sha}&page=2", headers=HX).status_code == 200
    assert client.get("/search?photo=" + "0" * 64, headers=HX).status_code == 404


def test_photo_search_checks_the_upload(client):
    token = client.get("/api/session").json["csrf_token"]
    io = __import__("io")
    r = client.post("/search/photo", data={"photo": (io.BytesIO(b"not an image"), "x.png"), "csrf_token": token},
                    headers=HX, content_type="multipart/form-data")
    assert r.status_code == 400 and "not an image" in r.get_data(as_text=True)
    r = client.post("/search/photo", data={"csrf_token": token}, headers=HX, content_type="multipart/form-data")
    assert r.status_code == 400 and "choose a photo" in r.get_data(as_text=True)


def test_autocomplete_lists_matching_live_tokens(client, res, monkeypatch):
    from engine.tokens import CustomToken, TokenMeta, TokenSet

    meta = TokenMeta(parent="dress", backbone_id="tiny-random")
    fake = TokenSet([CustomToken(p, torch.zeros(1, res.backbone.text_width), meta) for p in ("<aurora>", "<basil>")])
    monkeypatch.setattr(res, "tokens", lambda: fake)
    html = client.get("/search/suggest?q=red+<au").get_data(as_text=True)
    assert 'data-token="&lt;aurora&gt;"' in html and "basil" not in html
    assert "/concepts/aurora/thumb.png" in html
    assert "data-token" not in client.get("/search/suggest?q=red+dress").get_data(as_text=True)  # catalog ones only
    assert "No custom word starts with" in client.get("/search/suggest?q=<zz").get_data(as_text=True)


def test_a_concept_thumbnail_is_made_once_not_decoded_per_request(client, res, monkeypatch, tmp_path):
    import PIL.Image

    from engine.tokens import CustomToken, TokenMeta, save_token

    token = save_token(CustomToken("<thumbs>", torch.randn(1, res.backbone.text_width), TokenMeta("dress", "tiny-random")),
                       tmp_path / "thumbs.safetensors")
    res.registry.import_token(token, parent="dress", backbone_id="tiny-random", width=res.backbone.text_width)
    folder = res.registry.concept_dir("<thumbs>") / "images"
    (folder / "000.png").write_bytes(png_bytes(1, size=640))  # a large first photo
    opened = []
    real_open = PIL.Image.open
    monkeypatch.setattr(PIL.Image, "open", lambda *a, **kw: opened.append(a[0]) or real_open(*a, **kw))
    try:
        first, second = (fetch(client, "/concepts/thumbs/thumb.png") for _ in range(2))
        assert first.status_code == second.status_code == 200 and first.mimetype == "image/png"
        assert len(opened) == 1  # the second request reads the kept thumbnail
        with real_open(res.registry.thumbnail("<thumbs>", 96)) as im:
            assert max(im.size) == 96
    finally:
        res.registry.delete("<thumbs>")


def test_catalog_images_are_served_without_path_traversal(client):
    assert fetch(client, "/catalog/images/p0000/0.png").mimetype == "image/png"
    for bad in ("/catalog/../jobs.sqlite3", "/catalog/%2e%2e/jobs.sqlite3", "/catalog//etc/passwd",
                "/catalog/images/../../secret_key", "/catalog/catalog.jsonl", "/catalog/truth.jsonl"):
        assert fetch(client, bad, follow_redirects=True).status_code == 404, bad


def test_an_image_response_the_client_drops_leaves_no_open_file(client):
    """A browser that navigates away mid-image drops the connection; werkzeug's server can then skip closing the
    response, and a file it held was closed only by the garbage collector, with a ResourceWarning (an error here:
    the offline suite's browser test failed on one). Images are served from memory; conditional requests still
    work."""
    import gc
    import warnings

    for url in ("/catalog/images/p0000/0.png", "/catalog/images/p0001/1.png"):
        dropped = client.get(url, buffered=False)  # never read, never closed: what a dropped connection leaves
        assert dropped.status_code == 200 and dropped.mimetype == "image/png"
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            del dropped
            gc.collect()
        assert not [w for w in caught if issubclass(w.category, ResourceWarning)], url
    first = fetch(client, "/catalog/images/p0000/0.png")
    again = fetch(client, "/catalog/images/p0000/0.png", headers={"If-None-Match": first.headers["ETag"]})
    assert first.headers["ETag"] and again.status_code == 304
    ranged = fetch(client, "/catalog/images/p0000/0.png", headers={"Range": "bytes=0-7"})
    assert ranged.status_code == 206 and ranged.data == b"\x89PNG\r\n\x1a\n"


def test_catalog_route_refuses_symlinks_that_leave_the_catalog_folder(client, res, tmp_path):
    root = res.settings.catalog_root
    secret = tmp_path / "secret_key.png"  # an image name, so only the resolved location can refuse it
    secret.write_bytes(b"not for the public")
    outside = tmp_path / "unpublished"
    outside.mkdir()
    (outside / "0.png").write_bytes((root / "images" / "p0000" / "0.png").read_bytes())
    links = {"leak.png": secret, "images/leakdir": outside, "inside.png": root / "images" / "p0000" / "0.png",
             "rows.png": root / "catalog.jsonl", "loop.png": root / "loop.png"}
    for name, target in links.items():
        (root / name).symlink_to(target)
    try:
        for bad in ("/catalog/leak.png", "/catalog/images/leakdir/0.png", "/catalog/rows.png", "/catalog/images",
                    "/catalog/loop.png"):
            assert fetch(client, bad).status_code == 404, bad
        assert fetch(client, "/catalog/inside.png").mimetype == "image/png"  # a link within the folder is fine
    finally:
        for name in links:
            (root / name).unlink()


def test_health_readiness_and_metrics(client, res):
    assert client.get("/healthz").json == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json["ready"] and ready.json["checks"]["index"]["ok"]
    assert str(res.settings.data_dir) not in ready.get_data(as_text=True)  # public: no file paths
    client.get("/search?q=dress")
    assert client.get("/metrics").status_code == 401  # admin activity is not public
    token = client.get("/api/session").json["csrf_token"]
    client.post("/api/login", json={"user": "admin", "password": "secret-pw"}, headers={"X-CSRF-Token": token})
    metrics = client.get("/metrics")
    text = metrics.get_data(as_text=True)
    assert metrics.content_type.startswith("text/plain; version=0.0.4")
    assert 'coinage_http_request_duration_seconds_bucket{endpoint="search.search",le="+Inf",method="GET",status="2xx"}' in text
    assert re.search(r'coinage_jobs\{kind="preview",status="queued"\} \d+', text)
    assert "# TYPE coinage_generation_seconds histogram" in text and "coinage_index_ready 1" in text


def test_readyz_reports_a_stuck_worker_lane(client, res):
    """Issue 27 #2: the process answered and the database was reachable, so /readyz said ready with a dead lane."""
    import threading

    from web.jobs import Worker

    release = threading.Event()

    class Stalled:  # the job store of the lane, with claims that hang (a stalled database)
        def __getattr__(self, name):
            return getattr(res.jobs, name)

        def claim(self, worker, kinds):
            release.wait(10)

    worker = Worker(Stalled(), {"preview": lambda p, progress, cancel: p}, poll_s=0.02, stale_after_s=0.3,
                    heartbeat_s=0.05).start()
    res.worker = worker
    try:
        release.wait(0.5)
        r = client.get("/readyz")
        assert r.status_code == 503 and not r.json["checks"]["worker"]["ok"]
        assert "preview: stuck" in r.json["checks"]["worker"]["detail"]
        assert r.json["checks"]["worker"]["lanes"][0]["alive"]
    finally:
        release.set()
        worker.stop()
        res.worker = None
    assert client.get("/readyz").status_code == 200


def test_readyz_reports_a_missing_index_with_the_fix(tmp_path):
    app = create_app(tiny_settings(tmp_path))
    try:
        r = app.test_client().get("/readyz")
        assert r.status_code == 503 and not r.json["ready"] and "coinage demo" in r.json["checks"]["index"]["detail"]
        page = app.test_client().get("/search?q=dress")
        assert page.status_code == 503 and "coinage index" in page.get_data(as_text=True)
    finally:
        app.extensions["coinage"].close()


def test_security_headers_and_unknown_pages(client):
    r = client.get("/")
    assert r.headers["X-Frame-Options"] == "DENY" and "script-src 'self'" in r.headers["Content-Security-Policy"]
    missing = client.get("/no/such/page")
    assert missing.status_code == 404 and "There is no page at /no/such/page" in missing.get_data(as_text=True)


def test_production_refuses_to_start_without_credentials(tmp_path):
    with pytest.raises(SettingsError, match="COINAGE_ADMIN_PASSWORD_HASH.*COINAGE_SECRET_KEY"):
        AppSettings(env="production", data_dir=tmp_path)
    with pytest.raises(SettingsError, match="COINAGE_SECRET_KEY"):
        AppSettings.from_env({"COINAGE_ENV": "production", "COINAGE_ADMIN_PASSWORD_HASH": "pbkdf2:x"})


def test_dev_mode_generates_the_admin_password_once_and_stores_only_its_hash(tmp_path):
    from werkzeug.security import check_password_hash

    from web.security import admin_password_hash, secret_key

    settings = AppSettings(data_dir=tmp_path)
    shown = []
    first = admin_password_hash(settings, announce=shown.append)
    assert len(shown) == 1
    password = re.search(r"password: (\S+)", shown[0]).group(1)
    assert check_password_hash(first, password) and password not in (tmp_path / "admin.json").read_text()
    assert admin_password_hash(settings, announce=shown.append) == first and len(shown) == 1
    assert oct((tmp_path / "admin.json").stat().st_mode & 0o777) == "0o600"
    assert secret_key(settings) == secret_key(settings) and len(secret_key(settings)) == 64


def test_settings_from_env_read_every_variable(tmp_path):
    env = {"COINAGE_DATA_DIR": str(tmp_path), "COINAGE_BACKBONE": "tiny-random", "COINAGE_DEVICE": "cpu",
           "COINAGE_CATALOG": str(tmp_path / "c.jsonl"), "COINAGE_SECRET_KEY": "k" * 32,
           "COINAGE_ADMIN_USER": "boss", "COINAGE_ADMIN_PASSWORD_HASH": "h", "COINAGE_WORKER": "off",
           "COINAGE_COLLECTION": "shop", "COINAGE_PREVIEW_STEPS": "3", "COINAGE_TRAIN_STEPS": "7",
           "COINAGE_MAX_UPLOAD_MB": "2", "COINAGE_MAX_IMAGE_MB": "1", "COINAGE_MAX_IMAGE_PIXELS": "1000000",
           "COINAGE_ONNX": "0", "COINAGE_THREADS": "1", "COINAGE_ONNX_CACHE": str(tmp_path / "o"),
           "COINAGE_GAIR_RANKS": "1", "COINAGE_CONCEPT_PHOTO_WEIGHT": "0.5", "COINAGE_SORT_FLOOR": "z:1.5",
           "COINAGE_METRICS_TOKEN": "scrape"}
    s = AppSettings.from_env(env)
    assert (s.data_dir, s.backbone, s.device, s.admin.user, s.worker.mode) == (tmp_path, "tiny-random", "cpu", "boss", "off")
    assert s.store.path == str(tmp_path / "store") and s.query.preview_dir == str(tmp_path / "previews")
    assert (s.query.collection, s.query.steps, s.train.steps, s.query.text_runtime) == ("shop", 3, 7, "torch")
    assert (s.limits.max_request_bytes, s.limits.max_image_bytes, s.limits.max_image_pixels) == (2 << 20, 1 << 20, 10**6)
    assert s.threads == 1 and not s.onnx and s.onnx_cache == tmp_path / "o" and s.metrics_token == "scrape"
    assert s.query.gair_ranks and s.query.concept_photo_weight == 0.5 and s.query.sort_floor == "z:1.5"
    assert AppSettings.from_env({}).query.sort_floor == "gap"
    with pytest.raises(SettingsError, match="COINAGE_SORT_FLOOR.*gap, z:K, none"):
        AppSettings.from_env({"COINAGE_SORT_FLOOR": "tight"})
    assert not AppSettings.from_env({}).query.gair_ranks and AppSettings.from_env({}).query.concept_photo_weight == 1
    with pytest.raises(SettingsError, match="COINAGE_CONCEPT_PHOTO_WEIGHT"):
        AppSettings.from_env({"COINAGE_CONCEPT_PHOTO_WEIGHT": "-1"})
    with pytest.raises(SettingsError, match="COINAGE_WORKER"):
        AppSettings.from_env({"COINAGE_WORKER": "sometimes"})
    with pytest.raises(SettingsError, match="COINAGE_TRAIN_STEPS"):
        AppSettings.from_env({"COINAGE_TRAIN_STEPS": "many"})


def test_web_processes_of_a_worker_deployment_load_no_diffusion_yet_offer_previews(tmp_path, tiny):
    """COINAGE_WORKER=process: the web process loads the CLIP towers only (a real SD UNet is GBs per gunicorn
    worker); its searches still queue preview jobs, which `coinage worker` (diffusion loaded) runs."""
    from engine.query import SearchRequest
    from web.resources import Resources
    from web.search_state import ensure_preview

    web = Resources(tiny_settings(tmp_path / "web", worker="process"))
    try:
        assert not web.backbone.has_diffusion and web.backbone.diffusion_available
        assert web.backbone.clip is not None
        panel = ensure_preview(web, SearchRequest.from_json({"query": "red dress"}))
        assert panel.state == "queued" and web.jobs.count("preview") == 1
    finally:
        web.close()
    # the worker side of the same deployment loads the whole backbone
    worker = Resources(tiny_settings(tmp_path / "worker", worker="process"), with_diffusion=True)
    try:
        assert worker.backbone.has_diffusion
    finally:
        worker.close()
    # a backbone without any diffusion stack says so, loaded or not
    from engine.loading import Backbone

    assert not Backbone(tiny.config, tiny.clip, tiny.clip_cfg, tiny.preprocess_cfg).diffusion_available


def test_an_unsure_correction_is_a_did_you_mean_link_and_searches_as_typed(client):
    # "stpried": two edits from the catalog's "striped", but an English word is one edit away: only suggested
    html = client.get("/search?q=stpried+dress", headers=HX).get_data(as_text=True)
    link = re.search(r'id="did-you-mean">Did you mean <a href="([^"]+)"', html)
    assert link and "q=striped+dress" in link.group(1) and 'id="correction"' not in html
    assert "for <b>“stpried dress”</b>" in html  # searched as typed
    body = client.get("/api/search?q=stpried+dress").get_json()
    assert body["correction"]["suggestion"] == "striped dress" and body["correction"]["changes"] == []
