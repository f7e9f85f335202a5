"""The query service: parse, compose, search; GAIR and previews on the slow path.

    service = QueryService(backbone, store, tokens_provider, features_provider, QueryConfig())
    response = service.search(SearchRequest("<aurora> dress on a beach", category="dress"))  # fast: no generation
    result = service.gair(request, progress=on_step, cancel=event)  # slow: w*, scores, previews, results at w*
    png = service.preview_png(result.preview.key)  # what a /previews/<key>.png route serves

Fast path: `search()` composes q_pool(w) and asks the vector store; w is the request's, else
w* from a GAIR outcome already in the cache (no generation), else 1. Slow path: `gair()` runs
paper Algorithm 1 (engine/query/gair.py) with every candidate image in one batched diffusion
call, then searches with q_pool(w*); `preview()` generates the image of one query.

Sources are injected: `tokens` is a TokenSet or a callable returning the current one (tokens
registered later are seen by the next query); `features` maps a placeholder to the concept's
training-image features (n, embed_dim) (a Mapping or a callable such as a concept registry's
`features`). For tests and alternative runtimes, the text tower (e.g. ONNX, same call contract
as engine.text.TextTower), the generator and the image-feature function are injectable.
"""
from __future__ import annotations

import dataclasses
import logging
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, Sequence, Union

import torch
import torch.nn.functional as F

from engine.compose import attribute_prompts, fuse, mix, prototype
from engine.diffusion import GenerationCancelled, generate
from engine.errors import CoinageError
from engine.images import ImageEncoder
from engine.merch import MerchSource
from engine.merch.stage import stage_for
from engine.store import VectorStore
from engine.text import TextEncoder, TextFeatures
from engine.tokens import TokenSet

from .config import QueryConfig
from .errors import ConflictingFields, PreviewUnavailable, QueryError
from .gair import GairOutcome, WeightScore, choose, score_weights
from .parse import ParsedQuery, text_only_prompt
from .preview_jobs import PreviewJob, preview_job
from .previews import LRU, Preview, PreviewCache, cache_key, to_png
from .catalog_words import CatalogSource
from .prepare import Prepared, image_feature, prepare
from .retrieval import Retriever
from .schema import GairResult, SearchRequest, SearchResponse
from .spelling_source import SpellingSource
from .text_runtime import onnx_text_tower
from .suggest import Suggestions
from .understand import concept_words
from .understood_rules import understood_rules

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]  # (steps done, steps in total) over the whole job
TokensSource = Union[TokenSet, Callable[[], TokenSet]]
FeaturesSource = Union[Mapping[str, torch.Tensor], Callable[[str], torch.Tensor], None]
# (conditionings (B, L, width), seed, progress, cancel) -> images (B * images_per_weight, 3, H, W) in [0, 1]
Generator = Callable[[torch.Tensor, int, "Progress | None", "threading.Event | None"], torch.Tensor]
ImageFeatures = Callable[[torch.Tensor], torch.Tensor]  # images (N, 3, H, W) in [0, 1] -> features (N, embed_dim)


@dataclass
class _Encoded:
    token: TextFeatures  # the prompt itself (batch 1)
    attrs: TextFeatures | None  # the attribute prompts [t, a_i, c]; None without tokens or when not asked for


class _Clock:
    def __init__(self) -> None:
        self.start = self.last = time.perf_counter()
        self.laps: dict[str, float] = {}

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = self.laps.get(name, 0.0) + (now - self.last) * 1000
        self.last = now

    def done(self) -> dict[str, float]:
        self.laps["total"] = (time.perf_counter() - self.start) * 1000
        return {k: round(v, 3) for k, v in self.laps.items()}


class QueryService:
    def __init__(self, backbone, store: VectorStore, tokens: TokensSource, features: FeaturesSource = None,
                 config: QueryConfig | None = None, *, text_tower: torch.nn.Module | Callable | None = None,
                 generator: Generator | None = None, image_features: ImageFeatures | None = None):
        self.backbone = backbone
        self.store = store
        self.config = config or QueryConfig()
        self._tokens = tokens
        self._features = features
        self.encoder = TextEncoder(backbone)
        if text_tower is None:
            text_tower = onnx_text_tower(backbone, self.config.text_runtime, self.config.onnx_cache_dir)
        if text_tower is not None:
            self.encoder.tower = text_tower  # same call contract: (embeddings, eot_index) -> (pooled, seq)
        self.text_runtime = "torch" if text_tower is None else type(text_tower).__name__
        self.images = ImageEncoder(backbone)
        self.sampler = self.config.sampler_config(backbone) if backbone.has_diffusion else None
        self.generator: Generator = generator or self._generate
        self.image_features: ImageFeatures = image_features or self._encode_images
        self.cache = PreviewCache(self.config.preview_cache_items, self.config.preview_dir)
        self._text_cache: LRU[TextFeatures] = LRU(self.config.text_cache_items)
        self._context_cache: LRU[torch.Tensor] = LRU(self.config.context_cache_items)
        self._concept_cache: LRU[torch.Tensor] = LRU(max(64, self.config.context_cache_items))
        self._uncond: torch.Tensor | None = None
        self._flights: dict[str, threading.Lock] = {}
        self._flights_lock = threading.Lock()
        self.retriever = Retriever(store, self.config, backbone.id)
        # registered concept names are words too ("newcomr dress" -> "newcomer dress")
        self.spelling = SpellingSource(store, self.config, extra_words=lambda: concept_words(self.current_tokens()))
        self.catalog = CatalogSource(store, self.config)  # facet values, ids, names: understanding and suggestions
        self.merch: MerchSource | None = None  # synonyms and rules (engine/merch); the web app sets it
        self.suggestions = Suggestions(self.catalog, lambda: concept_words(self.current_tokens()),
                                       lambda: self.merch.current()[0] if self.merch is not None else [])

    # --- public: fast path ---------------------------------------------------------------

    def search(self, request: SearchRequest) -> SearchResponse:
        """Results only, no generation: q_pool(w) with w = request.weight, else a cached GAIR w*, else 1."""
        clock = _Clock()
        prep = self._prepare(request)
        clock.lap("parse")
        weight, source = self._default_weight(prep)
        return self._search_prepared(prep, weight, source, clock)

    def composed_vectors(self, query: str, weights: Sequence[float]) -> torch.Tensor:
        """q_pool(w) for each w, (len(weights), embed_dim): ours, and the fixed-w baseline."""
        prep = self._prepare(SearchRequest(query))
        return self._composed(prep, weights)

    def composed_features(self, query: str, weights: Sequence[float]) -> TextFeatures:
        """q(w) for each w, pooled (retrieval) and seq (generation), for a query with custom tokens."""
        prep = self._prepare(SearchRequest(query))
        if not prep.has_tokens:
            raise QueryError(f"{query!r} has no custom token to compose; use text_only_vector or search()")
        encoded = self._encode(prep)
        return mix(encoded.token, encoded.attrs, list(weights))

    def text_only_vector(self, query: str) -> torch.Tensor:
        """Baseline 'text only': g_pool of the query with each token replaced by its parent word, (embed_dim,)."""
        return self._text_only(self._prepare(SearchRequest(query)))

    def text_image_vector(self, query: str) -> torch.Tensor:
        """Baseline 'text + average image': normalised mean of the text-only feature and the concept image mean."""
        return self._text_image(self._prepare(SearchRequest(query)))

    def image_vector(self, image: Any) -> torch.Tensor:
        """f(image) for a PIL image or the bytes of an image file, (embed_dim,)."""
        return self._image_feature(image)

    # --- public: slow path ---------------------------------------------------------------

    def gair(self, request: SearchRequest, progress: Progress | None = None,
             cancel: threading.Event | None = None) -> GairResult:
        """GAIR (Algorithm 1) when on for this query, then the results and the preview of the w that ranks them:
        w* when QueryConfig.gair_ranks, else w = 1 (GAIR's w* and every w's preview are in the outcome).

        Off (request.gair False, a fixed request.weight, no custom token, a baseline method or an
        image-only query): the results at that w (1 by default) and one preview, or none where no
        image can be generated. Raises GenerationCancelled when `cancel` is set.
        """
        clock = _Clock()
        prep = self._prepare(request)
        clock.lap("parse")
        skipped = self._gair_skip_reason(prep)
        if skipped is not None:
            prep.notes.append(f"GAIR not run: {skipped}")
            weight, source = self._default_weight(prep)
            preview = self._maybe_preview(prep, weight, progress, cancel)
            clock.lap("generation")
            response = self._search_prepared(prep, weight, source, _Clock())
            clock.lap("search")
            return GairResult(response, None, preview, clock.done())
        self._require_diffusion("GAIR")
        outcome = self._choose(prep, progress, cancel)
        if outcome.cached:
            clock.lap("cache")
        else:
            clock.laps.update({k: v for k, v in outcome.timings_ms.items() if k != "total"})
            clock.last = time.perf_counter()
        if self.config.gair_ranks:
            response = self._search_prepared(prep, outcome.w_star, "gair", _Clock())
            preview = outcome.preview
        else:  # GAIR explains (its pick is marked among the previews); w = 1 ranks, and its preview is the one shown
            response = self._search_prepared(prep, 1.0, "default", _Clock())
            preview = outcome.previews.get(1.0) or self._maybe_preview(prep, 1.0, progress, cancel)
        clock.lap("search")
        return GairResult(response, outcome, preview, clock.done())

    def choose_weight(self, request: SearchRequest, progress: Progress | None = None,
                      cancel: threading.Event | None = None) -> GairOutcome:
        """GAIR's w* and every w's score and preview, without searching (for benchmarks)."""
        prep = self._prepare(request)
        skipped = self._gair_skip_reason(prep, ignore_switch=True)
        if skipped is not None:
            raise QueryError(f"cannot run GAIR for this request: {skipped}")
        self._require_diffusion("GAIR")
        return self._choose(prep, progress, cancel)

    def preview(self, request: SearchRequest, progress: Progress | None = None,
                cancel: threading.Event | None = None) -> Preview:
        """The image generated for the query at its w (request.weight, else a cached GAIR w*, else 1); cached."""
        prep = self._prepare(request)
        if prep.parsed is None:
            raise PreviewUnavailable("an image-only query has no text to generate a preview from; add words")
        if prep.request.method != "composed":
            raise PreviewUnavailable(f"previews show the composed query; method {prep.request.method!r} has none")
        self._require_diffusion("a preview")
        weight, _source = self._default_weight(prep)
        return self._preview(prep, weight, progress, cancel)

    def preview_job(self, request: SearchRequest) -> PreviewJob:
        """The preview job of a text request: its dedupe key and parameters (see previews.preview_job)."""
        return preview_job(request, self.current_tokens(), self.config, self.backbone.id)

    def preview_png(self, key: str) -> bytes | None:
        """A cached preview PNG by key (memory, then the shared directory); None when unknown."""
        return self.cache.get_png(key)

    def cache_stats(self) -> dict[str, Any]:
        return {**self.cache.stats(), "text_items": len(self._text_cache), "text_hits": self._text_cache.hits,
                "context_items": len(self._context_cache), "context_hits": self._context_cache.hits}

    # --- preparation ---------------------------------------------------------------------

    def current_tokens(self) -> TokenSet:
        tokens = self._tokens() if callable(self._tokens) else self._tokens
        if not isinstance(tokens, TokenSet):
            raise TypeError(f"the tokens provider returned {type(tokens).__name__}, not an engine.tokens.TokenSet")
        return tokens

    def _prepare(self, request: SearchRequest) -> Prepared:
        return prepare(self, request)  # the understand stage (engine/query/prepare.py)

    def _image_feature(self, image: Any) -> torch.Tensor:
        return image_feature(self.images, image)

    # --- query vectors -------------------------------------------------------------------

    def _encode(self, prep: Prepared, attributes: bool = True) -> _Encoded:
        """Text features of the prompt and (when asked) its attribute prompts, cached per prompt and versions.

        q(1) is the prompt alone, so a search at w = 1 skips the |A| attribute prompts; what is missing
        from the cache is encoded in one batched pass.
        """
        prompt = prep.parsed.prompt
        key = cache_key(prompt=prompt, versions=prep.versions)
        want_attrs = attributes and prep.has_tokens
        token = self._text_cache.get(f"{key}:prompt")
        attrs = self._text_cache.get(f"{key}:attributes") if want_attrs else None
        todo = ([prompt] if token is None else []) + (
            attribute_prompts(prompt, prep.tokens) if want_attrs and attrs is None else [])
        if todo:
            with torch.no_grad():
                feats = self.encoder.encode(todo, prep.tokens.vectors())
            pooled, seq = torch.as_tensor(feats.pooled).float(), torch.as_tensor(feats.seq)
            start = 0
            if token is None:
                token, start = TextFeatures(pooled[:1], seq[:1]), 1
                self._text_cache.put(f"{key}:prompt", token)
            if want_attrs and attrs is None:
                attrs = TextFeatures(pooled[start:], seq[start:])
                self._text_cache.put(f"{key}:attributes", attrs)
        return _Encoded(token, attrs)

    def _composed(self, prep: Prepared, weights: Sequence[float]) -> torch.Tensor:
        weights = list(weights)
        encoded = self._encode(prep, attributes=any(w != 1.0 for w in weights))
        if encoded.attrs is None:  # no token, or only w = 1
            return F.normalize(encoded.token.pooled, dim=-1).expand(len(weights), -1).clone()
        return mix(encoded.token, encoded.attrs, weights).pooled

    def _text_only(self, prep: Prepared) -> torch.Tensor:
        prompt = text_only_prompt(prep.parsed, prep.tokens)
        plain = dataclasses.replace(prep, parsed=ParsedQuery(prompt, prompt, ()), tokens=TokenSet(), versions={})
        return self._encode(plain).token.pooled[0]

    def _text_image(self, prep: Prepared) -> torch.Tensor:
        if not prep.has_tokens:
            raise ConflictingFields("the 'text+image' method needs a custom token in the query (its images are "
                                    "averaged); add one, or use method 'composed' or 'text-only'")
        return fuse(self._text_only(prep), self._prototype(prep))

    def _prototype(self, prep: Prepared) -> torch.Tensor:
        """The mean training-photo feature of the query's concepts (engine.compose.prototype)."""
        return prototype([self._concept_features(prep, p) for p in prep.parsed.placeholders])

    def _vector(self, prep: Prepared, weight: float | None) -> tuple[torch.Tensor, float | None]:
        """The query vector, and the weight of the concept photos fused into it (None: not fused)."""
        method = prep.request.method
        if prep.parsed is None:
            return prep.image_feature, None
        photos = None
        if method == "text-only":
            vector = self._text_only(prep)
        elif method == "text+image":
            vector = self._text_image(prep)
        else:
            vector = self._composed(prep, [1.0 if weight is None else weight])[0]
            vector, photos = self._with_concept_photos(prep, vector)
        if prep.image_feature is not None:
            vector = fuse(vector, prep.image_feature)
        return vector, photos

    def _with_concept_photos(self, prep: Prepared, vector: torch.Tensor) -> tuple[torch.Tensor, float | None]:
        """q(w) fused with the concept prototype (QueryConfig.concept_photo_weight); q(w) alone, with a note,
        for a token whose concept has no training photos here."""
        weight = self.config.concept_photo_weight
        if not prep.has_tokens or weight == 0:
            return vector, None
        try:
            return fuse(vector, self._prototype(prep), weight), weight
        except CoinageError as e:  # no features provider, an unknown placeholder, a token imported without images
            prep.notes.append(f"ranked without the concept's photos: {e}")
            return vector, None

    def _default_weight(self, prep: Prepared) -> tuple[float | None, str]:
        """w for a query: the request's, a cached GAIR w*, or 1; None when there is no token to weigh."""
        if not prep.has_tokens or prep.request.method != "composed":
            return None, "none"
        if prep.request.weight is not None:
            return float(prep.request.weight), "request"
        if self.config.gair_ranks and self._gair_skip_reason(prep) is None and self.backbone.diffusion_available:
            # a w* GAIR chose earlier, here or in a job worker (the preview cache directory is shared)
            cached = self.cache.get_json(self._gair_key(prep))
            if cached is not None:
                return float(cached["w_star"]), "gair-cache"
            return 1.0, "gair-pending"
        return 1.0, "default"

    # --- search --------------------------------------------------------------------------

    def _search_prepared(self, prep: Prepared, weight: float | None, source: str, clock: _Clock) -> SearchResponse:
        request = prep.request
        if request.retrieval == "auto":  # RETRIEVALS: a custom token is read by the dense side only
            request = dataclasses.replace(request, retrieval=prep.auto_retrieval)
        vector = photos = None
        if request.retrieval != "lexical":
            tensor, photos = self._vector(prep, weight)
            vector = tensor.detach().float().cpu().numpy()
        clock.lap("encode")
        limit = request.limit or self.config.default_limit
        parsed = prep.parsed
        placeholders = parsed.placeholders if parsed else []
        understood = understood_rules(prep.interpretation, self.config)  # exact-id pins, named-facet boosts
        stage = (self.merch.stage(self, request, placeholders, vector, prep.lexical, understood, prep.collection)
                 if self.merch else
                 stage_for(self, request, (), vector, prep.lexical, prep.collection, asked=understood))
        retriever = self.retriever.naming(prep.named, prep.defines)  # the count keeps the named facets' products
        page = retriever.page(request, vector, prep.lexical, shape=stage, collection=prep.collection)
        clock.lap("search")
        return SearchResponse(
            query=request.query, prompt=parsed.prompt if parsed else None,
            tokens=list(parsed.placeholders) if parsed else [], notes=list(prep.notes) + page.notes,
            method=request.method, weight=weight, weight_source=source, results=page.results, limit=limit,
            offset=request.offset, next_offset=page.next_offset,
            collection=self.config.collection, backbone=self.backbone.id, timings_ms=clock.done(),
            mode="products" if page.products else "photos", products=page.products, retrieval=page.retrieval,
            sort=request.sort,
            correction=prep.correction, facets=page.facets, concept_photos=photos,
            interpretation=prep.interpretation,
            merch=prep.merch + (stage.applied_json() if stage else []))

    # --- GAIR ----------------------------------------------------------------------------

    def _gair_skip_reason(self, prep: Prepared, ignore_switch: bool = False) -> str | None:
        request = prep.request
        if not ignore_switch and not (request.gair if request.gair is not None else self.config.gair):
            return "turned off for this query"
        if request.weight is not None:
            return f"the request fixes w = {request.weight}"
        if prep.parsed is None:
            return "an image-only query has no text to compose"
        if not prep.has_tokens:
            return "the query has no custom token, so there is no weight to choose"
        if request.method != "composed":
            return f"GAIR chooses w of the composed query, not of the {request.method!r} baseline"
        return None

    def _gair_key(self, prep: Prepared) -> str:
        return cache_key(kind="gair", **self._generation_parts(prep), weights=list(self.config.weights),
                         context_seed_offset=self.config.context_seed_offset)

    def _generation_parts(self, prep: Prepared) -> dict[str, Any]:
        sampler = dataclasses.asdict(self.sampler) if self.sampler is not None else None
        return {"prompt": prep.parsed.prompt, "versions": prep.versions, "seed": prep.seed,
                "backbone": self.backbone.id, "sampler": sampler, "negative": self.config.negative_prompt,
                "size": self.config.preview_size}

    def _preview_key(self, prep: Prepared, weight: float | None) -> str:
        return cache_key(kind="preview", **self._generation_parts(prep), w=weight)

    def _choose(self, prep: Prepared, progress: Progress | None, cancel: threading.Event | None) -> GairOutcome:
        key = self._gair_key(prep)
        outcome = self._cached_outcome(key, prep)
        if outcome is not None:
            return outcome
        with self._single_flight(key, cancel):
            outcome = self._cached_outcome(key, prep)  # another thread may have just produced it
            if outcome is not None:
                return outcome
            return self._run_gair(prep, key, progress, cancel)

    def _cached_outcome(self, key: str, prep: Prepared) -> GairOutcome | None:
        data = self.cache.get_json(key)
        if data is None:
            return None
        scores = [WeightScore.from_json(s) for s in data["scores"]]
        previews = {}
        for s in scores:
            png = self.cache.get_png(s.preview_key) if s.preview_key else None
            if png is None:
                return None  # a preview was evicted: regenerate everything (same seed, same result)
            previews[s.w] = Preview(s.preview_key, png, s.w, prep.parsed.prompt, prep.seed)
        return GairOutcome(float(data["w_star"]), scores, prep.seed, True, previews, {})

    def _run_gair(self, prep: Prepared, key: str, progress: Progress | None,
                  cancel: threading.Event | None) -> GairOutcome:
        clock = _Clock()
        weights = list(self.config.weights)
        k = self.config.images_per_weight
        encoded = self._encode(prep)
        queries = mix(encoded.token, encoded.attrs, weights)
        context_seq = mix(encoded.token, encoded.attrs, [0.0]).seq  # x_c: the attribute-averaged query
        clock.lap("text")
        objects = [self._concept_features(prep, p) for p in prep.parsed.placeholders]
        context_key = cache_key(kind="context", **self._generation_parts(prep),
                                offset=self.config.context_seed_offset)
        context = self._context_cache.get(context_key)
        steps = self.sampler.steps
        offset = steps if context is None else 0  # progress counts the context generation first
        report = _StepReporter(progress, steps + offset)
        clock.lap("features")
        _check_cancel(cancel)
        if context is None:
            images = self.generator(context_seq, prep.seed + self.config.context_seed_offset, report.part(0), cancel)
            context = self._features_of(images)
            self._context_cache.put(context_key, context)
        clock.lap("context_generation")
        images = self.generator(queries.seq, prep.seed, report.part(offset), cancel)  # every w in one batch
        clock.lap("generation")
        feats = self._features_of(images)
        if feats.shape[0] != len(weights) * k:
            raise ValueError(f"the generator returned {feats.shape[0]} images for {len(weights)} weights x {k}")
        score, context_score, object_score = score_weights(feats.view(len(weights), k, -1), context, objects)
        best = choose(score)
        clock.lap("scoring")
        previews, scores = {}, []
        for i, w in enumerate(weights):
            preview = self._store_preview(prep, w, images[i * k:(i + 1) * k])
            previews[w] = preview
            scores.append(WeightScore(w, float(score[i]), float(context_score[i]), float(object_score[i]),
                                      preview.key))
        self.cache.put_json(key, {"w_star": weights[best], "scores": [s.to_json() for s in scores]})
        clock.lap("previews")
        return GairOutcome(weights[best], scores, prep.seed, False, previews, clock.done())

    def _features_of(self, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return F.normalize(torch.as_tensor(self.image_features(images)).float().cpu(), dim=-1)

    def _concept_features(self, prep: Prepared, placeholder: str) -> torch.Tensor:
        """The concept's training-image features f(x), (n, embed_dim), cached with the token version."""
        key = cache_key(placeholder=placeholder, version=prep.versions[placeholder])
        found = self._concept_cache.get(key)
        if found is not None:
            return found
        fix = (f"register the concept's training images for {placeholder} (the concept registry supplies them), "
               "or run the query without GAIR")
        if self._features is None:
            raise QueryError(f"no training-image features for {placeholder}: the service has no features "
                             f"provider; {fix}")
        try:
            feats = self._features[placeholder] if isinstance(self._features, Mapping) else self._features(placeholder)
        except KeyError as e:
            raise QueryError(f"no training-image features for {placeholder}; {fix}") from e
        feats = torch.as_tensor(feats) if feats is not None else None
        if feats is None or feats.ndim != 2 or feats.shape[0] < 1 or feats.shape[1] != self.backbone.embed_dim:
            shape = None if feats is None else tuple(feats.shape)
            raise QueryError(f"training-image features for {placeholder} must be (n >= 1, {self.backbone.embed_dim}) "
                             f"for backbone {self.backbone.id!r}, got {shape}; re-encode the concept's images "
                             "with this backbone")
        if not bool(torch.isfinite(feats).all()):
            raise QueryError(f"training-image features for {placeholder} contain NaN or inf; re-encode its images")
        feats = F.normalize(feats.detach().float().cpu(), dim=-1)
        self._concept_cache.put(key, feats)
        return feats

    @contextmanager
    def _single_flight(self, key: str, cancel: threading.Event | None) -> Iterator[None]:
        """One generation per key at a time in this process; waiters still honour their cancel event."""
        with self._flights_lock:
            lock = self._flights.setdefault(key, threading.Lock())
        while not lock.acquire(timeout=0.1):
            _check_cancel(cancel)
        try:
            yield
        finally:
            lock.release()
            with self._flights_lock:
                if self._flights.get(key) is lock and not lock.locked():
                    del self._flights[key]

    # --- previews ------------------------------------------------------------------------

    def _maybe_preview(self, prep: Prepared, weight: float | None, progress: Progress | None,
                       cancel: threading.Event | None) -> Preview | None:
        if prep.parsed is None or prep.request.method != "composed":
            return None
        if not self.backbone.has_diffusion:
            prep.notes.append(f"no preview: backbone {self.backbone.id!r} has no diffusion stack")
            return None
        return self._preview(prep, weight, progress, cancel)

    def _preview(self, prep: Prepared, weight: float | None, progress: Progress | None,
                 cancel: threading.Event | None) -> Preview:
        key = self._preview_key(prep, weight)
        png = self.cache.get_png(key)
        if png is not None:
            return Preview(key, png, weight, prep.parsed.prompt, prep.seed)
        encoded = self._encode(prep, attributes=weight not in (None, 1.0))
        seq = encoded.token.seq if encoded.attrs is None else mix(encoded.token, encoded.attrs, [weight]).seq
        _check_cancel(cancel)
        images = self.generator(seq, prep.seed, _StepReporter(progress, self.sampler.steps).part(0), cancel)
        return self._store_preview(prep, weight, images)

    def _store_preview(self, prep: Prepared, weight: float | None, images: torch.Tensor) -> Preview:
        key = self._preview_key(prep, weight)
        png = to_png(images, self.config.preview_size)
        self.cache.put_png(key, png)
        return Preview(key, png, weight, prep.parsed.prompt, prep.seed)

    # --- default generator and image features --------------------------------------------

    def _generate(self, cond: torch.Tensor, seed: int, progress: Progress | None,
                  cancel: threading.Event | None) -> torch.Tensor:
        if self._uncond is None:
            with torch.no_grad():
                self._uncond = torch.as_tensor(self.encoder.encode([self.config.negative_prompt]).seq)
        return generate(self.backbone, cond, self._uncond, seed, self.sampler, progress, cancel)

    def _encode_images(self, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.images.encode_tensor(images)

    def _require_diffusion(self, what: str) -> None:
        if not self.backbone.has_diffusion:
            raise PreviewUnavailable(
                f"backbone {self.backbone.id!r} has no diffusion stack, so {what} cannot be generated; load a "
                "backbone with one (e.g. --backbone world), or search without GAIR (--no-gair, QueryConfig.gair=False)")


class _StepReporter:
    """Turns per-call (i, n) progress into one (done, total) count over a whole job of several generations."""

    def __init__(self, progress: Progress | None, total: int):
        self.progress = progress
        self.total = total
        self.done = 0

    def part(self, offset: int) -> Progress | None:
        if self.progress is None:
            return None

        def report(i: int, _n: int) -> None:
            self.done = offset + i
            self.progress(self.done, self.total)

        return report


def _check_cancel(cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise GenerationCancelled("generation cancelled before it started")
