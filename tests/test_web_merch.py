"""The merchandiser's side through the web app: a synonym added on one app instance changes what another serves
(one database: SQLite and PostgreSQL), pins sit at their position exactly once across pages, an expired rule stops
applying, what shaped the results is shown to the admin only, the click beacon refuses bad search ids without a 500,
and analytics are written off the request path, survive a restart and are pruned after the retention."""
import os
import time
from datetime import datetime, timedelta, timezone

import pytest

from engine.merch import Rule
from web import create_app
from web.testing import build_catalog, tiny_settings

PASSWORD = "merch-pw"
pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(autouse=True)
def clean(res):
    """Each test starts without synonyms or rules (the app is shared by the module)."""
    yield
    for s in res.merch.synonyms():
        res.merch.remove_synonym(s.id, "test")
    for r in res.merch.rules():
        res.merch.remove_rule(r.id, "test")
    res.query.merch.invalidate()


def fresh(res):
    """Re-read the synonyms and rules now (instead of waiting refresh_s)."""
    res.query.merch.invalidate()


def page_ids(client, query, limit, offset, **args):
    extra = "".join(f"&{k}={v}" for k, v in args.items())
    body = client.get(f"/api/search?q={query}&limit={limit}&offset={offset}&preview=0{extra}").json
    return [p["product_id"] for p in body["products"]], body


def every_product(client, query):
    """The whole list, page by page up to its end (no page past it: that would be a zero-result search)."""
    products, offset = [], 0
    while offset is not None:
        body = client.get(f"/api/search?q={query}&limit=6&offset={offset}&preview=0").json
        products += body["products"]
        offset = body["next_offset"]
    return products


def test_a_synonym_added_on_one_app_changes_the_results_of_another(tmp_path, database_url):
    roots = [tmp_path / "a", tmp_path / "b"]
    for root in roots:
        build_catalog(root)  # the same catalog, each its own embedded store (single-process)
    if database_url is None:  # SQLite: both apps' registry database is the same file
        (roots[0] / "concepts").mkdir()
        os.symlink(roots[0] / "concepts", roots[1] / "concepts")
    apps = [create_app(tiny_settings(root, password=PASSWORD, database_url=database_url)) for root in roots]
    try:
        first, second = (app.test_client() for app in apps)
        token = first.get("/api/session").json["csrf_token"]
        r = first.post("/api/login", json={"user": "admin", "password": PASSWORD}, headers={"X-CSRF-Token": token})
        first.environ_base["HTTP_X_CSRF_TOKEN"] = r.json["csrf_token"]
        before, _ = page_ids(second, "zzqx", 5, 0, retrieval="lexical")
        assert before == []  # no product has that word
        r = first.post("/api/synonyms", json={"text": "zzqx => dress"})
        assert r.status_code == 201 and r.json["kind"] == "oneway"
        deadline = time.monotonic() + 5  # the other process re-reads within refresh_s (1 s)
        after = []
        while not after and time.monotonic() < deadline:
            after, body = page_ids(second, "zzqx", 5, 0, retrieval="lexical")
            time.sleep(0.2)
        assert after and all(p["payload"]["category"] == "dress" for p in body["products"])
        assert "merch" not in body  # a shopper is not told
    finally:
        for app in apps:
            app.extensions["coinage"].close()


def test_a_pinned_product_sits_at_its_position_once_across_pages(client, admin, res):
    plain = [pid for offset in range(0, 24, 4) for pid in page_ids(client, "red+dress", 4, offset)[0]]
    deep = plain[13]
    r = admin.post("/api/rules", json={"name": "deep first", "match": "contains", "pattern": "red dress",
                                       "action": "pin", "products": [deep], "position": 2})
    assert r.status_code == 201
    fresh(res)
    pages = [page_ids(client, "red+dress", 4, offset) for offset in range(0, 24, 4)]
    shaped = [pid for ids, _ in pages for pid in ids]
    assert shaped.index(deep) == 1 and shaped.count(deep) == 1 and len(set(shaped)) == len(shaped)
    assert shaped == [plain[0], deep] + [p for p in plain[1:] if p != deep]  # nothing else lost or moved
    assert pages[0][1]["products"][1]["rank"] == 2
    admin_page = admin.get("/api/search?q=red+dress&limit=4&preview=0").json
    assert admin_page["merch"] == [{"kind": "rule", "id": r.json["id"], "name": "deep first", "action": "pin",
                                    "products": [deep]}]
    html = admin.get("/search?q=red+dress").get_data(as_text=True)
    assert "id=\"merch-applied\"" in html and "deep first" in html
    assert "merch-applied" not in client.get("/search?q=red+dress").get_data(as_text=True)


def test_boost_bury_and_hide_reshape_the_results(client, res):
    plain, _ = page_ids(client, "dress", 6, 0)
    res.merch.add_rule(Rule("mugs first", "exact", "dress", "boost", category="mug", amount=10.0), "test")
    res.merch.add_rule(Rule("hide top", "exact", "dress", "hide", products=(plain[0],)), "test")
    fresh(res)
    shaped, body = page_ids(client, "dress", 6, 0)
    categories = [p["payload"]["category"] for p in body["products"]]
    assert plain[0] not in shaped and categories[0] == "mug"
    assert categories == sorted(categories, key=lambda c: c != "mug")  # every mug ahead of the rest
    res.merch.add_rule(Rule("never", "exact", "blue dress", "hide", products=(plain[1],)), "test")
    fresh(res)
    assert plain[1] in page_ids(client, "dress", 6, 0)[0]  # an exact rule for another query does not apply


def test_the_rules_shape_the_one_candidate_list_and_a_pin_beyond_it_costs_one_store_query(client, res, monkeypatch):
    """The rules stage runs inside the request's one retrieval (between candidates.select and candidates.page): a
    search with rules makes the store queries the same search without them makes, plus one for a pinned product the
    candidate list does not reach (its photos, restricted to its id), not a second retrieval."""
    import dataclasses
    import json

    monkeypatch.setattr(res.query.retriever, "config", dataclasses.replace(res.query.config, candidate_window=8))
    queries = []
    real = res.store.query
    monkeypatch.setattr(res.store, "query", lambda *a, **kw: queries.append(a[1]) or real(*a, **kw))
    plain = [p["product_id"] for p in every_product(client, "red+dress")]
    queries.clear()
    matches = page_ids(client, "red+dress", 6, 0)[1]["facets"]["products"]
    one_search = len(queries)
    catalog = [json.loads(line)["product_id"] for line in res.settings.catalog.read_text().splitlines() if line]
    far = next(p for p in catalog if p not in plain)  # beyond the candidate list of 8 points a side
    res.merch.add_rule(Rule("far first", "contains", "red dress", "pin", products=(far,), position=1), "test")
    fresh(res)
    queries.clear()
    first, body = page_ids(client, "red+dress", 6, 0)
    assert len(queries) == one_search + 1 and queries[-1].filter.must["product_id"] == [far]
    assert first == [far] + plain[:5] and body["facets"]["products"] == matches + 1  # a match: it is pinned first
    shaped = [p["product_id"] for p in every_product(client, "red+dress")]
    assert shaped == [far] + plain  # once, and nothing else lost or moved


def test_boost_and_bury_by_a_concepts_products(client, admin, res, tmp_path):
    """A concept's products are the matches of a search for its placeholder alone; computed once per live version
    (and collection), and a concept without a live token is a clear 400 when a rule is written, and a rule the
    search skips (the admin is told) when it is deactivated later."""
    import torch

    from engine.tokens import CustomToken, TokenMeta, save_token

    rule = {"name": "aurora up", "match": "contains", "pattern": "dress", "action": "boost", "concept": "<aurora>",
            "amount": 5}
    r = admin.post("/api/rules", json=rule)
    assert r.status_code == 400 and r.json["error"]["code"] == "invalid_merch"
    assert "<aurora> has no live token" in r.json["error"]["message"] and res.merch.rules() == []
    bad = form_post(admin, "/admin/rules", **{k: str(v) for k, v in rule.items()})
    assert bad.status_code == 400 and "no live token" in bad.get_data(as_text=True)
    torch.manual_seed(0)
    token = save_token(CustomToken("<aurora>", torch.randn(1, res.backbone.text_width),
                                   TokenMeta("dress", "tiny-random")), tmp_path / "aurora.safetensors")
    res.registry.import_token(token, parent="dress", backbone_id="tiny-random", width=res.backbone.text_width)
    try:
        members = {p["product_id"] for p in every_product(client, "%3Caurora%3E") if not p["related"]}
        plain, body = page_ids(client, "red+dress", 24, 0)
        assert 0 < len(members & set(plain)) < len(plain)  # the test means something: some move, some do not
        matched = sum(not p["related"] for p in body["products"])
        assert admin.post("/api/rules", json=rule).status_code == 201
        fresh(res)
        boosted, body = page_ids(client, "red+dress", 24, 0)
        ahead = [p for p in plain if p in members]
        assert boosted == ahead + [p for p in plain if p not in members]  # every one ahead, in their own order
        assert all(not p["related"] for p in body["products"][:len(ahead)])  # boosted: matches of the query
        computed = res.query.merch.concepts.computed
        page_ids(client, "red+dress", 24, 0)
        assert res.query.merch.concepts.computed == computed  # cached for this version and collection
        res.merch.update_rule(res.merch.rules()[0].id, Rule.from_json({**rule, "action": "bury"}), "test")
        fresh(res)
        buried, body = page_ids(client, "red+dress", 24, 0)
        first = [p for p in plain[:matched] if p not in members]
        assert buried[:len(first)] == first  # the concept's products after the other matches
        assert set(buried[len(first):matched]) == set(plain[:matched]) & members
        res.registry.deactivate("<aurora>")
        r = admin.get("/api/search?q=red+dress&limit=24&preview=0")
        assert r.status_code == 200 and [p["product_id"] for p in r.json["products"]] == plain
        assert "no live token" in r.json["merch"][0]["skipped"]
        html = admin.get("/admin/tester?q=red+dress").get_data(as_text=True)
        assert "not applied: concept &lt;aurora&gt; has no live token" in html
    finally:
        res.registry.delete("<aurora>")


def test_an_expired_rule_stops_applying(client, res):
    plain, _ = page_ids(client, "red+dress", 4, 0)
    end = datetime.now(timezone.utc) + timedelta(hours=1)
    res.merch.add_rule(Rule("until", "contains", "red", "hide", products=(plain[0],), end=end.isoformat()), "test")
    fresh(res)
    assert plain[0] not in page_ids(client, "red+dress", 4, 0)[0]
    res.query.merch._now = lambda: end + timedelta(seconds=1)  # an hour later
    try:
        assert page_ids(client, "red+dress", 4, 0)[0] == plain
    finally:
        res.query.merch._now = lambda: datetime.now(timezone.utc)


def test_the_click_beacon_refuses_bad_search_ids_without_a_500(client, res):
    body = client.get("/api/search?q=red+dress&limit=3&preview=0").json
    sid, product = body["search_id"], body["products"][1]["product_id"]
    ok = client.post("/api/click", json={"search_id": sid, "product_id": product, "position": 2})
    assert ok.status_code == 204  # no CSRF token needed
    forged = sid[:-1] + ("0" if sid[-1] != "0" else "1")
    for bad in (forged, "nonsense", "", None, 12, ["x"], "a.b.c", "é.ü"):
        r = client.post("/api/click", json={"search_id": bad, "product_id": product, "position": 2})
        assert r.status_code == 404 and r.json["error"]["code"] == "search_not_found", bad
    for data in ({"search_id": sid, "product_id": "", "position": 1}, {"search_id": sid, "product_id": "p",
                                                                        "position": "2"}, [1, 2]):
        assert client.post("/api/click", json=data).status_code == 400
    assert client.post("/api/click", data="{not json", content_type="text/plain").status_code == 400
    res.analytics.flush()
    report = res.analytics.store.report(time.time() - 60, time.time() + 1)
    assert report.clicks >= 1 and report.mean_position is not None


def test_the_click_beacon_is_rate_limited(app, client):
    from limits import parse

    rates = app.extensions["coinage.ratelimits"]  # Flask-Limiter's storage, like the other limits (web/ratelimit.py)
    saved, rates._clicks = rates._clicks, parse("2 per minute")
    try:
        codes = [client.post("/api/click", json={"search_id": "x", "product_id": "p", "position": 1}).status_code
                 for _ in range(3)]
        assert codes == [404, 404, 429]
    finally:
        rates._clicks = saved
        rates.limiter.reset()


def test_analytics_survive_a_restart_and_are_pruned_after_the_retention(tmp_path):
    build_catalog(tmp_path)
    first = create_app(tiny_settings(tmp_path))
    client = first.test_client()
    body = client.get("/api/search?q=red+dress&limit=3&preview=0").json
    client.get("/api/search?q=zzqx&limit=3&preview=0&retrieval=lexical")
    client.post("/api/click", json={"search_id": body["search_id"], "product_id": body["products"][0]["product_id"],
                                    "position": 1})
    first.extensions["coinage"].close()  # flushes the queue: the process stops
    second = create_app(tiny_settings(tmp_path))
    try:
        recorder = second.extensions["coinage"].analytics
        report = recorder.store.report(time.time() - 3600, time.time() + 1)
        assert (report.searches, report.clicks, report.zero_results, report.ctr) == (2, 1, 1, 0.5)
        assert report.zero == [{"query": "zzqx", "searches": 1}]
        assert recorder.prune() == 0  # within the retention (90 days)
        recorder._clock = lambda: time.time() + 91 * 86400
        assert recorder.prune() == 3 and recorder.store.report(0, time.time() + 1).searches == 0
    finally:
        second.extensions["coinage"].close()


def test_a_database_outage_loses_analytics_never_a_search(client, res, caplog):
    from engine.database import PostgresDatabase

    real = res.analytics.store.db
    res.analytics.store.db = PostgresDatabase("postgresql://coinage@127.0.0.1:1/gone", "analytics")
    try:
        r = client.get("/api/search?q=red+dress&limit=3&preview=0")
        assert r.status_code == 200 and r.json["products"]
        assert res.analytics.flush() == 0 and "search analytics lost" in caplog.text
    finally:
        res.analytics.store.db = real


def test_synonyms_and_rules_need_the_admin(client, admin):
    assert client.get("/api/rules").status_code == 401
    assert client.post("/api/synonyms", json={"text": "a, b"}).status_code == 400  # no CSRF token, no session
    r = admin.post("/api/rules", json={"name": "x", "match": "contains", "pattern": "cup", "action": "boost"})
    assert r.status_code == 400 and "filter" in r.json["error"]["message"]
    assert admin.delete("/api/rules/999").status_code == 404 and admin.get("/api/rules/abc").status_code == 404
    added = admin.post("/api/synonyms", json={"terms": ["trainers", "sneakers"]}).json
    assert [s["text"] for s in admin.get("/api/synonyms").json["synonyms"]] == ["trainers, sneakers"]
    assert admin.delete(f"/api/synonyms/{added['id']}").json == {"removed": added["id"]}


# --- admin pages ------------------------------------------------------------------------------------------------


def form_post(client, url, **fields):
    token = client.environ_base["HTTP_X_CSRF_TOKEN"]
    return client.post(url, data={"csrf_token": token, **fields})


def test_the_admin_pages_add_toggle_and_remove_synonyms_and_rules(client, admin, res):
    assert client.get("/admin/rules").status_code == 302  # login first
    r = form_post(admin, "/admin/synonyms", text="cup => mug")
    assert r.status_code == 303 and [s.text for s in res.merch.synonyms()] == ["cup => mug"]
    page = admin.get("/admin/synonyms").get_data(as_text=True)
    assert "cup =&gt; mug" in page and 'id="audit"' in page and "admin" in page
    bad = form_post(admin, "/admin/synonyms", text="sneakers")
    assert bad.status_code == 400 and "at least two terms" in bad.get_data(as_text=True)
    r = form_post(admin, "/admin/rules", name="mugs", match="contains", pattern="cup", action="boost", category="mug",
                  amount="2", products="", position="")
    assert r.status_code == 303
    rule = res.merch.rules()[0]
    assert (rule.category, rule.amount, rule.enabled) == ("mug", 2.0, True)
    assert form_post(admin, f"/admin/rules/{rule.id}/toggle").status_code == 303 and not res.merch.rule(rule.id).enabled
    bad = form_post(admin, "/admin/rules", name="x", match="contains", pattern="cup", action="pin", position="two")
    assert bad.status_code == 400 and "must be an integer, got &#39;two&#39;" in bad.get_data(as_text=True)
    assert form_post(admin, f"/admin/rules/{rule.id}/remove").status_code == 303 and res.merch.rules() == []
    assert form_post(admin, "/admin/rules/999/remove").status_code == 404


def test_the_analytics_page_charts_the_period_and_exports_csv(client, admin, res):
    body = client.get("/api/search?q=red+dress&limit=3&preview=0").json
    client.get("/api/search?q=zzqx&limit=3&preview=0&retrieval=lexical")
    client.post("/api/click", json={"search_id": body["search_id"], "product_id": body["products"][2]["product_id"],
                                    "position": 3})
    res.analytics.flush()
    page = admin.get("/admin/analytics?days=7").get_data(as_text=True)
    assert '<svg id="chart"' in page and "<rect" in page and "zzqx" in page
    report = admin.get("/api/analytics?days=7").json
    assert report["zero"][0]["query"] == "zzqx" and report["clicks"] >= 1
    csv_text = admin.get("/admin/analytics.csv?days=7").get_data(as_text=True)
    assert csv_text.startswith("search_id,time,query") and body["search_id"] in csv_text
    assert admin.get("/admin/analytics?days=0").status_code == 400
    assert form_post(admin, "/admin/analytics/prune").status_code == 303


def test_the_query_tester_shows_results_with_and_without_the_rules(admin, client, res):
    plain, _ = page_ids(client, "red+dress", 6, 0)
    res.merch.add_rule(Rule("hide first", "contains", "red dress", "hide", products=(plain[0],)), "test")
    fresh(res)
    page = admin.get("/admin/tester?q=red+dress").get_data(as_text=True)
    with_rules, without = page.split('data-side="2"')
    assert "hide first" in with_rules and f'data-product="{plain[0]}"' not in with_rules
    assert f'data-product="{plain[0]}"' in without and "hide first" not in without


def test_analytics_can_be_switched_off_and_their_retention_set(tmp_path):
    from engine.merch.analytics import AnalyticsLog
    from web.analytics import Recorder
    from web.settings import AppSettings, SettingsError

    settings = AppSettings.from_env({"COINAGE_ANALYTICS": "0", "COINAGE_ANALYTICS_RETENTION_DAYS": "7"})
    assert (settings.merch.analytics, settings.merch.retention_days) == (False, 7.0)
    with pytest.raises(SettingsError, match="COINAGE_ANALYTICS_RETENTION_DAYS"):
        AppSettings.from_env({"COINAGE_ANALYTICS_RETENTION_DAYS": "-1"})
    recorder = Recorder(AnalyticsLog(tmp_path / "r.sqlite3"), "secret", settings.merch)
    search_id = recorder.search(None, None)  # off: nothing is read from the search, nothing queued
    assert recorder.valid(search_id) and recorder.flush() == 0
    recorder.click(search_id, "p1", 1)  # the beacon still answers
    assert recorder.flush() == 0 and recorder.store.report(0, 1e12).searches == 0
    recorder.close()
