"""The query service's fast path on the tiny backbone, on both store backends: composition, filters, pages, images."""
import io
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from engine.errors import UnknownTokenError
from engine.query import IndexMismatch, IndexNotFound, QueryConfig, QueryError, QueryService, SearchRequest
from engine.store import Point, open_store, point_id
from engine.tokens import CustomToken, TokenMeta, TokenSet

QUERY = "<aurora> on a beach"
PROMPT = "<aurora> dress on a beach"
ATTRIBUTES = ["red", "old", "dark"]
# q(w) alone ranks here (the points below are exact q(w) vectors); the concept-photo fusion has its own tests
CONFIG = QueryConfig(text_runtime="torch", steps=2, concept_photo_weight=0)


def make_token(tiny, placeholder="<aurora>", seed=0):
    gen = torch.Generator().manual_seed(seed)
    meta = TokenMeta(parent="dress", backbone_id=tiny.id, attributes=ATTRIBUTES)
    return CustomToken(placeholder, torch.randn(2, tiny.text_width, generator=gen) * 0.02, meta)


def photo(seed=0):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def setup(tiny, tmp_path_factory, store_config):
    """The same query-service tests on both store backends (store_config: tests/conftest.py)."""
    tokens = TokenSet([make_token(tiny)])
    features = {"<aurora>": F.normalize(torch.randn(4, tiny.embed_dim, generator=torch.Generator().manual_seed(1)),
                                        dim=-1)}
    store = open_store(store_config(tmp_path_factory.mktemp("store")))
    store.create_collection("products-v1", dim=tiny.embed_dim,
                            payload_indexes={"category": "keyword", "price": "float", "color": "keyword"})
    service = QueryService(tiny, store, tokens, features, CONFIG)
    rng = np.random.default_rng(0)
    points = []
    for i in range(40):
        vec = rng.standard_normal(tiny.embed_dim).astype(np.float32)
        payload = {"sku": f"p{i:02d}", "product_id": f"p{i:02d}", "category": ["dress", "mug"][i % 2], "price": float(i),
                   "color": ["red", "blue", "green"][i % 3], "rating": i % 5}
        points.append(Point(point_id(payload["sku"]), vec, payload))
    q = service.composed_vectors(QUERY, [0.0, 1.0])
    targets = {"target-w0": q[0], "target-w1": q[1], "target-image": service.image_vector(photo())}
    for sku, vec in targets.items():
        points.append(Point(point_id(sku), vec.numpy(), {"sku": sku, "product_id": sku, "category": "dress", "price": 99.0,
                                                         "color": "gold", "rating": 5}))
    store.upsert("products-v1", points)
    store.set_alias("products", "products-v1")
    store.create_collection("narrow", dim=8)
    yield service, tokens, features
    store.close()


def skus(response):
    return [r.payload["sku"] for r in response.results]


def test_composition_endpoints_equal_the_plain_encodings(setup, encoder):
    service, tokens, _ = setup
    q = service.composed_vectors(QUERY, [0.0, 1.0])
    plain = encoder.encode([PROMPT], tokens.vectors()).pooled[0]
    attrs = encoder.encode([f"{a} dress on a beach" for a in ATTRIBUTES]).pooled
    torch.testing.assert_close(q[1], plain)
    torch.testing.assert_close(q[0], F.normalize(F.normalize(attrs, dim=-1).mean(0), dim=0))


def test_search_finds_the_composed_query_with_notes(setup):
    service, _, _ = setup
    response = service.search(SearchRequest(QUERY, gair=False, limit=3, retrieval="dense"))  # cosine scores
    assert skus(response)[0] == "target-w1" and response.results[0].score == pytest.approx(1.0, abs=1e-4)
    assert response.prompt == PROMPT and response.tokens == ["<aurora>"]
    assert response.weight == 1.0 and response.weight_source == "default"
    assert any("parent word 'dress'" in n for n in response.notes)
    assert set(response.timings_ms) >= {"parse", "encode", "search", "total"}
    body = json.loads(json.dumps(response.to_json()))
    assert body["results"][0]["payload"]["sku"] == "target-w1" and body["results"][0]["rank"] == 1


def test_fixed_weight(setup):
    service, _, _ = setup
    response = service.search(SearchRequest(QUERY, weight=0.0, limit=3))
    assert skus(response)[0] == "target-w0" and response.weight == 0.0 and response.weight_source == "request"


def test_filters_on_category_price_and_any_field(setup):
    service, _, _ = setup
    mugs = service.search(SearchRequest(QUERY, category="mug", limit=50))
    assert len(mugs.results) == 20 and {r.payload["category"] for r in mugs.results} == {"mug"}
    cheap = service.search(SearchRequest(QUERY, min_price=5, max_price=10, limit=50))
    assert sorted(r.payload["price"] for r in cheap.results) == [5.0, 6.0, 7.0, 8.0, 9.0, 10.0]
    blue_dresses = service.search(SearchRequest(QUERY, category=["dress"], filters={"color": "blue"}, limit=50))
    assert blue_dresses.results and all(r.payload["color"] == "blue" and r.payload["category"] == "dress"
                                        for r in blue_dresses.results)
    rated = service.search(SearchRequest(QUERY, ranges={"rating": (4, None)}, max_price=50, limit=50))
    assert len(rated.results) == 8 and all(r.payload["rating"] == 4 for r in rated.results)
    with pytest.raises(QueryError, match="filter on field .price. must be a string, a 64-bit integer"):
        service.search(SearchRequest(QUERY, filters={"price": 9.5}))


def test_pagination(setup):
    service, _, _ = setup
    whole = service.search(SearchRequest(QUERY, limit=10))
    first = service.search(SearchRequest(QUERY, limit=5))
    second = service.search(SearchRequest(QUERY, limit=5, offset=first.next_offset))
    assert first.next_offset == 5 and second.offset == 5
    assert skus(first) + skus(second) == skus(whole)
    assert [r.rank for r in second.results] == [6, 7, 8, 9, 10]
    last = service.search(SearchRequest(QUERY, limit=10, offset=40))
    assert len(last.results) == 3 and last.next_offset is None
    with pytest.raises(QueryError, match="'limit'"):
        service.search(SearchRequest(QUERY, limit=CONFIG.max_limit + 1))


def test_image_query_by_pil_and_by_upload_bytes(setup):
    service, _, _ = setup
    by_pil = service.search(SearchRequest(image=photo(), limit=3))
    buf = io.BytesIO()
    photo().save(buf, format="PNG")
    by_bytes = service.search(SearchRequest(image=buf.getvalue(), limit=3))
    for response in (by_pil, by_bytes):
        assert skus(response)[0] == "target-image" and response.results[0].score == pytest.approx(1.0, abs=1e-4)
        assert response.prompt is None and response.weight is None and response.weight_source == "none"
    both = service.search(SearchRequest("red dress", image=photo(), limit=3))
    assert any("image and the text" in n for n in both.notes)
    with pytest.raises(QueryError, match="could not read the uploaded image"):
        service.search(SearchRequest(image=b"not an image"))


def test_baselines(setup, encoder):
    service, _, features = setup
    text = service.text_only_vector(QUERY)
    torch.testing.assert_close(text, encoder.encode(["dress on a beach"]).pooled[0])
    mean_image = F.normalize(features["<aurora>"].mean(0), dim=0)
    torch.testing.assert_close(service.text_image_vector(QUERY), F.normalize(text + mean_image, dim=0))
    response = service.search(SearchRequest(QUERY, method="text-only", limit=1))
    assert response.weight is None and response.method == "text-only"
    assert service.search(SearchRequest(QUERY, method="text+image", limit=1)).results
    # fixed w: the score of a stored q(1) under the query q(0.5) is their cosine
    half, one = service.composed_vectors(QUERY, [0.5, 1.0])
    gold = service.search(SearchRequest(QUERY, weight=0.5, filters={"color": "gold"}, limit=3, retrieval="dense"))
    score = {r.payload["sku"]: r.score for r in gold.results}["target-w1"]
    assert score == pytest.approx(float(half @ one), abs=1e-4)


def test_text_image_baseline_needs_features(setup, tiny):
    service, tokens, _ = setup
    bare = QueryService(tiny, service.store, tokens, None, CONFIG)
    with pytest.raises(QueryError, match="training-image features"):
        bare.search(SearchRequest(QUERY, method="text+image"))


def test_plain_text_query(setup):
    service, _, _ = setup
    response = service.search(SearchRequest("a red dress", limit=2))
    assert response.tokens == [] and response.weight is None and len(response.results) == 2


def test_query_errors(setup, tiny):
    service, tokens, features = setup
    with pytest.raises(QueryError, match="empty query"):
        service.search(SearchRequest("  "))
    with pytest.raises(UnknownTokenError, match="Did you mean <aurora>"):
        service.search(SearchRequest("<aurra> dress"))
    with pytest.raises(IndexNotFound, match="coinage index"):
        QueryService(tiny, service.store, tokens, features, QueryConfig(text_runtime="torch", collection="nope")
                     ).search(SearchRequest("dress"))
    with pytest.raises(IndexMismatch, match="another backbone"):
        QueryService(tiny, service.store, tokens, features, QueryConfig(text_runtime="torch", collection="narrow")
                     ).search(SearchRequest("dress"))
    with pytest.raises(QueryError, match="SearchRequest"):
        service.search({"query": "dress"})


def test_tokens_provider_sees_tokens_registered_later(setup, tiny):
    service, tokens, features = setup
    live = TokenSet(list(tokens))
    fresh = QueryService(tiny, service.store, lambda: live, features, CONFIG)
    with pytest.raises(UnknownTokenError):
        fresh.search(SearchRequest("<nova> dress"))
    live.add(make_token(tiny, "<nova>", seed=3))
    assert fresh.search(SearchRequest("<nova> dress", limit=1)).tokens == ["<nova>"]
