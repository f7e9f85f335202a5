"""The merchandiser's pages in a real browser (Playwright, Debian's chromium): an admin adds a synonym and a pin
rule through the forms, a shopper's search shows the pinned product first and a click on a result reaches the
analytics page through the beacon, and the query tester shows both sides. Screenshots go to
test-artifacts/browser/merch-*.png."""
import os
import threading
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]
PASSWORD = "merch-browser-pw"
ARTIFACTS = Path(os.environ.get("COINAGE_TEST_ARTIFACTS", Path(__file__).resolve().parents[2] / "test-artifacts")) / "browser"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from werkzeug.serving import make_server

    from web import create_app
    from web.testing import build_catalog, tiny_settings

    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (`make browser`)")
    root = tmp_path_factory.mktemp("merch-browser")
    build_catalog(root, size=64)
    app = create_app(tiny_settings(root, password=PASSWORD))
    httpd = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}", app
    httpd.shutdown()
    app.extensions["coinage"].close()


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=30_000)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=CHROMIUM, args=ARGS, headless=True,
            viewport={"width": 1280, "height": 900}, device_scale_factor=1)
        context.set_default_timeout(60_000)
        yield context.new_page()
        context.close()


def live_concept(res, placeholder):
    """A concept with a live token (an imported one: seeded random vectors), for a rule's concept filter."""
    import torch

    from engine.tokens import CustomToken, TokenMeta, save_token

    torch.manual_seed(0)
    folder = res.settings.data_dir / "imports"
    folder.mkdir(exist_ok=True)
    token = save_token(CustomToken(placeholder, torch.randn(1, res.backbone.text_width),
                                   TokenMeta("dress", "tiny-random")), folder / "token.safetensors")
    res.registry.import_token(token, parent="dress", backbone_id="tiny-random", width=res.backbone.text_width)


def shot(page, name):
    page.screenshot(path=str(ARTIFACTS / f"merch-{name}.png"), full_page=True)


def test_an_admin_steers_search_and_sees_what_shoppers_do(server, page):
    from playwright.sync_api import expect

    base, app = server
    res = app.extensions["coinage"]
    live_concept(res, "<aurora>")
    page.goto(f"{base}/search?q=red+dress")
    cards = page.locator(".grid .card")
    expect(cards.first).to_be_visible()
    ranked = [cards.nth(i).get_attribute("data-product") for i in range(cards.count())]
    target = ranked[-1]

    page.goto(f"{base}/admin/login")
    page.fill("#user", "admin")
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.click("text=Merchandising")
    expect(page.locator("h1")).to_have_text("Rules")
    page.fill("#rule-form input[name=name]", "last one first")
    page.select_option("#rule-form select[name=match]", "contains")
    page.fill("#rule-form input[name=pattern]", "red dress")
    page.select_option("#rule-form select[name=action]", "pin")
    page.fill("#rule-form input[name=products]", target)
    page.fill("#rule-form input[name=position]", "1")
    page.click("#rule-form button[type=submit]")
    expect(page.locator("#rules tbody tr")).to_have_count(1)
    expect(page.locator("#rules")).to_contain_text(target)
    page.fill("#rule-form input[name=name]", "aurora first")  # boost a concept's products
    page.fill("#rule-form input[name=pattern]", "frock")
    page.select_option("#rule-form select[name=action]", "boost")
    page.fill("#rule-form input[name=products]", "")
    page.fill("#rule-form input[name=concept]", "<nova>")  # no such concept: the form says so
    page.fill("#rule-form input[name=amount]", "2")
    page.click("#rule-form button[type=submit]")
    expect(page.locator("#form-error")).to_contain_text("<nova> has no live token")
    page.fill("#rule-form input[name=concept]", "<aurora>")
    page.click("#rule-form button[type=submit]")
    expect(page.locator("#rules tbody tr")).to_have_count(2)
    expect(page.locator("#rules")).to_contain_text("products of <aurora>")
    shot(page, "rules")

    page.click("#merch-nav >> text=Synonyms")
    page.fill("#synonym-form input[name=text]", "frock => dress")
    page.click("#synonym-form button[type=submit]")
    expect(page.locator("#synonyms")).to_contain_text("frock => dress")
    page.fill("#synonym-form input[name=text]", "lonely")
    page.click("#synonym-form button[type=submit]")
    expect(page.locator("#form-error")).to_contain_text("at least two terms")
    shot(page, "synonyms")

    res.query.merch.invalidate()  # re-read now rather than within the second
    page.goto(f"{base}/search?q=red+dress")
    expect(page.locator(".grid .card").first).to_have_attribute("data-product", target)
    expect(page.locator("#merch-applied")).to_contain_text("last one first")  # the admin is told
    shot(page, "search-pinned")
    with page.expect_request(lambda r: r.url.endswith("/api/click")):
        page.locator(".grid .card").nth(1).click()
    deadline_ok = False
    for _ in range(50):  # the writer thread flushes every second
        res.analytics.flush()
        if res.analytics.store.report(0, 1e12).clicks:
            deadline_ok = True
            break
        page.wait_for_timeout(100)
    assert deadline_ok, "the click beacon never reached the analytics"

    page.goto(f"{base}/admin/analytics?days=7")
    expect(page.locator("#totals")).to_contain_text("searches")
    expect(page.locator("#chart rect:not([height='0.0'])").first).to_be_visible()  # today's bar
    expect(page.locator("#top")).to_contain_text("red dress")
    shot(page, "analytics")

    page.goto(f"{base}/admin/tester?q=frock")
    expect(page.locator("#tester .side")).to_have_count(2)
    expect(page.locator("#tester .side").first).to_contain_text("synonym “frock => dress”")
    expect(page.locator("#tester .side").first).to_contain_text("rule “aurora first”: boost")
    expect(page.locator("#tester .side").nth(1)).not_to_contain_text("aurora first")
    shot(page, "tester")
