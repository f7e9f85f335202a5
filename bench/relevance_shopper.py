"""What shoppers type (issue 26): query kinds of `coinage bench relevance` generated from the world, each run with
query understanding on (the product) and off (`understand=False`: the text searched as typed, the path before).

    coinage bench relevance_shopper --world-seed 0 [--queries 40] [--token-cache bench/cache/quality]
    (and within `coinage bench relevance`: results.shopper)

Kinds, for products drawn with a seeded RNG:
- price: "purple dress under 60", "mug below $20", "cheap mug", "lamp over 100" (phrasings in turn); the
  constraints: the category named and the price bound;
- price_range: "dress between 40 and 80", "mug 10-20", "lamp from $50 to $90": the category and both bounds;
- negation: "dotted dress not purple" (the category and pattern, not the colour) and "purple dress without
  dots" (the category and colour, not the pattern);
  for these three: the share of the first min(12, R) products meeting every constraint (R: how many do);
- identifier: the product id typed ("p0042"): MRR of that product;
- concept_word: the custom-token queries of `--token-cache` without brackets ("p0042 dress on a beach") beside
  the bracketed form (concept_bracketed); nDCG@10, grade 3 for the concept's product;
- name_typo2: a product name with two typos in its longest word, beside name_clean;
- category_typo: a bare category misspelt ("sneekr", "backpak", plural or not), beside category_clean;
- plural: "purple dresses", beside plural_clean "purple dress";
- loose: "looking for a dress in purple, dots", beside loose_clean "purple dotted dress";
  for these: nDCG@10 (grades as bench.relevance: 3 name, 2 all attributes, 1 the category and one more).
- concept_catalog_word (with --token-cache): a concept whose name is also an ordinary catalog word. Each cached
  token is registered again under a product-line word of the catalog ("willow": the commonest line words, in
  order, none in the concept's own product name); the token's name is arbitrary (the shop picks it), so re-using
  a trained token under another name is honest. Its queries typed as that word ("willow dress on a beach") beside
  the bracketed form (concept_catalog_word_bracketed); and the product names holding the word ("Willow Striped
  Mug", grade 3 for products of that name) searched with the concept registered (word_meant_concept_on: the
  concept wins) and without it (word_meant_concept_off): what a shopper who meant the word loses; nDCG@10.
  Each QueryConfig.concept_word_reading is measured on the same service and queries (`readings`).
Also the p50/p95 of the understanding stage itself (engine.query.understand over the catalog words).
"""
from __future__ import annotations

import argparse
import json
import random
import re
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bench.relevance import BenchQuery, log, metrics, name_of
from engine.query.config import CONCEPT_WORD_READINGS

PAGE = 12
CONSTRAINT_KINDS = ("price", "price_range", "negation")
RANKED_KINDS = ("identifier", "concept_word", "concept_bracketed", "name_typo2", "name_clean", "category_typo",
                "category_clean", "plural", "plural_clean", "loose", "loose_clean")
PRICE_PHRASES = ("{c} under {x}", "{c} below ${x}", "{c} less than {x} dollars", "{c} up to {x}", "{c} over {x}",
                 "{c} at least ${x}")
RANGE_PHRASES = ("{c} between {a} and {b}", "{c} {a}-{b}", "{c} from ${a} to ${b}")
PATTERN_NOUNS = {"striped": "stripes", "dotted": "dots", "checked": "checks", "zigzag": "zigzags"}


@dataclass(frozen=True)
class ShopperQuery:
    kind: str
    text: str
    ok: frozenset[str] = frozenset()  # constraint kinds: the products meeting every constraint
    grades: dict[str, int] | None = None  # ranked kinds: product id -> grade


def make_shopper_queries(world, rows: list[dict], n: int, seed: int) -> list[ShopperQuery]:
    from world.vocab import CATEGORY_NOUNS

    products = world.products
    price = {r["product_id"]: r["price"] for r in rows}
    title = {r["product_id"]: r["title"] for r in rows}
    noun = {c: CATEGORY_NOUNS[c][0] for c in CATEGORY_NOUNS}
    out: list[ShopperQuery] = []

    def rng(kind: str) -> random.Random:
        return random.Random(f"coinage-shopper:{seed}:{kind}")

    r = rng("price")
    for i, p in enumerate(r.sample(products, min(n, len(products)))):
        same = sorted(price[q.id] for q in products if q.category == p.category)
        x = int(same[len(same) // 2] // 5 * 5) or 5
        form = PRICE_PHRASES[i % len(PRICE_PHRASES)]
        below = "over" not in form and "least" not in form
        text = form.format(c=f"{p.colour} {noun[p.category]}" if i % 2 else noun[p.category], x=x)
        ok = {q.id for q in products if q.category == p.category and (price[q.id] <= x if below else price[q.id] >= x)}
        out.append(ShopperQuery("price", text, frozenset(ok)))
    r = rng("range")
    for i, p in enumerate(r.sample(products, min(n, len(products)))):
        same = sorted(price[q.id] for q in products if q.category == p.category)
        a, b = int(same[len(same) // 4] // 5 * 5), int(same[3 * len(same) // 4] // 5 * 5 + 5)
        text = RANGE_PHRASES[i % len(RANGE_PHRASES)].format(c=noun[p.category], a=a, b=b)
        ok = {q.id for q in products if q.category == p.category and a <= price[q.id] <= b}
        out.append(ShopperQuery("price_range", text, frozenset(ok)))
    r = rng("negation")
    for i, p in enumerate(r.sample(products, min(n, len(products)))):
        if i % 2 and p.pattern in PATTERN_NOUNS:
            text = f"{p.colour} {noun[p.category]} without {PATTERN_NOUNS[p.pattern]}"
            ok = {q.id for q in products if q.category == p.category and q.colour == p.colour
                  and q.pattern != p.pattern}
        else:
            other = r.choice(sorted({q.colour for q in products if q.category == p.category} - {p.colour})
                             or [p.colour])
            pattern = "" if p.pattern == "solid" else f"{p.pattern} "
            text = f"{pattern}{noun[p.category]} not {other}"
            ok = {q.id for q in products if q.category == p.category and q.colour != other
                  and (p.pattern == "solid" or q.pattern == p.pattern)}
        out.append(ShopperQuery("negation", text, frozenset(ok)))
    r = rng("identifier")
    out += [ShopperQuery("identifier", p.id, grades={p.id: 3}) for p in r.sample(products, min(n, len(products)))]
    r = rng("names")
    by_name: dict[str, set[str]] = {}
    for pid, t in title.items():
        by_name.setdefault(name_of(t), set()).add(pid)
    for p in r.sample(products, min(n, len(products))):
        short = name_of(title[p.id])
        grades = dict.fromkeys(by_name[short], 3)
        out.append(ShopperQuery("name_clean", short, grades=grades))
        out.append(ShopperQuery("name_typo2", two_typos(short, r), grades=grades))
    r = rng("category")
    for c in sorted({p.category for p in products}):
        grades = {p.id: 1 for p in products if p.category == c}
        out.append(ShopperQuery("category_clean", noun[c], grades=grades))
        for k in range(2):
            typed = (noun[c] + "s") if k else noun[c]
            out.append(ShopperQuery("category_typo", one_typo(typed, r), grades=grades))
    r = rng("attributes")
    for p in r.sample(products, min(n, len(products))):
        grades = _attr_grades(products, p)
        pattern = "" if p.pattern == "solid" else f"{p.pattern} "
        out.append(ShopperQuery("plural_clean", f"{p.colour} {noun[p.category]}", grades=_colour_grades(products, p)))
        out.append(ShopperQuery("plural", f"{p.colour} {plural(noun[p.category])}", grades=_colour_grades(products, p)))
        out.append(ShopperQuery("loose_clean", f"{p.colour} {pattern}{noun[p.category]}", grades=grades))
        extra = f", {PATTERN_NOUNS[p.pattern]}" if p.pattern in PATTERN_NOUNS else ""
        out.append(ShopperQuery("loose", f"looking for a {noun[p.category]} in {p.colour}{extra}", grades=grades))
    # a constraint no product meets cannot be scored (min(12, R) = 0): such draws are left out
    return [q for q in out if q.kind not in CONSTRAINT_KINDS or q.ok]


def concept_queries(token_qs: Sequence[BenchQuery]) -> list[ShopperQuery]:
    """The custom-token queries with and without brackets ("<p0042> dress" / "p0042 dress")."""
    out = []
    for q in token_qs:
        out.append(ShopperQuery("concept_bracketed", q.text, grades=q.grades))
        out.append(ShopperQuery("concept_word", re.sub(r"<([^<>]+)>", r"\1", q.text), grades=q.grades))
    return out


def catalog_word_concepts(tokens, features, token_qs: Sequence[BenchQuery], rows: list[dict]):
    """The cached tokens registered again under ordinary catalog words (see the module doc), their photo features,
    the concept queries typed both ways, the plain-name queries of each word, and which word each concept got."""
    from collections import Counter

    from engine.tokens import CustomToken, TokenSet

    facet_words = {w.lower() for r in rows for v in (r["category"], r["attributes"].get("colour", ""),
                                                      r["attributes"].get("pattern", "")) for w in v.split()}
    names = sorted({name_of(r["title"]) for r in rows})  # sorted: the words picked do not follow the hash seed
    by_name: dict[str, set[str]] = {}
    for r in rows:
        by_name.setdefault(name_of(r["title"]), set()).add(r["product_id"])
    common = [w for w, _ in Counter(w.lower() for n in names for w in n.split()).most_common()
              if w.isalpha() and w not in facet_words]
    renamed, photos, queries, words = TokenSet(), {}, [], {}
    for token in tokens:
        pid = token.placeholder[1:-1]
        own = {w.lower() for r in rows if r["product_id"] == pid for w in name_of(r["title"]).split()}
        word = next(w for w in common if w not in own and w not in words.values())
        words[token.placeholder] = word
        renamed.add(CustomToken(f"<{word}>", token.vectors, token.meta))
        photos[f"<{word}>"] = features[token.placeholder]
        for q in token_qs:
            if q.text.startswith(token.placeholder):
                queries.append(ShopperQuery("concept_catalog_word", q.text.replace(token.placeholder, word),
                                            grades=q.grades))
                queries.append(ShopperQuery("concept_catalog_word_bracketed",
                                            q.text.replace(token.placeholder, f"<{word}>"), grades=q.grades))
        for name in sorted(n for n in names if word in n.lower().split()):
            queries.append(ShopperQuery("word_meant", name, grades=dict.fromkeys(by_name[name], 3)))
    return renamed, photos, queries, words


def _attr_grades(products, p) -> dict[str, int]:
    grades = {}
    for q in products:
        if q.category != p.category:
            continue
        if q.colour == p.colour and q.pattern == p.pattern:
            grades[q.id] = 2
        elif q.colour == p.colour or q.pattern == p.pattern:
            grades[q.id] = 1
    return grades


def _colour_grades(products, p) -> dict[str, int]:
    return {q.id: 2 if q.colour == p.colour else 1 for q in products if q.category == p.category}


def plural(word: str) -> str:
    return word + ("es" if word.endswith(("s", "sh", "ch", "x")) else "s")


def one_typo(word: str, rng: random.Random) -> str:
    i = rng.randrange(1, len(word) - 1)
    op = rng.choice(("delete", "swap", "substitute"))
    if op == "delete":
        return word[:i] + word[i + 1:]
    if op == "swap":
        return word[:i] + word[i + 1] + word[i] + word[i + 2:]
    return word[:i] + rng.choice([c for c in "aeioubcdklmnrst" if c != word[i]]) + word[i + 1:]


def two_typos(text: str, rng: random.Random) -> str:
    """Two typos in the longest word (two edits of one word: what the speller's two-edit rule covers)."""
    words = text.split()
    i = max(range(len(words)), key=lambda k: len(words[k]))
    words[i] = one_typo(one_typo(words[i], rng), rng) if len(words[i]) >= 5 else words[i]
    return " ".join(words)


def evaluate_shopper(service, queries: list[ShopperQuery], understand: bool) -> dict[str, dict[str, float]]:
    """Per kind: the constraint share (CONSTRAINT_KINDS) or nDCG@10 / MRR (RANKED_KINDS), means over its queries."""
    from engine.query import SearchRequest

    per_kind: dict[str, list[dict[str, float]]] = {}
    for q in queries:
        page = service.search(SearchRequest(q.text, gair=False, limit=50, facets=False, understand=understand))
        ranked = [p.product_id for p in page.products]
        if q.grades is None:
            want = min(PAGE, len(q.ok))  # >= 1: queries no product meets are not generated
            share = sum(pid in q.ok for pid in ranked[:want]) / want
            per_kind.setdefault(q.kind, []).append({"share": share})
        else:
            m = metrics(BenchQuery(q.kind, q.text, q.grades), ranked, ranked)
            per_kind.setdefault(q.kind, []).append({"ndcg10": m["ndcg10"], "mrr": m["mrr"]})
    return {k: {name: round(statistics.fmean(v[name] for v in vals), 4) for name in vals[0]} | {"queries": len(vals)}
            for k, vals in per_kind.items()}


def understand_latency(service, queries: list[ShopperQuery]) -> dict[str, float]:
    """p50/p95 in ms of the understanding stage alone, over every query, catalog words already read."""
    from engine.query.understand import understand

    words, tokens = service.catalog.get(), service.current_tokens()
    times = []
    for _ in range(3):
        for q in queries:
            t = time.perf_counter()
            understand(q.text, words, tokens, service.config)
            times.append((time.perf_counter() - t) * 1000)
    times.sort()
    return {"p50_ms": round(times[len(times) // 2], 3), "p95_ms": round(times[int(len(times) * 0.95)], 3),
            "calls": len(times)}


def run_shopper(service, world, rows: list[dict], n: int, seed: int,
                token_qs: Sequence[BenchQuery] = (), hard_facets: Sequence[str] = ()) -> dict[str, Any]:
    """Both arms (understanding on, off) on the same service and queries, and the stage's latency; with
    `hard_facets`, a third arm where the named values of those facets are hard filters (QueryConfig.facet_filters)."""
    import dataclasses

    from engine.query import QueryService

    queries = make_shopper_queries(world, rows, n, seed) + concept_queries(token_qs)
    out: dict[str, Any] = {}
    arms = [("understand", service, True), ("as_typed", service, False)]
    if hard_facets:
        hard = QueryService(service.backbone, service.store, service._tokens, service._features,
                            dataclasses.replace(service.config, facet_filters=tuple(hard_facets)))
        arms.append(("hard_" + "_".join(hard_facets), hard, True))
    for arm, svc, on in arms:
        out[arm] = evaluate_shopper(svc, queries, on)
        log(f"shopper kinds, {arm}: {out[arm]}")
    if token_qs:
        out["concept_catalog_word"] = concept_as_catalog_word(service, rows, token_qs)
    out["understand_latency"] = understand_latency(service, queries)
    out["examples"] = {k: next(q.text for q in queries if q.kind == k) for k in dict.fromkeys(q.kind for q in queries)}
    return out


def concept_as_catalog_word(service, rows: list[dict], token_qs: Sequence[BenchQuery],
                            readings: Sequence[str] = CONCEPT_WORD_READINGS) -> dict[str, Any]:
    """The concept_catalog_word kinds (module doc): a service whose concepts are named by catalog words, once per
    QueryConfig.concept_word_reading in `readings` (the service's own reading's figures, the default one, also at
    the top level; the first of `readings` when it is not among them),
    beside `service` (the concepts under their own names) for the plain-name queries searched without the
    concept."""
    import dataclasses

    from engine.query import QueryService

    tokens = service.current_tokens()
    features = {t.placeholder: service._features[t.placeholder] for t in tokens}
    renamed, photos, queries, words = catalog_word_concepts(tokens, features, token_qs, rows)
    plain = [q for q in queries if q.kind == "word_meant"]
    off = evaluate_shopper(service, plain, True)
    per_reading = {}
    for reading in dict.fromkeys(readings):
        config = dataclasses.replace(service.config, concept_word_reading=reading)
        on = evaluate_shopper(QueryService(service.backbone, service.store, renamed, photos, config), queries, True)
        per_reading[reading] = {k: v for k, v in on.items() if k != "word_meant"}
        per_reading[reading]["word_meant_concept_on"] = on.get("word_meant")
        log(f"concept named by a catalog word, reading {reading!r}: {per_reading[reading]}")
    headline = service.config.concept_word_reading if service.config.concept_word_reading in per_reading \
        else next(iter(per_reading))
    result = dict(per_reading[headline])
    result["word_meant_concept_off"] = off.get("word_meant")
    result["reading"] = headline
    result["readings"] = per_reading
    result["words"] = words
    result["note"] = ("each trained token is registered again under an ordinary catalog word (a product-line word "
                      "not in its own product's name); a token's name is arbitrary, so re-using a trained token "
                      "under a catalog word is honest. word_meant_*: product names holding the word, searched with "
                      "that concept registered (on) and without it (off). readings: QueryConfig.concept_word_reading "
                      "(both: the concept on the dense side and the word kept for BM25, hybrid; name: both only "
                      "when the word and a neighbour are a product-name phrase; concept: the concept alone)")
    log(f"concept named by a catalog word: {result}")
    return result


def main(argv: list[str] | None = None) -> int:
    """The shopper kinds alone (without the rest of `coinage bench relevance`), on one world seed."""
    import tempfile

    import torch

    from bench.common import RESULTS, write_result
    from bench.relevance import RelevanceConfig, bench_config, load_catalog, photo_vectors, token_queries
    from engine.loading import load_backbone
    from engine.query import QueryService
    from engine.store import StoreConfig, open_store
    from world.build import make_world
    from world.catalog import catalog_rows

    p = argparse.ArgumentParser(prog="coinage bench relevance_shopper", description=__doc__.splitlines()[0])
    p.add_argument("--world-seed", type=int, default=0)
    p.add_argument("--queries", type=int, default=40, help="products drawn per kind")
    p.add_argument("--token-cache", default=None, help="the quality benchmark's token cache (concept_word kinds)")
    p.add_argument("--hard-facets", nargs="*", default=[], help="also run with these facets' named values as hard "
                   "filters (e.g. category), to choose soft or hard by measurement")
    p.add_argument("--only", choices=("concept_catalog_word",), default=None,
                   help="run only these kinds (with --token-cache): the concept named by a catalog word, both "
                   "readings, without the other kinds' two arms (a shorter run)")
    p.add_argument("--readings", nargs="+", choices=CONCEPT_WORD_READINGS, default=list(CONCEPT_WORD_READINGS),
                   help="QueryConfig.concept_word_reading values measured for the concept_catalog_word kinds")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", help="JSON report (default bench/results/relevance_shopper-world<N>.json)")
    args = p.parse_args(argv)
    if args.only and not args.token_cache:
        p.error(f"--only {args.only} needs the concepts: add --token-cache DIR (e.g. bench/cache/quality)")
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    rc = RelevanceConfig(world_seed=args.world_seed, queries=args.queries, token_cache=args.token_cache)
    world = make_world(rc.world_seed)
    rows = catalog_rows(world)
    backbone = load_backbone(rc.backbone, device="cpu", with_diffusion=bool(rc.token_cache))
    vectors = photo_vectors(backbone, world, world.photos)
    custom = token_queries(world, backbone, rc)
    row = {ph.id: i for i, ph in enumerate(world.photos)}
    features = {t.placeholder: torch.from_numpy(vectors[[row[ph] for ph in world.splits.concept[t.placeholder[1:-1]]]])
                for t in custom.tokens}
    with tempfile.TemporaryDirectory() as tmp, open_store(StoreConfig(path=tmp)) as store:
        load_catalog(store, "products", rows, vectors, backbone.embed_dim)
        service = QueryService(backbone, store, custom.tokens, features, bench_config())
        token_qs = [q for q in custom.queries if q.kind in ("token", "token+scene")]
        if args.only == "concept_catalog_word":
            report = {"only": args.only, "concept_catalog_word": concept_as_catalog_word(service, rows, token_qs,
                                                                                          args.readings)}
        else:
            report = run_shopper(service, world, rows, rc.queries, rc.world_seed, token_qs, args.hard_facets)
    report.update({"world_seed": rc.world_seed, "queries_per_kind": rc.queries,
                   "concepts": custom.report.get("concepts", []), "seconds": round(time.perf_counter() - start, 1)})
    out = args.out or RESULTS / f"relevance_shopper-world{rc.world_seed}.json"
    write_result("relevance_shopper", report, sys.argv[1:] if argv is None else argv, out)
    print(json.dumps({k: v for k, v in report.items() if k not in ("examples",)}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
