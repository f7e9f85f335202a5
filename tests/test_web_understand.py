"""What shoppers type, in the web app: understood constraints as removable chips, the interpretation in the API
(and `understand=false`), suggestions as they type (/api/suggest, the search box's dropdown), zero results."""
from urllib.parse import parse_qs, urlparse

HX = {"HX-Request": "true"}


def _catalog(res):
    words = res.query.catalog.get()
    category = max(words.facets["category"], key=lambda c: words.facets["category"][c])
    return words, category


def _prices(body):
    return [p["payload"]["price"] for p in body["products"]]


def test_api_reads_a_price_phrase_and_can_be_told_not_to(client, res):
    _words, category = _catalog(res)
    everything = client.get(f"/api/search?q={category}&limit=50&preview=0").get_json()
    cut = sorted(_prices(everything))[len(everything["products"]) // 2]
    read = client.get(f"/api/search?q={category} under {cut:g}&limit=50&preview=0").get_json()
    assert read["products"] and max(_prices(read)) <= cut
    (c,) = [c for c in read["interpretation"]["constraints"] if c["kind"] == "price"]
    assert c["max_price"] == cut and c["key"] == "price" and read["interpretation"]["text"] == category
    off = client.get(f"/api/search?q={category} under {cut:g}&limit=50&preview=0&understand=false").get_json()
    assert off["interpretation"] is None and max(_prices(off)) > cut
    ignored = client.get(f"/api/search?q={category} under {cut:g}&limit=50&preview=0&ignore=price").get_json()
    assert max(_prices(ignored)) > cut and ignored["interpretation"]["ignored"] == ["price"]
    posted = client.post("/api/search", json={"query": f"{category} not {category}", "understand": True,
                                              "exclude": {"category": ["nothing-like-it"]}, "preview": False})
    assert posted.status_code == 200
    assert client.post("/api/search", json={"query": "x", "exclude": {"a b": ["c"]}}).status_code == 400


def test_the_page_shows_chips_and_removing_one_reruns_without_it(client, res):
    _words, category = _catalog(res)
    html = client.get(f"/search?q={category}+under+40+not+pink", headers=HX).get_data(as_text=True)
    assert 'id="chips"' in html and "price under 40" in html and "not pink" in html
    start = html.index('data-key="price"')
    href = html[html.index('href="', start) + 6:html.index('"', html.index('href="', start) + 6)].replace("&amp;", "&")
    assert parse_qs(urlparse(href).query)["ignore"] == ["price"]
    again = client.get(href, headers=HX).get_data(as_text=True)
    assert "price under 40" not in again and "not pink" in again


def test_zero_results_say_so_and_offer_relaxing_and_suggestions(client, res):
    _words, category = _catalog(res)
    html = client.get(f"/search?q={category}+under+1", headers=HX).get_data(as_text=True)
    assert 'id="zero-results"' in html and "No products match" in html
    assert "without “price under 1”" in html and "ignore=price" in html
    assert f'class="suggestion" href="/search?q={category}' in html


def test_suggest_api_and_dropdown(client, res):
    words, category = _catalog(res)
    body = client.get(f"/api/suggest?q={category[:3]}").get_json()
    first = [s for s in body["suggestions"] if s["text"] == category]
    assert first and first[0]["kind"] == "category" and first[0]["count"] == words.facets["category"][category]
    typo = category[:2] + category[3:]  # one letter dropped
    assert any(s["text"] == category for s in client.get(f"/api/suggest?q={typo}").get_json()["suggestions"])
    assert client.get("/api/suggest").status_code == 400
    assert client.get("/api/suggest?q=x&limit=0").status_code == 400
    html = client.get(f"/search/suggest?q={category[:3]}").get_data(as_text=True)
    assert f'data-query="{category}"' in html and 'data-kind="category"' in html


def test_the_preview_draws_the_understood_text(client, res):
    _words, category = _catalog(res)
    body = client.get(f"/api/search?q={category}+under+40").get_json()
    job = res.jobs.get(body["preview"]["job"])
    assert job.params["request"]["query"] == category  # not "<category> under 40"
