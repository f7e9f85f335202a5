"""QueryConfig: the knobs of the query service, one comment per field."""
from __future__ import annotations

from dataclasses import dataclass

from engine import product
from engine.diffusion import SamplerConfig
from engine.store import Fusion

from . import floor
from .errors import QueryError


CONCEPT_WORD_READINGS = ("both", "name", "name-word", "concept")  # QueryConfig.concept_word_reading


@dataclass(frozen=True)
class QueryConfig:
    # Vector-store collection or alias searched (the indexer points the alias at the live collection).
    collection: str = "products"
    # GAIR weight grid W: the values of w tried in q(w) = w*g([t,*,c]) + (1-w)*mean_i g([t,a_i,c]).
    weights: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
    # Run GAIR when the request does not say (SearchRequest.gair=None). search() never generates either way.
    gair: bool = True
    # Whether GAIR's w* ranks the results (True: the paper's method), or only picks among the previews shown beside
    # results ranked at w = 1 (False). Every GAIR scorer measured below w = 1 on every world (`coinage bench gair`,
    # docs/results.md), so by default GAIR explains and the composed query at w = 1 ranks.
    gair_ranks: bool = False
    # Weight of the concept prototype (the mean feature of a token's training photos, engine.compose.prototype)
    # fused into a composed token query: normalize(normalize(q(w)) + weight * prototype). 1 (equal weight, as the
    # text + average image baseline; never tuned on queries) beat plain q(w) on every world measured
    # (docs/results.md); 0 ranks with q(w) alone (the paper's ours).
    concept_photo_weight: float = 1.0
    # Diffusion seed when the request gives none: the same seed gives the same images, w* and previews.
    seed: int = 0
    # Denoising steps for previews and GAIR; None = the backbone's default (BackboneConfig.steps).
    steps: int | None = None
    # Classifier-free guidance scale; None = the backbone's default. 1.0 turns guidance off (half the UNet cost).
    guidance_scale: float | None = None
    # Sampler: 'dpm' (DPM-Solver++ multistep, good in few steps) or 'ddim'.
    sampler: str = "dpm"
    # Images generated per weight and for the context x_c; GAIR scores average over them (more: steadier w*).
    images_per_weight: int = 1
    # Negative prompt: the unconditional branch of classifier-free guidance.
    negative_prompt: str = ""
    # Seed offset of the context images x_c, so that x_c is not the w=0 candidate itself (same noise) (ours).
    context_seed_offset: int = 1_000_003
    # Side in pixels of preview PNGs (bicubic resize of each image); None = the generation size.
    preview_size: int | None = None
    # Preview PNGs kept in memory (LRU).
    preview_cache_items: int = 256
    # Directory shared by processes (web workers, CLI) for preview PNGs and GAIR outcomes; None = memory only.
    preview_dir: str | None = None
    # GAIR outcomes (w*, every w's score) kept in memory (LRU).
    gair_cache_items: int = 1024
    # Context-image features f(x_c) kept in memory (LRU), per attribute-averaged query and sampler settings.
    context_cache_items: int = 256
    # Text encodings (token prompt + attribute prompts) kept in memory (LRU), per prompt and token versions.
    text_cache_items: int = 1024
    # Results per page when the request gives no limit.
    default_limit: int = 10
    # Largest page size accepted.
    max_limit: int = 100
    # Largest offset accepted (pagination depth; a page is a slice of the request's one candidate window, so a page
    # past the window's products is empty). Requests beyond it are a 400 naming this bound.
    max_offset: int = 10_000
    # Longest query accepted, in characters (CLIP reads at most 75 BPE tokens anyway).
    max_query_chars: int = 500
    # Text encoder runtime: 'auto' (the ONNX export of the text tower, input-embeddings form, when engine.onnx
    # can export or load it; else PyTorch, with a warning), 'onnx' (required) or 'torch'.
    text_runtime: str = "auto"
    # Where ONNX exports are cached; None = engine.onnx's default ($COINAGE_ONNX_CACHE or var/onnx).
    onnx_cache_dir: str | None = None
    # Payload field that SearchRequest.category filters on (exact match, or any of a list).
    category_field: str = product.CATEGORY
    # Payload field that SearchRequest.min_price / max_price bound (inclusive).
    price_field: str = product.PRICE
    # Payload field that groups photos into products (one result card per value).
    group_by: str = product.PRODUCT_ID
    # Photos shown per product card: the best one and up to group_size - 1 thumbnails.
    group_size: int = 4
    # Fusion of the dense (CLIP) and lexical (BM25) prefetches, done in the store: 'rrf' or 'dbsf'. DBSF had the
    # best mean nDCG@10 over the query kinds of `coinage bench relevance` on world seed 0 (0.956; RRF k=60:
    # 0.945), checked on seeds 1 and 2 (docs/relevance.md).
    fusion: str = "dbsf"
    # RRF's k in 1/(k + rank).
    rrf_k: int = 60
    # RRF weights of the dense and the lexical prefetch; None = equal.
    fusion_weights: tuple[float, float] | None = None
    # Candidates each side (dense, lexical) contributes to a request's one window, fetched once and fused in the
    # store: the product list, every page, the count, the facets and both floors are derived from it in Python
    # (engine.query.candidates), the same for every page, page size, sort and store backend. The list ends at the
    # window (and at the floor): ~2x this many photos. Latency at 100k points: docs/relevance.md.
    candidate_window: int = 512
    # The window of a price-sorted request (None: candidate_window); `coinage bench relevance --sort-windows` compares.
    sort_window: int | None = None
    # A side's window ends at a score, never inside a run of equal scores (BM25 ties): a run that fills the whole
    # window is taken whole, up to this many points (engine.query.fusion.side_window).
    candidate_window_most: int = 4096
    # Fetch both sides' windows in one store call (VectorStore.query_batch) instead of one call per side. Off: one
    # call per side measured faster on the embedded backend and equal on the server stand-in (docs/relevance.md,
    # "Latency"); a real server saves one round trip with it. `coinage bench relevance --latency-products` compares.
    side_batch: bool = False
    # Where a relevance-ordered list ends (engine.query.floor): 'gap', 'z:K' or 'none' (every product of the window).
    # The count and facets describe the products up to it (docs/relevance.md, "Pages, counts and facets").
    relevance_floor: str = "gap"
    # Where a price-sorted list ends (engine.query.floor): 'gap' (at the largest drop between neighbouring product
    # scores), 'z:K' (K standard deviations above the candidates' mean score) or 'none' (every candidate). 'gap'
    # had the best mean F over the query kinds of `coinage bench relevance` (docs/relevance.md).
    sort_floor: str = "gap"
    # Payload field that SearchRequest.colour filters on (a dotted path into the payload); a facet with category.
    colour_field: str = product.COLOUR
    # Price-range facet buckets [low, high) in the shop's currency; None leaves a side open.
    price_buckets: tuple[tuple[float | None, float | None], ...] = ((None, 25.0), (25.0, 50.0), (50.0, 100.0),
                                                                     (100.0, None))
    # Seconds between checks of the searched collection's alias target and vocabulary version (an index run adds
    # words in place, a reindex moves the alias); only a change rebuilds the speller (engine/query/spelling_source.py).
    spelling_refresh_s: float = 30.0
    # The first speller is built in the background too; a search waits at most this long for it (a small catalog's
    # takes milliseconds), then runs uncorrected, with a note, until it is ready (300,000 words: seconds).
    spelling_first_wait_s: float = 1.0
    # Query understanding (engine/query/understand.py): price words that name a band (word, min, max; None open).
    price_bands: tuple[tuple[str, float | None, float | None], ...] = (
        ("cheap", None, 25.0), ("inexpensive", None, 25.0), ("budget", None, 25.0), ("affordable", None, 50.0),
        ("expensive", 100.0, None), ("luxury", 100.0, None), ("premium", 100.0, None))
    # Facets whose values a query may name (facet name, payload field): recognised, shown, excludable by negation.
    understand_facets: tuple[tuple[str, str], ...] = (
        ("category", product.CATEGORY), ("colour", product.COLOUR), ("pattern", f"{product.ATTRIBUTES}.pattern"))
    # Facets whose named values become hard filters; the others stay soft (in the words both sides search). A hard
    # category scored at least the soft one on every shopper kind of world 0 (`coinage bench relevance_shopper
    # --hard-facets category`: plurals 0.987 vs 0.955, loose phrasing 0.882 vs 0.855, prices 1.0 vs 0.993;
    # docs/relevance.md), but it also hides every other category from the page and its facets ("dotted dress"
    # no longer lists dotted mugs), so the default stays soft: ("category",) turns it on.
    facet_filters: tuple[str, ...] = ()
    # With a hard constraint typed (a price, a negated facet value), the products of the category named beside it
    # get this added to their score in the rules stage, those of the colour named half of it
    # (engine/query/understood_rules.py), so they rank first; nothing is filtered (the page and its facets keep the
    # other categories after them). Fused scores lie in about [0, 2], so 10 orders by it; 0 turns it off.
    named_facet_boost: float = 10.0
    # Payload fields holding identifiers (product id, photo id, a SKU column): an exact match filters to it.
    identifier_fields: tuple[str, ...] = (product.PRODUCT_ID, product.ID, "sku")
    # A partial id (with a digit) filters to the ids it begins when it begins at most this many.
    max_prefix_ids: int = 64
    # A concept name typed as a plain word that is also a catalog word (engine/query/understand.py): "both" reads it
    # both ways (the concept on the dense side, the word kept for BM25, hybrid retrieval); "name" does so only when
    # the word and a neighbour are a phrase of a product name, else the concept alone; "name-word": there the word
    # alone (no concept; the name then the concept's parent word, "willow dress", stays the concept), else the
    # concept alone; "concept": the concept alone. "name-word" was chosen by `coinage bench relevance_shopper`
    # (docs/relevance.md, "A concept whose name is also an ordinary catalog word").
    concept_word_reading: str = "name-word"
    # Payload field of the product name (suggestions, catalog words).
    title_field: str = product.TITLE
    # Seconds the catalog words (facet values, ids, names) are reused before the collection is checked for change.
    catalog_refresh_s: float = 30.0

    def __post_init__(self) -> None:
        if self.concept_word_reading not in CONCEPT_WORD_READINGS:
            raise QueryError(f"QueryConfig.concept_word_reading is {self.concept_word_reading!r}; use one of "
                             f"{list(CONCEPT_WORD_READINGS)}")
        if not self.weights:
            raise QueryError("QueryConfig.weights is empty; give the GAIR grid, e.g. (0, 0.25, 0.5, 0.75, 1)")
        bad = [w for w in self.weights if not 0.0 <= float(w) <= 1.0]
        if bad:
            raise QueryError(f"QueryConfig.weights must lie in [0, 1]; {bad} do not")
        object.__setattr__(self, "weights", tuple(float(w) for w in self.weights))
        for name in ("images_per_weight", "preview_cache_items", "gair_cache_items", "context_cache_items",
                     "text_cache_items", "default_limit", "max_limit", "max_offset", "max_query_chars", "group_size",
                     "rrf_k", "candidate_window", "candidate_window_most", "max_prefix_ids"):
            if int(getattr(self, name)) < 1:
                raise QueryError(f"QueryConfig.{name} must be >= 1, got {getattr(self, name)}")
        unknown = sorted(set(self.facet_filters) - {name for name, _ in self.understand_facets})
        if unknown:
            raise QueryError(f"QueryConfig.facet_filters names {unknown}, which are not in understand_facets "
                             f"{[name for name, _ in self.understand_facets]}; add them there or drop them")
        if not self.concept_photo_weight >= 0:
            raise QueryError(f"QueryConfig.concept_photo_weight must be >= 0 (0: q(w) alone), "
                             f"got {self.concept_photo_weight}")
        if self.sort_window is not None and int(self.sort_window) < 1:
            raise QueryError(f"QueryConfig.sort_window must be >= 1 (or None: candidate_window), got {self.sort_window}")
        for name in ("sort_floor", "relevance_floor"):
            try:
                floor.parse_rule(getattr(self, name))
            except ValueError as e:
                raise QueryError(f"QueryConfig.{name}: {e}") from e
        if self.steps is not None and self.steps < 1:
            raise QueryError(f"QueryConfig.steps must be >= 1 (or None for the backbone's default), got {self.steps}")
        if self.preview_size is not None and self.preview_size < 8:
            raise QueryError(f"QueryConfig.preview_size must be >= 8 pixels (or None), got {self.preview_size}")
        if self.default_limit > self.max_limit:
            raise QueryError(f"QueryConfig.default_limit ({self.default_limit}) exceeds max_limit ({self.max_limit})")
        if self.text_runtime not in ("auto", "onnx", "torch"):
            raise QueryError(f"QueryConfig.text_runtime must be 'auto', 'onnx' or 'torch', got {self.text_runtime!r}")
        try:
            self.store_fusion()
        except ValueError as e:
            raise QueryError(f"QueryConfig fusion settings: {e}") from e
        if self.sampler not in ("dpm", "ddim"):
            raise QueryError(f"QueryConfig.sampler must be 'dpm' or 'ddim', got {self.sampler!r}")

    def store_fusion(self) -> Fusion:
        """The store's fusion settings from fusion, rrf_k and fusion_weights."""
        weights = tuple(float(w) for w in self.fusion_weights) if self.fusion_weights is not None else None
        return Fusion(self.fusion, int(self.rrf_k), weights)

    def sampler_config(self, backbone) -> SamplerConfig:
        """The sampler settings for this backbone (None fields fall back to the backbone's defaults)."""
        return SamplerConfig(
            steps=self.steps or backbone.config.steps,
            guidance_scale=self.guidance_scale if self.guidance_scale is not None else backbone.config.guidance_scale,
            sampler=self.sampler,
            images_per_prompt=self.images_per_weight,
        )
