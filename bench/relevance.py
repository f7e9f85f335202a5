"""Product-level relevance benchmark: dense-only, lexical-only and hybrid search side by side.

    coinage bench relevance [--world-seed 0] [--queries 60] [--fusion rrf:60 rrf:60:1:2 dbsf ...]
    coinage bench relevance --latency-products 10000 100000     # p50/p95 at a synthetic scale-up
    coinage bench relevance --world-seed 1 --token-cache DIR   # + custom-token queries (`coinage bench quality --cache DIR`)
    coinage bench relevance --sort-floors none gap z:1 z:2    # price-sorted pages under several relevance floors
    coinage bench relevance --pages rrf:60 dbsf               # pages 1-3, past the end, both backends (bench/pages.py)

From a world seed (world.build.make_world: 320 products, 8 photos each), the catalog rows the indexer would
write (world.catalog.catalog_rows) go into an embedded store with the world backbone's image vectors, the
BM25 vectors and the spelling vocabulary (the functions the indexer uses). Queries, per kind, for
`queries` products drawn with a seeded RNG:

- name: the product's title without its colour ("Yarrow Dotted Dress"); with the colour when the shorter
  name is shared by several products; grade 3 for every product carrying that exact name;
- attributes: "purple dotted dress" (colour, pattern word, category noun); grade 2 for products with all
  three, 1 for the category and one of colour / pattern;
- attributes + scene: "purple dotted dress on a beach" (a context of one of the product's photos): grade 3
  for all attributes and a photo in that scene, 2 for all attributes, 1 as above;
- each with one typo per word of 4+ letters (a deletion, swap, substitution or insertion, seeded);
- token: "<p0042> dress", a custom token and its parent word, for every held-out product whose token the
  quality benchmark's cache holds (`--token-cache`; `coinage bench quality --cache`): ours (ti+ce+proj),
  first training seed, looked up by the quality benchmark's own cache key; grade 3 for that product alone;
- token + scene: "<p0042> dress on a beach", once per scene of the product's query photos (the photos its
  token was not trained on); grade 3 for that product alone. Skipped, saying so, when the cache holds no
  token for the world seed.

Sorted by price (`--sort-floors`): each query as a shopper sorts it, price low to high, at retrieval 'auto', for
the kinds above without typos plus two a shop sees most: category ("dress", grade 1 for every dress) and colour
("purple dress", grade 1 for every purple dress). For each relevance floor (QueryConfig.sort_floor, engine.query.floor;
'none': the whole candidate window, the order before the floor): precision of the first page (grade >= 1 among the first 12
products), the share of the query's relevant products (grade >= 1) and of its top-grade products the sorted list
keeps (first 100), and F, the harmonic mean of precision and relevant kept.

Metrics per kind (products ranked by the engine, first 50): nDCG@10 (gain 2^grade - 1), MRR (first product
of the query's top grade), R@10 (top-grade products in the first 10, over min(10, their number)), and the
share of the first 12 slots that repeat a product already shown, for the product page and for the
photo ranking it groups (the page before this change).
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import random
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bench.common import RESULTS, write_result
from bench.quality import OURS, QualityConfig

KINDS = ("name", "attributes", "attributes+scene")
TOKEN_KINDS = ("token", "token+scene")  # custom-token queries (trained tokens from the quality benchmark's cache)
RETRIEVALS = ("dense", "lexical", "hybrid")
DEPTH = 50  # products retrieved per query for the metrics
SORT_KINDS = ("category", "colour")  # extra kinds of the price-sorted evaluation
SORT_DEPTH = 100  # products of a price-sorted list read for the kept shares
PAGE = 12  # slots of the first page (repeat share)
LETTERS = "abcdefghijklmnopqrstuvwxyz"


@dataclass(frozen=True)
class BenchQuery:
    kind: str  # one of KINDS ("+typo" appended for the misspelt twin) or TOKEN_KINDS
    text: str
    grades: dict[str, int]  # product id -> grade (> 0 only)

    @property
    def top(self) -> int:
        return max(self.grades.values())


# ---------------------------------------------------------------- queries



def bench_config() -> QueryConfig:
    """The query service every relevance benchmark measures: the product's defaults, torch text encoding, no GAIR,
    pages up to 100, and a first search that waits for the speller (a search that came first must not run
    uncorrected and score differently from the rest: on a loaded machine the default 1 s wait can run out)."""
    from engine.query import QueryConfig

    return QueryConfig(text_runtime="torch", gair=False, max_limit=100, spelling_first_wait_s=600.0)

def name_of(title: str) -> str:
    return title.split(" — ")[0]


def make_queries(world, rows: list[dict], n: int, seed: int) -> list[BenchQuery]:
    from world.captions import describe
    from world.vocab import CONTEXTS

    products = {p.id: p for p in world.products}
    title = {r["product_id"]: r["title"] for r in rows}
    contexts: dict[str, set[str]] = {}
    for r in rows:
        contexts.setdefault(r["product_id"], set()).add(r["attributes"]["context"])
    by_name: dict[str, set[str]] = {}
    for pid, t in title.items():
        by_name.setdefault(name_of(t), set()).add(pid)
        by_name.setdefault(t, set()).add(pid)

    def attr_grades(p, scene: str | None) -> dict[str, int]:
        grades = {}
        for q in products.values():
            if q.category != p.category:
                continue
            full = q.colour == p.colour and q.pattern == p.pattern
            if full:
                grades[q.id] = 3 if scene is not None and scene in contexts[q.id] else 2
            elif q.colour == p.colour or q.pattern == p.pattern:
                grades[q.id] = 1
        return grades

    out = []
    for kind in KINDS:
        rng = random.Random(f"coinage-relevance:{seed}:{kind}")
        for pid in rng.sample(sorted(products), n):
            p = products[pid]
            if kind == "name":
                short = name_of(title[pid])
                text = short if len(by_name[short]) == 1 else title[pid]
                query = BenchQuery(kind, text, dict.fromkeys(by_name[text], 3))
            else:
                phrase = re.sub(r"^an? ", "", describe(p))
                scene = rng.choice(sorted(contexts[pid])) if kind == "attributes+scene" else None
                text = phrase if scene is None else f"{phrase} {CONTEXTS[scene][0]}"
                query = BenchQuery(kind, text, attr_grades(p, scene))
            out.append(query)
            out.append(BenchQuery(kind + "+typo", misspell(query.text, random.Random(f"{seed}:{query.text}")),
                                  query.grades))
    return out


def sort_queries(world, n: int, seed: int) -> list[BenchQuery]:
    """The category queries ("dress": every category) and `n` colour queries ("purple dress": (category, colour)
    pairs of the catalog, seeded), each grading every matching product 1."""
    from world.vocab import CATEGORIES, CATEGORY_NOUNS

    products = world.products
    out = [BenchQuery("category", CATEGORY_NOUNS[c][0], {p.id: 1 for p in products if p.category == c})
           for c in CATEGORIES if any(p.category == c for p in products)]
    pairs = sorted({(p.category, p.colour) for p in products})
    for category, colour in random.Random(f"coinage-relevance:{seed}:colour").sample(pairs, min(n, len(pairs))):
        out.append(BenchQuery("colour", f"{colour} {CATEGORY_NOUNS[category][0]}",
                              {p.id: 1 for p in products if p.category == category and p.colour == colour}))
    return out


@dataclass
class TokenQueries:
    queries: list[BenchQuery]  # TOKEN_KINDS queries, concept by concept
    tokens: Any  # engine.tokens.TokenSet: the tokens they name, for the query service
    report: dict[str, Any]  # what was looked up and found (the JSON's custom_token_queries)


def token_queries(world, backbone, rc: "RelevanceConfig") -> TokenQueries:
    """Queries for each held-out product of the world whose token (ours, training seed `rc.token_seed`, trained
    `rc.token_steps` steps on this backbone) is in the quality benchmark's cache, found by that benchmark's key."""
    from bench.quality import Task, backbone_key, cache_path
    from engine.tokens import TokenSet, load_token
    from world.vocab import CONTEXTS

    tokens, queries, found = TokenSet(), [], []
    report: dict[str, Any] = {"cache": rc.token_cache, "method": OURS, "training_seed": rc.token_seed,
                              "steps": rc.token_steps}
    if rc.token_cache:
        qc = QualityConfig(backbone=rc.backbone, world_seed=rc.world_seed, seeds=(rc.token_seed,),
                           steps=rc.token_steps, cache=rc.token_cache)
        key = backbone_key(backbone)
        for pid in world.splits.heldout:
            path = cache_path(qc, Task(rc.token_seed, pid, OURS), key)
            if not path.is_file():
                continue
            token = load_token(path, backbone_id=backbone.id)
            tokens.add(token)
            found.append(pid)
            base = f"{token.placeholder} {token.meta.parent}"
            queries.append(BenchQuery("token", base, {pid: 3}))
            for photo_id in world.splits.query[pid]:
                scene = CONTEXTS[world.photo(photo_id).context][0]
                queries.append(BenchQuery("token+scene", f"{base} {scene}", {pid: 3}))
    report["concepts"] = found
    if not found:
        report["note"] = (f"skipped: the quality benchmark's cache (--token-cache) holds no {OURS} token of "
                          f"training seed {rc.token_seed} and {rc.token_steps} steps for world {rc.world_seed} and "
                          f"backbone {rc.backbone!r}; fill it with `coinage bench quality --world-seed "
                          f"{rc.world_seed} --cache DIR` (about 2,800 s for 20 concepts x 3 seeds x 4 methods on "
                          "a 2-core machine)")
    return TokenQueries(queries, tokens, report)


def misspell(text: str, rng: random.Random) -> str:
    """One typo in each word of 4+ letters: a deletion, a swap of neighbours, a substitution or an insertion."""
    def typo(m: re.Match) -> str:
        w = m.group(0)
        if len(w) < 4:
            return w
        i = rng.randrange(1, len(w) - 1)  # keep the first letter, as people mostly do
        op = rng.choice(("delete", "swap", "substitute", "insert"))
        if op == "delete":
            return w[:i] + w[i + 1:]
        if op == "swap":
            return w[:i] + w[i + 1] + w[i] + w[i + 2:]
        if op == "substitute":
            return w[:i] + rng.choice([c for c in LETTERS if c != w[i].lower()]) + w[i + 1:]
        return w[:i] + rng.choice(LETTERS) + w[i:]

    return re.sub(r"[A-Za-z]+", typo, text)


# ---------------------------------------------------------------- metrics


def metrics(query: BenchQuery, ranked: Sequence[str], photo_products: Sequence[str]) -> dict[str, float]:
    gains = [2 ** query.grades.get(pid, 0) - 1 for pid in ranked[:10]]
    ideal = sorted((2 ** g - 1 for g in query.grades.values()), reverse=True)[:10]
    dcg = sum(g / math.log2(i + 2) for i, g in enumerate(gains))
    idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
    top = [pid for pid, g in query.grades.items() if g == query.top]
    first = next((i for i, pid in enumerate(ranked) if query.grades.get(pid) == query.top), None)
    found = sum(1 for pid in ranked[:10] if query.grades.get(pid) == query.top)
    return {"ndcg10": dcg / idcg if idcg else 0.0, "mrr": 1.0 / (first + 1) if first is not None else 0.0,
            "r10": found / min(10, len(top)), "repeat12": repeat_share(ranked[:PAGE]),
            "repeat12_photos": repeat_share(photo_products[:PAGE])}


def sorted_metrics(query: BenchQuery, ranked: Sequence[str]) -> dict[str, float]:
    """A price-sorted list against the query's grades: precision of the first page, relevant and top-grade kept."""
    page = ranked[:PAGE]
    relevant = [pid for pid, g in query.grades.items() if g >= 1]
    top = [pid for pid, g in query.grades.items() if g == query.top]
    kept = set(ranked)
    precision = sum(1 for pid in page if query.grades.get(pid, 0) >= 1) / len(page) if page else 0.0
    rel_kept = sum(pid in kept for pid in relevant) / len(relevant)
    return {"p12": precision, "relevant_kept": rel_kept, "top_kept": sum(pid in kept for pid in top) / len(top),
            "f": 2 * precision * rel_kept / (precision + rel_kept) if precision + rel_kept else 0.0,
            "shown": float(len(ranked))}


def evaluate_sorted(service, queries: list[BenchQuery]) -> dict[str, dict[str, float]]:
    """Per kind, the means of sorted_metrics over the queries, price low to high at retrieval 'auto'."""
    from engine.query import SearchRequest

    per_query = []
    for q in queries:
        page = service.search(SearchRequest(q.text, gair=False, retrieval="auto", limit=SORT_DEPTH, facets=False,
                                            sort="price_asc"))
        per_query.append((q, sorted_metrics(q, [p.product_id for p in page.products])))
    return summarise(per_query)


def repeat_share(products: Sequence[str]) -> float:
    """Share of the slots that show a product already shown higher up."""
    seen: set[str] = set()
    repeats = 0
    for pid in products:
        repeats += pid in seen
        seen.add(pid)
    return repeats / len(products) if products else 0.0


def summarise(per_query: list[tuple[BenchQuery, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Per kind, the mean of each metric over its queries."""
    kinds = dict.fromkeys(q.kind for q, _ in per_query)
    return {k: {m: round(statistics.fmean(v[m] for q, v in per_query if q.kind == k), 4)
                for m in next(v for q, v in per_query if q.kind == k)} for k in kinds}


# ---------------------------------------------------------------- the store and the service


@dataclass(frozen=True)
class RelevanceConfig:
    backbone: str = "world"  # backbone that embeds the photos and the queries
    world_seed: int = 0  # the world the catalog and the queries come from
    queries: int = 60  # products drawn per query kind (each also gives a misspelt query)
    fusions: tuple[str, ...] = ("rrf:60", "rrf:60:2:1", "rrf:60:1:2", "rrf:10", "dbsf")  # hybrid settings compared
    latency_products: tuple[int, ...] = ()  # synthetic catalog sizes for p50/p95 (e.g. 10000 100000)
    latency_photos: int = 2  # photos per synthetic product
    latency_queries: int = 100  # timed queries per retrieval and size
    token_cache: str | None = None  # the quality benchmark's token cache (custom-token queries); None: skip them
    token_steps: int = QualityConfig.steps  # training steps of the cached tokens (the quality run's --steps)
    token_seed: int = QualityConfig.seeds[0]  # training seed of the cached tokens used (the quality run's first)
    threads: int = 2  # torch threads
    # relevance floors of the price-sorted evaluation (QueryConfig.sort_floor rules); () = 'none' and the default
    sort_floors: tuple[str, ...] = ()
    # page-depth metrics (bench/pages.py) on both backends for these fusions; () = skip them
    pages: tuple[str, ...] = ()
    # price-sorted evaluation also at these windows (QueryConfig.sort_window), with the default floor; () = skip
    sort_windows: tuple[int, ...] = ()


def parse_floor(spec: str) -> str:
    """A relevance floor rule of engine.query.floor (--sort-floors)."""
    from engine.query.floor import parse_rule

    try:
        parse_rule(spec)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return spec


def parse_fusion(spec: str):
    """'rrf:K', 'rrf:K:WD:WS' (dense, sparse weights) or 'dbsf' -> engine.store.Fusion."""
    from engine.store import Fusion

    parts = spec.split(":")
    try:
        if parts[0] == "dbsf" and len(parts) == 1:
            return Fusion("dbsf")
        if parts[0] == "rrf" and len(parts) in (2, 4):
            weights = (float(parts[2]), float(parts[3])) if len(parts) == 4 else None
            return Fusion("rrf", int(parts[1]), weights)
    except ValueError as e:
        raise SystemExit(f"--fusion {spec!r}: {e}") from e
    raise SystemExit(f"--fusion {spec!r}: use rrf:K, rrf:K:DENSE_WEIGHT:SPARSE_WEIGHT or dbsf")


def fusion_config(spec: str) -> dict[str, Any]:
    f = parse_fusion(spec)
    return {"fusion": f.method, "rrf_k": f.rrf_k, "fusion_weights": f.weights}


def load_catalog(store, collection: str, rows: list[dict], vectors, dim: int) -> None:
    """What the indexer writes for these rows: image vector, BM25 vector, payload; the spelling vocabulary."""
    import numpy as np

    from engine.lexical import embed_document
    from engine.product import PAYLOAD_INDEXES
    from engine.spelling import Vocabulary
    from engine.store import Point, point_id

    store.create_collection(collection, dim=dim, payload_indexes=PAYLOAD_INDEXES)
    vocabulary = Vocabulary()
    batch = []
    for row, vec in zip(rows, vectors):
        vocabulary.add(row)
        batch.append(Point(point_id(row["id"]), np.asarray(vec, np.float32), row, embed_document(row)))
        if len(batch) >= 2048:
            store.upsert(collection, batch)
            batch = []
    store.upsert(collection, batch)
    store.set_metadata(collection, vocabulary.to_metadata())
    store.optimize(collection)


def photo_vectors(backbone, world, photos) -> Any:
    from engine.images import ImageEncoder
    from world.render import render

    images = ImageEncoder(backbone)
    feats = [images.encode_pil([render(ph, 64) for ph in photos[i:i + 256]]).float().numpy()
             for i in range(0, len(photos), 256)]
    import numpy as np

    return np.concatenate(feats)


def evaluate(service, queries: list[BenchQuery], retrieval: str,
             correct: bool = True) -> list[tuple[BenchQuery, dict[str, float]]]:
    from engine.query import SearchRequest

    out = []
    for q in queries:
        page = service.search(SearchRequest(q.text, gair=False, retrieval=retrieval, limit=DEPTH, facets=False,
                                            correct=correct))
        photos = service.search(SearchRequest(q.text, gair=False, retrieval=retrieval, limit=PAGE, mode="photos",
                                              facets=False, correct=correct))
        out.append((q, metrics(q, [p.product_id for p in page.products],
                               [r.payload["product_id"] for r in photos.results])))
    return out


def log(message: str) -> None:
    print(f"[relevance] {message}", file=sys.stderr, flush=True)


def run(rc: RelevanceConfig) -> dict[str, Any]:
    import torch

    from engine.loading import load_backbone
    from engine.query import QueryConfig, QueryService
    from engine.store import StoreConfig, open_store
    from world.build import make_world
    from world.catalog import catalog_rows

    torch.set_num_threads(rc.threads)
    start = time.perf_counter()
    world = make_world(rc.world_seed)
    rows = catalog_rows(world)  # every photo of every product, the held-out ones (the token queries' concepts) too
    # the diffusion weights are part of the quality benchmark's cache key (backbone_key), so load them for it
    backbone = load_backbone(rc.backbone, device="cpu", with_diffusion=bool(rc.token_cache))
    t = time.perf_counter()
    vectors = photo_vectors(backbone, world, world.photos)
    embed_seconds = time.perf_counter() - t
    queries = make_queries(world, rows, rc.queries, rc.world_seed)
    custom = token_queries(world, backbone, rc)
    queries_all = queries + custom.queries
    log(f"world {rc.world_seed}: {len(world.products)} products, {len(rows)} photos, {len(queries)} queries, "
        f"{len(custom.queries)} custom-token queries ({len(custom.tokens)} cached tokens)")
    base = bench_config()
    # the concepts' training photos, as the registry gives them to the app's query service (the product default
    # fuses them into token queries, QueryConfig.concept_photo_weight)
    row = {ph.id: i for i, ph in enumerate(world.photos)}
    features = {t.placeholder: torch.from_numpy(vectors[[row[ph] for ph in world.splits.concept[t.placeholder[1:-1]]]])
                for t in custom.tokens}
    with tempfile.TemporaryDirectory() as tmp, open_store(StoreConfig(path=tmp)) as store:
        load_catalog(store, "products", rows, vectors, backbone.embed_dim)
        results = compare(backbone, store, custom.tokens, base, queries_all, rc.fusions, features)
        from bench.relevance_shopper import run_shopper  # what shoppers type (issue 26): understanding on and off

        results["shopper"] = run_shopper(QueryService(backbone, store, custom.tokens, features, base), world, rows,
                                         rc.queries, rc.world_seed, custom.queries)
        floors = rc.sort_floors or ("none", base.sort_floor)
        sort_qs = sort_queries(world, rc.queries, rc.world_seed) + [q for q in queries_all if "+typo" not in q.kind]
        results["sorted_by_price"] = {}
        for z in floors:
            service = QueryService(backbone, store, custom.tokens, features, dataclasses.replace(base, sort_floor=z))
            results["sorted_by_price"][z] = evaluate_sorted(service, sort_qs)
            log(f"sorted by price, floor {z}: {results['sorted_by_price'][z]}")
        for w in rc.sort_windows:
            name = f"{base.sort_floor}@window{w}"
            service = QueryService(backbone, store, custom.tokens, features, dataclasses.replace(base, sort_window=w))
            results["sorted_by_price"][name] = evaluate_sorted(service, sort_qs)
            log(f"sorted by price, {name}: {results['sorted_by_price'][name]}")
        if rc.pages:
            results["pages"] = page_depth(rc, backbone, store, rows, vectors, custom, features, base,
                                          [q for q in queries if "+typo" not in q.kind] + sort_queries(
                                              world, rc.queries, rc.world_seed))
    scale = {}
    from bench.relevance_latency import scaled_latency

    for products in rc.latency_products:
        scale[str(products)] = scaled_latency(rc, backbone, rows, vectors, queries, products, base)
        log(f"latency at {products} products: {scale[str(products)]}")
    return {"config": dataclasses.asdict(rc),
            "world": {"seed": rc.world_seed, "products": len(world.products), "photos": len(rows)},
            "queries_per_kind": rc.queries, "depth": DEPTH, "sort_floor_default": base.sort_floor,
            "results": results,
            "custom_token_queries": custom.report,
            "latency": scale, "examples": {k: next(q.text for q in queries_all if q.kind == k)
                                           for k in dict.fromkeys(q.kind for q in queries_all)},
            "seconds": {"photo_embedding": round(embed_seconds, 1), "total": round(time.perf_counter() - start, 1)}}


def page_depth(rc: RelevanceConfig, backbone, store, rows, vectors, custom, features, base,
               queries: list[BenchQuery]) -> dict[str, Any]:
    """bench/pages.py's metrics per fusion of rc.pages, on `store` (embedded) and the same catalog in the server
    backend's stand-in (qdrant-client in memory)."""
    from bench import pages
    from engine.query import QueryService
    from engine.store import StoreConfig, open_store

    category_of = {r["product_id"]: r["category"] for r in rows}
    out = {}
    with open_store(StoreConfig(backend="server", url=":memory:")) as server:
        load_catalog(server, "products", rows, vectors, backbone.embed_dim)
        for spec in rc.pages:
            config = dataclasses.replace(base, **fusion_config(spec))
            services = {name: QueryService(backbone, s, custom.tokens, features, config)
                        for name, s in (("embedded", store), ("server", server))}
            out[spec] = pages.measure(services, queries, category_of)
            log(f"pages, {spec}: {out[spec]}")
    return out


def compare(backbone, store, tokens, base, queries: list[BenchQuery], fusions: Sequence[str],
            features: dict | None = None) -> dict[str, Any]:
    """Summaries per retrieval over the store's "products" collection: dense, lexical, dense on the query as typed,
    and hybrid for each fusion; `tokens` (engine.tokens.TokenSet) are the custom tokens the queries may name and
    `features` their concepts' training-photo features (what the registry serves the app). With tokens, also dense
    on the token queries with q(w) alone (concept_photo_weight 0: the paper's ours, the default before)."""
    from engine.query import QueryService

    service = QueryService(backbone, store, tokens, features, base)
    results: dict[str, Any] = {}
    for retrieval in ("dense", "lexical"):
        results[retrieval] = summarise(evaluate(service, queries, retrieval))
        log(f"{retrieval}: {results[retrieval]}")
    # before this change: CLIP alone on the query as typed (no typo correction)
    # what a shopper meets: retrieval 'auto' (dense for a custom-token query, hybrid otherwise) at the defaults
    results["auto"] = summarise(evaluate(service, queries, "auto"))
    log(f"auto: {results['auto']}")
    results["dense_as_typed"] = summarise(evaluate(service, queries, "dense", correct=False))
    log(f"dense as typed: {results['dense_as_typed']}")
    token_queries = [q for q in queries if q.kind in TOKEN_KINDS]
    if token_queries:
        alone = QueryService(backbone, store, tokens, features, dataclasses.replace(base, concept_photo_weight=0))
        results["dense_token_alone"] = summarise(evaluate(alone, token_queries, "dense"))
        log(f"dense, token alone: {results['dense_token_alone']}")
    hybrid = {}
    for spec in fusions:
        fused = QueryService(backbone, store, tokens, features, dataclasses.replace(base, **fusion_config(spec)))
        hybrid[spec] = summarise(evaluate(fused, queries, "hybrid"))
        log(f"hybrid {spec}: {hybrid[spec]}")
    results["hybrid"] = hybrid
    return results


# ---------------------------------------------------------------- command line


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = RelevanceConfig()
    p.add_argument("--backbone", default=d.backbone)
    p.add_argument("--world-seed", type=int, default=d.world_seed)
    p.add_argument("--queries", type=int, default=d.queries, help="products drawn per query kind")
    p.add_argument("--fusion", nargs="+", default=list(d.fusions),
                   help="hybrid settings to compare: rrf:K, rrf:K:DENSE_W:SPARSE_W or dbsf")
    p.add_argument("--latency-products", type=int, nargs="*", default=list(d.latency_products))
    p.add_argument("--latency-photos", type=int, default=d.latency_photos)
    p.add_argument("--latency-queries", type=int, default=d.latency_queries)
    p.add_argument("--token-cache", default=None, help="the quality benchmark's token cache directory "
                                                        "(`coinage bench quality --cache`): custom-token queries")
    p.add_argument("--token-steps", type=int, default=d.token_steps,
                   help="training steps of the cached tokens (the quality run's --steps)")
    p.add_argument("--token-seed", type=int, default=d.token_seed,
                   help="training seed of the cached tokens to use (one of the quality run's --seeds)")
    p.add_argument("--threads", type=int, default=d.threads)
    p.add_argument("--sort-floors", type=parse_floor, nargs="+", default=list(d.sort_floors),
                   help="relevance floors of the price-sorted evaluation: gap, z:K or none (engine.query.floor; "
                        "default: none and the shipped QueryConfig.sort_floor)")
    p.add_argument("--sort-windows", type=int, nargs="*", default=list(d.sort_windows), metavar="N",
                   help="price-sorted evaluation also at these candidate windows (QueryConfig.sort_window), e.g. 1024")
    p.add_argument("--pages", nargs="*", default=list(d.pages), metavar="FUSION",
                   help="page-depth metrics (repeats across pages 1-3, past the end, both backends, count precision; "
                        "bench/pages.py) for these fusions, e.g. --pages rrf:60 dbsf")
    p.add_argument("--out", help="JSON report (default bench/results/relevance.json; relevance-world<N>.json "
                                 "for other seeds)")


def run_command(args: argparse.Namespace, prog: str = "coinage bench relevance") -> int:
    """Run the benchmark for parsed `args`; `prog` is the caller's name for itself (the report's command is always
    the `coinage bench relevance` one)."""
    rc = RelevanceConfig(args.backbone, args.world_seed, args.queries, tuple(args.fusion),
                         tuple(args.latency_products), args.latency_photos, args.latency_queries, args.token_cache,
                         args.token_steps, args.token_seed, args.threads, tuple(args.sort_floors),
                         tuple(args.pages), tuple(args.sort_windows))
    report = run(rc)
    out = args.out or RESULTS / ("relevance.json" if rc.world_seed == 0 else f"relevance-world{rc.world_seed}.json")
    # the benchmark's own arguments, whether run as `coinage bench relevance ...` or `python -m bench.relevance ...`
    own = sys.argv[3:] if sys.argv[1:3] == ["bench", "relevance"] else sys.argv[1:]
    path = write_result("relevance", report, own, out)
    print(table(report))
    print(f"wrote {path}", file=sys.stderr)
    return 0


def table(report: dict[str, Any]) -> str:
    lines = ["| retrieval | kind | nDCG@10 | MRR | R@10 | repeats in 12 (page) | repeats in 12 (photos) |",
             "|---|---|---|---|---|---|---|"]
    rows = [("dense, as typed (before)", report["results"]["dense_as_typed"]), ("dense", report["results"]["dense"]),
            ("lexical", report["results"]["lexical"])]
    if "auto" in report["results"]:
        rows.insert(0, ("auto (the default: dense for a token, else hybrid)", report["results"]["auto"]))
    if "dense_token_alone" in report["results"]:
        rows.append(("dense, token without its concept's photos (before)", report["results"]["dense_token_alone"]))
    rows += [(f"hybrid {spec}", r) for spec, r in report["results"]["hybrid"].items()]
    for name, by_kind in rows:
        for kind, m in by_kind.items():
            lines.append(f"| {name} | {kind} | {m['ndcg10']:.3f} | {m['mrr']:.3f} | {m['r10']:.3f} | "
                         f"{m['repeat12']:.2f} | {m['repeat12_photos']:.2f} |")
    floors = report["results"].get("sorted_by_price")
    if floors:
        lines += ["", "Sorted by price, low to high (retrieval auto):", "",
                  "| floor | kind | precision, first 12 | relevant kept | top grade kept | F | products listed |",
                  "|---|---|---|---|---|---|---|"]
        for floor, by_kind in floors.items():
            name = f"{floor} (default)" if floor == report.get("sort_floor_default") else floor
            for kind, m in by_kind.items():
                lines.append(f"| {name} | {kind} | {m['p12']:.3f} | {m['relevant_kept']:.3f} | {m['top_kept']:.3f} "
                             f"| {m['f']:.3f} | {m['shown']:.1f} |")
            mean_f = statistics.fmean(m["f"] for m in by_kind.values())
            lines.append(f"| {name} | **mean F over kinds** | | | | **{mean_f:.3f}** | |")
    if report["results"].get("pages"):
        from bench import pages

        lines += ["", "Pages 1-3, counts and facets (retrieval auto, 12 products a page):", "",
                  pages.table(report["results"]["pages"])]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.relevance", description=__doc__.splitlines()[0])
    add_arguments(p)
    return run_command(p.parse_args(argv), "python -m bench.relevance")


if __name__ == "__main__":
    raise SystemExit(main())
