"""GAIR and previews: a case with a known answer (fake generator and image features), caches, cancellation,
and the real batched generation of the tiny backbone."""
import dataclasses
import io
import threading

import numpy as np
import pytest
import torch
from PIL import Image

from engine.diffusion import GenerationCancelled
from engine.query import PreviewUnavailable, QueryConfig, QueryError, QueryService, SearchRequest
from engine.store import Point, StoreConfig, open_store, point_id
from engine.tokens import CustomToken, TokenMeta, TokenSet

QUERY = "<aurora> on a beach"
WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)
# Candidate I_w sits at angle theta_w between the context direction (0) and the object direction (pi/2):
# context score cos(theta), object score sin(theta); min is largest at theta = 0.8, i.e. w = 0.75.
ANGLES = [0.1, 0.3, 0.6, 0.8, 1.5]
STEPS = 3
# GAIR's w* ranks (the paper's method; the product default only shows it, see the gair_ranks tests)
CONFIG = QueryConfig(text_runtime="torch", steps=STEPS, weights=WEIGHTS, gair_ranks=True)


class FakeDiffusion:
    """A generator whose image j is filled with 0.2 * j (context images: 1.0), and features that decode that."""

    def __init__(self, dim, context_seed):
        self.dim = dim
        self.context_seed = context_seed
        self.calls = []  # (batch size, seed)

    def generate(self, cond, seed, progress, cancel):
        self.calls.append((cond.shape[0], seed))
        for i in range(STEPS):
            if cancel is not None and cancel.is_set():
                raise GenerationCancelled(f"cancelled at step {i}")
            if progress is not None:
                progress(i + 1, STEPS)
        values = torch.ones(1) if seed == self.context_seed else torch.arange(cond.shape[0]) * 0.2
        return values.view(-1, 1, 1, 1).expand(-1, 3, 4, 4).clone()

    def features(self, images):
        out = torch.zeros(images.shape[0], self.dim)
        for n, value in enumerate(images.mean(dim=(1, 2, 3)).tolist()):
            if value > 0.99:
                out[n, 1] = 1.0  # context direction
            else:
                theta = ANGLES[round(value / 0.2)]
                out[n, 0], out[n, 1] = np.sin(theta), np.cos(theta)
        return out


def make_tokens(tiny):
    meta = TokenMeta(parent="dress", backbone_id=tiny.id, attributes=["red", "old", "dark"])
    return TokenSet([CustomToken("<aurora>", torch.randn(2, tiny.text_width,
                                                        generator=torch.Generator().manual_seed(0)) * 0.02, meta)])


@pytest.fixture(scope="module")
def store(tiny):
    store = open_store(StoreConfig(backend="server", url=":memory:"))
    store.create_collection("products", dim=tiny.embed_dim)
    rng = np.random.default_rng(0)
    store.upsert("products", [Point(point_id(f"p{i}"), rng.standard_normal(tiny.embed_dim).astype(np.float32),
                                    {"sku": f"p{i}", "category": "dress"}) for i in range(30)])
    yield store
    store.close()


@pytest.fixture
def object_features(tiny):
    x = torch.zeros(2, tiny.embed_dim)
    x[:, 0] = 1.0  # the concept's training images: the object direction
    return {"<aurora>": x}


def fake_service(tiny, store, object_features, config=CONFIG, fake=None):
    fake = fake or FakeDiffusion(tiny.embed_dim, config.seed + config.context_seed_offset)
    service = QueryService(tiny, store, make_tokens(tiny), object_features, config,
                           generator=fake.generate, image_features=fake.features)
    return service, fake


def test_gair_picks_the_weight_with_the_best_min_score(tiny, store, object_features):
    service, fake = fake_service(tiny, store, object_features)
    result = service.gair(SearchRequest(QUERY, limit=3))
    assert result.w_star == 0.75 and not result.outcome.cached
    assert fake.calls == [(1, CONFIG.seed + CONFIG.context_seed_offset), (5, CONFIG.seed)]  # x_c, then ONE batch
    expect = [min(np.sin(t), np.cos(t)) for t in ANGLES]
    assert [s.w for s in result.scores] == list(WEIGHTS)
    assert [s.score for s in result.scores] == pytest.approx(expect, abs=1e-6)
    assert [s.object_score for s in result.scores] == pytest.approx(np.sin(ANGLES), abs=1e-6)
    assert [s.context_score for s in result.scores] == pytest.approx(np.cos(ANGLES), abs=1e-6)
    # results are those of q_pool(w*), and the preview shows I_w* (filled with 0.2 * 3)
    assert result.response.weight == 0.75 and result.response.weight_source == "gair"
    direct = service.search(SearchRequest(QUERY, weight=0.75, limit=3))
    assert [r.id for r in result.response.results] == [r.id for r in direct.results]
    image = np.asarray(Image.open(io.BytesIO(result.preview.png)))
    assert image.shape == (4, 4, 3) and np.all(image == round(0.6 * 255))
    assert result.preview.w == 0.75 and len(result.previews) == 5
    assert set(result.timings_ms) >= {"text", "context_generation", "generation", "scoring", "search", "total"}
    body = result.to_json(include_png=True)
    assert body["w_star"] == 0.75 and body["preview"]["key"] == result.preview.key and body["preview"]["png_base64"]


def test_second_call_hits_the_cache_and_search_uses_the_cached_w(tiny, store, object_features):
    service, fake = fake_service(tiny, store, object_features)
    request = SearchRequest(QUERY, limit=3)
    first = service.gair(request)
    second = service.gair(request)
    assert len(fake.calls) == 2 and second.outcome.cached and second.w_star == first.w_star
    assert second.preview.png == first.preview.png and second.preview.key == first.preview.key
    fast = service.search(request)
    assert fast.weight == 0.75 and fast.weight_source == "gair-cache"
    preview = service.preview(request)
    assert preview.key == first.preview.key and len(fake.calls) == 2
    assert service.preview_png(first.preview.key) == first.preview.png
    # another seed is another query: generated afresh, context included
    service.gair(SearchRequest(QUERY, seed=5))
    assert len(fake.calls) == 4


def test_context_images_are_generated_once(tiny, store, object_features):
    service, fake = fake_service(tiny, store, object_features)
    service.gair(SearchRequest(QUERY))
    service.cache.clear_memory()  # the outcome is gone, the context features are still cached
    again = service.gair(SearchRequest(QUERY))
    assert not again.outcome.cached and [c[0] for c in fake.calls] == [1, 5, 5]


def test_outcomes_and_previews_are_shared_through_the_directory(tiny, store, object_features, tmp_path):
    config = dataclasses.replace(CONFIG, preview_dir=str(tmp_path))
    web, _ = fake_service(tiny, store, object_features, config)
    result = web.gair(SearchRequest(QUERY))

    def no_generation(*args):
        raise AssertionError("the worker regenerated a cached query")

    worker = QueryService(tiny, store, make_tokens(tiny), object_features, config, generator=no_generation)
    shared = worker.gair(SearchRequest(QUERY))
    assert shared.outcome.cached and shared.w_star == 0.75 and shared.preview.png == result.preview.png
    assert worker.preview_png(result.scores[0].preview_key) == result.previews[0.0].png


def test_concurrent_requests_generate_once(tiny, store, object_features):
    service, fake = fake_service(tiny, store, object_features)
    slow = fake.generate

    def generate(*args):
        threading.Event().wait(0.2)  # long enough for the other thread to arrive while this one generates
        return slow(*args)

    service.generator = generate
    results = []
    threads = [threading.Thread(target=lambda: results.append(service.gair(SearchRequest(QUERY)))) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(fake.calls) == 2 and [r.w_star for r in results] == [0.75] * 3
    assert sorted(r.outcome.cached for r in results) == [False, True, True]


def test_progress_counts_every_step_of_the_job(tiny, store, object_features):
    service, _ = fake_service(tiny, store, object_features)
    seen = []
    service.gair(SearchRequest(QUERY), progress=lambda done, total: seen.append((done, total)))
    assert seen == [(i, 2 * STEPS) for i in range(1, 2 * STEPS + 1)]


def test_cancelled_before_start_generates_nothing(tiny, store, object_features):
    service, fake = fake_service(tiny, store, object_features)
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(GenerationCancelled):
        service.gair(SearchRequest(QUERY), cancel=cancel)
    assert fake.calls == []


def test_gair_off_gives_w1_and_one_preview(tiny, store, object_features):
    service, fake = fake_service(tiny, store, object_features)
    result = service.gair(SearchRequest(QUERY, gair=False, limit=2))
    assert result.outcome is None and result.w_star == 1.0 and result.response.weight_source == "default"
    assert result.preview is not None and result.preview.w == 1.0 and [c[0] for c in fake.calls] == [1]
    assert any("GAIR not run: turned off" in n for n in result.response.notes)
    fixed = service.gair(SearchRequest(QUERY, weight=0.25))
    assert fixed.w_star == 0.25 and fixed.outcome is None
    plain = service.gair(SearchRequest("a red dress"))
    assert plain.outcome is None and plain.preview.w is None and any("no custom token" in n
                                                                     for n in plain.response.notes)


def test_gair_without_training_features_says_how_to_fix(tiny, store):
    service, fake = fake_service(tiny, store, {})
    with pytest.raises(QueryError, match="training-image features for <aurora>"):
        service.gair(SearchRequest(QUERY))
    assert fake.calls == []
    with pytest.raises(QueryError, match=r"must be \(n >= 1, 32\)"):
        fake_service(tiny, store, {"<aurora>": torch.zeros(3, 7)})[0].gair(SearchRequest(QUERY))


def test_backbone_without_diffusion(tiny, store, object_features):
    clip_only = dataclasses.replace(tiny, unet=None, vae=None, scheduler=None)
    service = QueryService(clip_only, store, make_tokens(tiny), object_features, CONFIG)
    assert service.search(SearchRequest(QUERY, limit=2)).results
    with pytest.raises(PreviewUnavailable, match="no diffusion stack"):
        service.gair(SearchRequest(QUERY))
    off = service.gair(SearchRequest(QUERY, gair=False))
    assert off.preview is None and any("no preview" in n for n in off.response.notes)


def spy(service):
    sizes = []
    real = service.generator

    def generator(cond, seed, progress, cancel):
        sizes.append(cond.shape[0])
        return real(cond, seed, progress, cancel)

    service.generator = generator
    return sizes


def test_real_generation_is_batched_and_deterministic(tiny, store, object_features):
    config = dataclasses.replace(CONFIG, steps=2, seed=11)
    runs = []
    for _ in range(2):
        service = QueryService(tiny, store, make_tokens(tiny), object_features, config)
        sizes = spy(service)
        runs.append((service.gair(SearchRequest(QUERY, limit=3)), sizes))
    (a, sizes_a), (b, _) = runs
    assert sizes_a == [1, len(WEIGHTS)]
    assert a.w_star == b.w_star and [s.score for s in a.scores] == [s.score for s in b.scores]
    assert a.preview.png == b.preview.png and a.preview.key == b.preview.key
    assert len({p.png for p in a.previews.values()}) == len(WEIGHTS)  # every w gives its own image
    image = Image.open(io.BytesIO(a.preview.png))
    assert image.size == (tiny.config.image_size, tiny.config.image_size)


def test_real_generation_cancelled_mid_way_caches_nothing(tiny, store, object_features):
    config = dataclasses.replace(CONFIG, steps=3, seed=12)
    service = QueryService(tiny, store, make_tokens(tiny), object_features, config)
    cancel = threading.Event()
    steps = []

    def progress(done, total):
        steps.append(done)
        if done == 1:
            cancel.set()

    with pytest.raises(GenerationCancelled, match="step 1 of 3"):
        service.gair(SearchRequest(QUERY), progress=progress, cancel=cancel)
    assert steps == [1] and service.cache_stats()["json_items"] == 0 and service.cache_stats()["png_items"] == 0
    assert not service.gair(SearchRequest(QUERY)).outcome.cached  # a later call runs normally


def test_preview_size_and_images_per_weight(tiny, store, object_features):
    config = dataclasses.replace(CONFIG, steps=1, images_per_weight=2, preview_size=16)
    service = QueryService(tiny, store, make_tokens(tiny), object_features, config)
    sizes = spy(service)
    result = service.gair(SearchRequest(QUERY))
    assert sizes == [1, len(WEIGHTS)]
    assert Image.open(io.BytesIO(result.preview.png)).size == (32, 16)  # two images side by side, 16 px each


def test_preview_job_identity_is_what_determines_the_images(tiny, store, object_features):
    """Requests share a preview job exactly when their images would be the same: whitespace and a weight on
    the grid do not matter; the seed, a weight off the grid, a retrained token and the preview size do."""
    service, _ = fake_service(tiny, store, object_features)
    job = service.preview_job(SearchRequest(QUERY))
    assert job.params == {"request": {"query": QUERY, "seed": None, "gair": None, "weight": None,
                                      "method": "composed"}}
    assert SearchRequest.from_json(job.params["request"]).query == QUERY  # what the worker runs
    assert service.preview_job(SearchRequest(f"  {QUERY.replace(' ', '   ')} ")).key == job.key
    assert service.preview_job(SearchRequest(QUERY, weight=WEIGHTS[1])).key == job.key
    assert job.key not in {service.preview_job(SearchRequest(QUERY, seed=7)).key,
                           service.preview_job(SearchRequest(QUERY, weight=0.3)).key,
                           service.preview_job(SearchRequest("a dress on a beach")).key}
    assert service.preview_job(SearchRequest(QUERY, weight=0.3)).params["request"]["weight"] == 0.3
    token = make_tokens(tiny).get("<aurora>")
    retrained = CustomToken("<aurora>", token.vectors + 0.01, token.meta)
    assert retrained.version != token.version
    later = QueryService(tiny, store, TokenSet([retrained]), object_features, CONFIG)
    assert later.preview_job(SearchRequest(QUERY)).key != job.key
    larger = QueryService(tiny, store, make_tokens(tiny), object_features, dataclasses.replace(CONFIG, preview_size=64))
    assert larger.preview_job(SearchRequest(QUERY)).key != job.key


def test_by_default_gair_explains_and_w_1_ranks(tiny, store, object_features):
    """QueryConfig.gair_ranks False (the product default): GAIR still picks w* and draws every w, but the results
    and the preview shown are those of w = 1, and a later search does not switch to the cached w*."""
    config = dataclasses.replace(CONFIG, gair_ranks=False)
    service, fake = fake_service(tiny, store, object_features, config)
    request = SearchRequest(QUERY, limit=3)
    assert service.search(request).weight_source == "default"  # not "gair-pending": nothing will re-rank it
    result = service.gair(request)
    assert result.outcome.w_star == 0.75 and len(result.previews) == 5
    assert result.response.weight == 1.0 and result.response.weight_source == "default"
    assert result.preview.w == 1.0 and result.preview.key == result.previews[1.0].key
    image = np.asarray(Image.open(io.BytesIO(result.preview.png)))
    assert np.all(image == round(0.8 * 255))  # I_1 (filled with 0.2 * 4), not I_w*
    after = service.search(request)
    assert after.weight == 1.0 and after.weight_source == "default"
    direct = service.search(SearchRequest(QUERY, weight=1.0, limit=3))
    assert [r.id for r in after.results] == [r.id for r in result.response.results] == [r.id for r in direct.results]
    # with gair_ranks, a search before GAIR has run says the w may still change
    ranked, _ = fake_service(tiny, store, object_features)
    assert ranked.search(SearchRequest(QUERY, seed=9)).weight_source == "gair-pending"


def test_the_concepts_photos_are_fused_into_the_composed_query(tiny, object_features):
    """q = normalize(normalize(q(w)) + concept_photo_weight * prototype): the point holding exactly that vector
    is found at cosine 1; weight 0 is q(w) alone; a concept without photos ranks by q(w) with a note."""
    from engine.compose import fuse, prototype

    store = open_store(StoreConfig(backend="server", url=":memory:"))
    store.create_collection("products", dim=tiny.embed_dim)
    plain, _ = fake_service(tiny, store, object_features, dataclasses.replace(CONFIG, concept_photo_weight=0))
    q1 = plain.composed_vectors(QUERY, [1.0])[0]
    rng = np.random.default_rng(1)
    points = [Point(point_id(f"p{i}"), rng.standard_normal(tiny.embed_dim).astype(np.float32), {"sku": f"p{i}"})
              for i in range(20)]
    for sku, beta in (("fused-1", 1.0), ("fused-0.5", 0.5)):
        vec = fuse(q1, prototype([object_features["<aurora>"]]), beta)
        points.append(Point(point_id(sku), vec.numpy(), {"sku": sku}))
    points.append(Point(point_id("plain"), q1.numpy(), {"sku": "plain"}))
    store.upsert("products", points)
    try:
        for beta, top in ((1.0, "fused-1"), (0.5, "fused-0.5"), (0.0, "plain")):
            service, _ = fake_service(tiny, store, object_features,
                                      dataclasses.replace(CONFIG, concept_photo_weight=beta))
            response = service.search(SearchRequest(QUERY, gair=False, retrieval="dense", limit=3))
            assert response.results[0].payload["sku"] == top
            assert response.results[0].score == pytest.approx(1.0, abs=1e-4)
            assert response.concept_photos == (beta or None)
            assert response.to_json()["concept_photos"] == (beta or None)
        bare, _ = fake_service(tiny, store, {}, dataclasses.replace(CONFIG, gair=False))
        response = bare.search(SearchRequest(QUERY, retrieval="dense", limit=3))
        assert response.results[0].payload["sku"] == "plain" and response.concept_photos is None
        assert any(n.startswith("ranked without the concept's photos: no training-image features for <aurora>")
                   for n in response.notes)
        with pytest.raises(QueryError, match="concept_photo_weight must be >= 0"):
            QueryConfig(concept_photo_weight=-1)
    finally:
        store.close()
