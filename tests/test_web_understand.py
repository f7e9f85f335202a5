"""What shoppers type, in the web app: understood constraints as removable chips, the interpretation in the API
(and `understand=false`), suggestions as they type (/api/suggest, the search box's dropdown), zero results."""
import base64
from urllib.parse import parse_qs, urlparse

from web.testing import png_bytes

HX = {"HX-Request": "true"}
PASSWORD = "understand-pw"  # the admin fixture's (tests/conftest.py)


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


def test_suggest_offers_what_the_shops_synonyms_map_to(client, res):
    from engine.merch import Synonym

    words, category = _catalog(res)
    added = res.merch.add_synonym(Synonym.parse(f"trainers, {category}"), "test")
    res.query.merch.invalidate()
    try:
        body = client.get("/api/suggest?q=trainers").get_json()
        assert body["suggestions"][0] == {"text": category, "kind": "synonym", "query": category,
                                          "count": words.facets["category"][category]}
        html = client.get("/search/suggest?q=trai").get_data(as_text=True)
        assert f'data-query="{category}"' in html and 'data-kind="synonym"' in html
    finally:
        res.merch.remove_synonym(added.id, "test")
        res.query.merch.invalidate()
    assert all(s["kind"] != "synonym" for s in client.get("/api/suggest?q=trainers").get_json()["suggestions"])


def test_a_concept_named_like_a_product_id_shows_that_product_first_with_an_id_chip(client, res, monkeypatch):
    import torch

    from engine.tokens import CustomToken, TokenMeta, TokenSet

    words, _category = _catalog(res)
    pid = words.identifiers["product_id"][-1]
    meta = TokenMeta(parent="dress", backbone_id=res.query.backbone.id)
    token = CustomToken(f"<{pid}>", torch.randn(1, res.query.backbone.text_width) * 0.02, meta)
    monkeypatch.setattr(res.query, "_tokens", TokenSet([token]))  # as if the shop registered <pid>
    html = client.get(f"/search?q={pid}", headers=HX).get_data(as_text=True)
    assert f'data-key="concept:&lt;{pid}&gt;"' in html and 'data-key="id"' in html  # two chips
    assert html.index(f'data-product="{pid}"') < html.index('data-product="', html.index('data-product="') + 1)
    assert html.count("data-product=") > 1  # the concept ranks the rest: not filtered to the id


def _line_word(words):
    """A word of a product name that is no facet value (a product-line word, "aurora"), and a name holding it."""
    facet_words = {w.lower() for values in words.facets.values() for v in values for w in v.split()}
    name = next(n for n in sorted(words.names) if n.split()[0].lower() not in facet_words)
    return name.split()[0].lower(), name.split(" — ")[0]


def test_a_concept_named_by_a_catalog_word_keeps_the_products_named_with_it(client, res, monkeypatch):
    import torch

    from engine.tokens import CustomToken, TokenMeta, TokenSet

    word, name = _line_word(res.query.catalog.get())
    meta = TokenMeta(parent="dress", backbone_id=res.query.backbone.id)
    token = CustomToken(f"<{word}>", torch.randn(1, res.query.backbone.text_width) * 0.02, meta)
    monkeypatch.setattr(res.query, "_tokens", TokenSet([token]))  # as if the shop registered <word>
    body = client.get(f"/api/search?q={name}&limit=20&preview=0").get_json()
    assert body["tokens"] == [] and body["interpretation"]["text"] == name  # a product name typed: the words
    assert body["products"][0]["payload"]["title"].startswith(name)
    assert any(f"type <{word}> for the concept" in n for n in body["notes"])
    query = f"{word} on a beach"  # no product-name phrase: the concept, with its chip
    html = client.get(f"/search?q={query}", headers=HX).get_data(as_text=True)
    assert f'data-key="concept:&lt;{word}&gt;"' in html and "search the word instead" in html
    start = html.index(f'data-key="concept:&lt;{word}&gt;"')
    href = html[html.index('href="', start) + 6:html.index('"', html.index('href="', start) + 6)].replace("&amp;", "&")
    word_only = client.get("/api/" + href.lstrip("/") + "&preview=0").get_json()  # the chip: the word alone
    assert word_only["tokens"] == [] and word_only["interpretation"]["text"] == query
    concept = client.get(f"/api/search?q={query}&preview=0").get_json()
    assert concept["tokens"] == [f"<{word}>"]


def test_registering_a_concept_named_by_a_catalog_word_warns_what_shoppers_get(admin, res, one_thread):
    word, _name = _line_word(res.query.catalog.get())
    images = [base64.b64encode(png_bytes(i)).decode() for i in range(3)]
    for placeholder, warned in ((f"<{word}>", True), ("<zyxwordy>", False)):
        r = admin.post("/api/concepts", json={"placeholder": placeholder, "parent": "dress", "steps": 2,
                                              "attributes": ["red", "striped"], "images": images})
        try:
            assert r.status_code == 202, r.get_data(as_text=True)  # warned, not refused
            found = [w for w in r.json["warnings"] if "also a word of the catalog" in w]
            assert bool(found) == warned
            page = admin.get(f"/admin/concepts/{placeholder[1:-1]}").get_data(as_text=True)
            assert ("also a word of the catalog" in page) == warned
            if warned:
                assert f"shoppers typing {word} get the words alone when" in found[0]
                assert "product name(s) hold it" in found[0] and "concept_word_reading='name-word'" in found[0]
        finally:
            admin.delete(f"/api/concepts/{placeholder[1:-1]}")


def test_the_preview_draws_the_understood_text(client, res):
    _words, category = _catalog(res)
    body = client.get(f"/api/search?q={category}+under+40").get_json()
    job = res.jobs.get(body["preview"]["job"])
    assert job.params["request"]["query"] == category  # not "<category> under 40"
