"""The app in a real browser (Playwright driving Debian's chromium, `make browser` installs it): a shopper's
search with results first and the preview filling in, and an admin who logs in, registers a concept from
photos, watches it train and finds products with the new word. Screenshots go to test-artifacts/browser/."""
import json
import os
import re
import threading
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]
PASSWORD = "browser-pw"
ARTIFACTS = Path(os.environ.get("COINAGE_TEST_ARTIFACTS", Path(__file__).resolve().parents[2] / "test-artifacts")) / "browser"
TIMEOUT_MS = 60_000

# Records every state the preview panel shows, so the test can see "queued/running" before "done".
WATCH_PREVIEW = """
window.__previewStates = [];
new MutationObserver(() => {
  const el = document.getElementById('preview');
  const state = el && el.getAttribute('data-state');
  const seen = window.__previewStates;
  if (state && seen[seen.length - 1] !== state) seen.push(state);
}).observe(document, {subtree: true, childList: true, attributes: true, attributeFilter: ['data-state']});
"""

# True once every image matching the selector (at least one) has loaded (a broken image has naturalWidth 0).
LOADED = "sel => { const els = [...document.querySelectorAll(sel)]; " \
         "return els.length > 0 && els.every(i => i.complete && i.naturalWidth > 0); }"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    import torch
    from werkzeug.serving import make_server

    from web import create_app
    from web.testing import build_catalog, tiny_settings

    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (`make browser`, or "
                    "`apt-get update && apt-get install -y chromium`)")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    cwd = tmp_path_factory.mktemp("browser")
    root = cwd / "var"
    # the demo backbone (world/backbone/), so rankings, previews and the trained token mean something
    build_catalog(root, backbone="world", size=64)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(cwd)  # as README's `make demo` runs: the default relative data dir `var` in the working directory
        app = create_app(tiny_settings(Path("var"), password=PASSWORD, worker="thread", backbone="world"))
        httpd = make_server("127.0.0.1", 0, app, threaded=True)
        thread = threading.Thread(target=httpd.serve_forever, daemon=True)
        thread.start()
        yield f"http://127.0.0.1:{httpd.server_port}", app, root
        httpd.shutdown()
        app.extensions["coinage"].close()
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def browser_context(tmp_path_factory):
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=30_000)  # the machine is shared: give slow steps time, fail on real hangs
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=CHROMIUM, args=ARGS, headless=True,
            viewport={"width": 1280, "height": 860}, device_scale_factor=1)
        context.set_default_timeout(TIMEOUT_MS)
        context.add_init_script(WATCH_PREVIEW)
        yield context
        context.close()


@pytest.fixture
def page(browser_context):
    page = browser_context.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" and not _expected(m.text) else None)
    yield page
    page.close()
    errors = _unexplained(errors)
    assert not errors, f"browser console errors: {errors}"


def _expected(message: str) -> bool:
    """A 400 answer (a bad query shown to the user) is logged by the browser; it is not a page error."""
    return message.startswith("Failed to load resource: the server responded with a status of 400")


def _unexplained(errors: list[str]) -> list[str]:
    """The errors left once aborted polls are set aside: htmx logs `htmx:sendAbort` and then that request's
    `htmx:afterRequest` as errors when the page navigates or closes while a preview poll is in flight. A
    failed response still shows (`htmx:responseError`, "Failed to load resource")."""
    if not any(m.startswith("htmx:sendAbort") for m in errors):
        return errors
    return [m for m in errors if not m.startswith(("htmx:sendAbort", "htmx:afterRequest"))]


def shot(page, name):
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def test_search_shows_results_first_then_the_preview(server, page):
    from playwright.sync_api import expect

    base, app, root = server
    page.goto(base + "/")
    expect(page.locator("h2", has_text="Search the shop in your own words")).to_be_visible()
    shot(page, "search-start")

    page.fill("#q", "red dress")
    page.press("#q", "Enter")
    expect(page.locator(".card")).to_have_count(6)
    categories = page.locator(".card .price + span").all_inner_texts()
    assert categories.count("dress") >= 3, categories  # the demo backbone reads the words
    expect(page.locator("#preview[data-state=done]")).to_be_visible()
    states = page.evaluate("window.__previewStates")
    assert states[0] in ("queued", "running") and states[-1] == "done", states
    assert page.url.endswith("/search?q=red+dress")
    expect(page.locator("#preview-image")).to_be_visible()
    assert page.eval_on_selector("#preview-image", "img => img.naturalWidth") > 0
    shot(page, "search-results-preview")

    page.click("text=Next →")
    expect(page.locator(".pager")).to_contain_text("Page 2")
    expect(page.locator(".card")).to_have_count(6)

    page.fill("#q", "<nope> dress")
    page.press("#q", "Enter")
    expect(page.locator("[data-code=unknown_token]")).to_contain_text("unknown custom token")
    shot(page, "search-unknown-token")

    photo = next((root / "world" / "images").glob("*/0.png"))
    page.set_input_files("#photo", str(photo))
    page.click("#photo-form button[type=submit]")
    expect(page.locator(".photo-query")).to_be_visible()
    expect(page.locator(".card")).to_have_count(6)
    page.wait_for_function(LOADED, arg=".photo-query img")  # the thumbnail of the uploaded photo
    shot(page, "search-by-photo")


def test_shopper_search_names_products_groups_facets_and_corrects_typos(server, page):
    from playwright.sync_api import expect

    base, app, root = server
    rows = [json.loads(line) for line in (root / "world" / "catalog.jsonl").read_text().splitlines()]
    titles = {}
    for r in rows:
        titles.setdefault(r["title"], set()).add(r["product_id"])
    title, owners = next((t, o) for t, o in sorted(titles.items()) if len(o) == 1)  # a name only one product has
    page.goto(base + "/")
    page.fill("#q", title)
    page.press("#q", "Enter")
    expect(page.locator("#result-count")).to_contain_text("Results 1–")
    products = page.locator(".card").evaluate_all("cards => cards.map(c => c.dataset.product)")
    assert products[0] in owners, (title, products)  # the product's own name finds it first
    assert len(products) == len(set(products))  # one card per product
    shot(page, "search-product-name")

    page.fill("#q", "dotted thing")
    page.press("#q", "Enter")
    expect(page.locator("#facets")).to_be_visible()
    colour = page.locator('[data-facet="colour"] a').first
    # the new page's facets, not the previous search's (htmx swaps the results in when they arrive)
    expect(colour).to_have_attribute("href", re.compile(r"q=dotted\+thing"))
    before = page.locator("#result-count").inner_text()
    value = colour.get_attribute("data-value")
    colour.click()
    expect(page.locator('[data-facet="colour"] a.active')).to_contain_text(value)
    assert f"colour={value}" in page.url
    assert page.locator("#result-count").inner_text() != before  # fewer products match
    shot(page, "search-facets")

    page.fill("#q", "striped dress")
    page.press("#q", "Enter")
    # this search's page, not the previous one's (a click on the old page's sort link is undone by the swap)
    expect(page.locator("#result-count")).to_contain_text("striped dress")
    page.click('nav.sort a:text("Price: low to high")')
    expect(page.locator(".notes")).to_contain_text("sorted by price: the")
    assert "sort=price_asc" in page.url
    prices = [float(p.replace(",", "")) for p in page.locator(".card .price").all_inner_texts()]
    categories = set(page.locator(".card .price + span").all_inner_texts())
    assert prices and prices == sorted(prices) and categories == {"dress"}, (prices, categories)  # matches only
    kept = re.search(r"the (\d+) best-matching", page.locator(".notes").inner_text()).group(1)
    expect(page.locator("#result-count")).to_contain_text(f"of {kept}")  # the count is the list's
    shot(page, "search-sorted-by-price")

    page.fill("#q", "strped dres")
    page.press("#q", "Enter")
    expect(page.locator("#correction")).to_contain_text("Showing results for “striped dress”")
    page.click("#correction a")
    expect(page.locator("#correction")).to_have_count(0)
    assert "exact=1" in page.url
    page.go_back()
    expect(page.locator("#correction")).to_be_visible()
    shot(page, "search-typo-corrected")


def test_admin_registers_a_concept_watches_training_and_searches_with_it(server, page):
    from playwright.sync_api import expect

    base, app, root = server
    page.goto(base + "/admin")
    expect(page.locator("h1")).to_have_text("Admin login")
    shot(page, "admin-login")
    page.fill("#user", "admin")
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    expect(page.locator("h1")).to_have_text("Concepts")

    page.click("text=Register a concept")
    product = sorted((root / "world" / "images").iterdir())[6]  # a held-out product of the tiny world
    photos = [str(p) for p in sorted(product.glob("*.png"))[:4]]
    rows = [json.loads(line) for line in (root / "world" / "catalog.jsonl").read_text().splitlines()]
    parent = next(r["category"] for r in rows if r["product_id"] == product.name)
    page.fill("#placeholder", "aurora")
    page.fill("#parent", parent)
    page.set_input_files("#images", photos[:2])
    expect(page.locator("#images-problems")).to_contain_text("Choose 3 to 50 images")  # checked in the browser
    page.set_input_files("#images", photos)
    expect(page.locator("#images-problems")).to_be_hidden()
    expect(page.locator("#images-picked img")).to_have_count(4)
    expect(page.locator("#attribute-note")).to_contain_text("Suggested from your images")
    assert len(page.input_value("#attributes").split(",")) == 12
    page.fill("#num_vectors", "2")
    page.fill("#steps", "150")  # long enough (tens of seconds) that a poll sees it running, even on a loaded machine
    shot(page, "admin-register-concept")
    page.click("text=Register and train")

    expect(page.locator("h1")).to_contain_text("<aurora>")
    expect(page.locator("#training[data-status=running] #loss-terms")).to_be_visible()  # live loss terms, ETA
    expect(page.locator("#training")).to_contain_text("left")
    shot(page, "admin-concept-training")
    expect(page.locator("#training-done")).to_be_visible(timeout=90_000)
    expect(page.locator("#samples")).to_be_visible()
    page.wait_for_function(LOADED, arg=".thumbs img, #samples")  # the concept's photos and sample generations
    expect(page.locator("#live-version")).to_have_text("v0001")
    expect(page.locator("svg.curve")).to_be_visible()
    shot(page, "admin-concept-trained")

    page.goto(base + "/admin/concepts")
    expect(page.locator("tr[data-concept=aurora]")).to_contain_text("ready")
    shot(page, "admin-concepts")

    page.goto(base + "/")
    page.type("#q", "<au")
    expect(page.locator("#suggestions [data-token='<aurora>']")).to_be_visible()
    shot(page, "search-autocomplete")
    page.click("#suggestions [data-token='<aurora>']")
    assert page.input_value("#q") == "<aurora> "
    page.type("#q", parent)
    page.press("#q", "Enter")
    expect(page.locator(".card")).to_have_count(6)
    # the new word finds the product it was taught (its other catalog photos included)
    expect(page.locator(f".card[data-product='{product.name}']").first).to_be_visible()
    expect(page.locator("#preview[data-state=done]")).to_be_visible()
    expect(page.locator("#preview-strip a")).to_have_count(3)
    # by default GAIR explains (its pick starred in the strip) and w = 1 with the concept's photos ranks
    expect(page.locator("#weight-by")).to_contain_text("GAIR's pick")
    expect(page.locator("#preview-strip a.best")).to_have_count(1)
    expect(page.locator("#ranked-with")).to_contain_text("(default)")
    expect(page.locator("#concept-photos")).to_be_visible()
    shot(page, "search-token-gair")
    page.click("#preview-strip a[data-w='0.5']")
    expect(page.locator("#ranked-with")).to_contain_text("your choice")
    assert "w=0.5" in page.url

    page.goto(base + "/admin/catalog")
    page.click("#reindex-button")
    expect(page.locator("#reindex-status")).to_have_text("done", timeout=90_000)
    expect(page.locator("#reindex")).to_contain_text("Search now uses")
    shot(page, "admin-catalog")
    page.goto(base + "/admin/jobs")
    expect(page.locator("#jobs-table")).to_contain_text("reindex")
    shot(page, "admin-jobs")



def test_shopper_types_prices_negations_and_picks_a_suggestion(server, page):
    from playwright.sync_api import expect

    base, app, root = server
    page.goto(base + "/")
    page.locator("#q").press_sequentially("dre", delay=60)
    option = page.locator('#suggestions [data-query="dress"]')
    expect(option).to_be_visible()
    expect(option).to_contain_text("category")
    shot(page, "suggest-dropdown")
    page.press("#q", "ArrowDown")
    expect(page.locator("#suggestions .item.active")).to_have_count(1)
    chosen = page.locator("#suggestions .item.active").get_attribute("data-query")
    page.press("#q", "Enter")
    expect(page.locator("#result-count")).to_contain_text("Results 1–")
    assert page.input_value("#q") == chosen and "q=" + chosen.replace(" ", "+") in page.url
    expect(page.locator("#suggestions .item")).to_have_count(0)
    page.press("#q", "Escape")

    page.fill("#q", "dress under 60 not pink")
    page.press("#q", "Enter")
    expect(page.locator("#chips")).to_contain_text("price under 60")
    expect(page.locator("#chips")).to_contain_text("not pink")
    prices = [float(p.replace(",", "")) for p in page.locator(".card .price").all_inner_texts()]
    assert prices and max(prices) <= 60, prices
    shot(page, "search-chips")
    page.click('#chips [data-key="price"] .remove')
    expect(page.locator("#chips")).not_to_contain_text("price under 60")
    expect(page.locator("#chips")).to_contain_text("not pink")
    assert "ignore=price" in page.url

    page.fill("#q", "dress under 1")
    page.press("#q", "Enter")
    expect(page.locator("#zero-results")).to_contain_text("No products match")
    expect(page.locator("#zero-results a.relax")).to_contain_text("without “price under 1”")
    shot(page, "search-zero-results")
    page.click("#zero-results a.relax")
    expect(page.locator("#result-count")).to_contain_text("Results 1–")

    # a product id typed as is: that product first, said in a chip; a word the catalog lacks entirely is searched
    # as its suggestion, said above the results with a link back to the words as typed
    rows = [json.loads(line) for line in (root / "world" / "catalog.jsonl").read_text().splitlines()]
    wanted = rows[len(rows) // 2]["product_id"]
    page.fill("#q", wanted)
    page.press("#q", "Enter")
    expect(page.locator('#chips [data-key="id"]')).to_contain_text(wanted)
    assert page.locator(".card").first.get_attribute("data-product") == wanted
    shot(page, "search-product-id")
    page.fill("#q", "desss")
    page.press("#q", "Enter")
    expect(page.locator("#correction")).to_contain_text("Showing results for “dress”")
    categories = set(page.locator(".card .price + span").all_inner_texts())
    assert "dress" in categories, categories
    shot(page, "search-no-catalog-word")
