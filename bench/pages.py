"""Page-depth metrics of `coinage bench relevance --pages`: what a shopper meets past page one, on both backends.

For the first 10 queries of each kind (the word kinds without typos, and the category + colour queries of the
price-sorted evaluation), at the shipped defaults (retrieval 'auto', relevance order, 12 products a page), per fusion and
store backend (embedded, and the server backend's stand-in: qdrant-client in memory, the same catalog):

- repeats: the share of the slots of pages 1-3 that show a product an earlier page (or slot) already showed;
- past the end: the service is paged (50 a page) until it offers no next page (at most 8 pages), then the page
  after the last one is asked for: clean when it is empty, offers no next page and carries no note;
- backends identical: the share of queries whose pages 1-3 list the same products in the same order on both
  backends;
- count precision (category + attribute queries, and category + colour): the share of the counted products
  (the facet count: what "N products" says) in the query's category, and the share of the query's top-grade
  products among the first N ranked products (every top-grade product kept is 1.0); and the same two for each
  relevance floor rule of `FLOORS` applied to the relevance-ordered list's scores (how the rule was chosen).

It reads only the search service's public response (products, next_offset, notes, facets), so the same code
measures the code before a change (run with that code's `engine` on the path).
"""
from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from typing import Any

PAGE = 12  # products a page (the web UI's)
PAGES = 3  # pages read for repeats and congruence
STEP = 50  # products a page when walking to the end of a list
MAX_STEPS = 8  # pages of STEP walked to find the end of a list
PER_KIND = 10  # queries per kind measured (the first ones of the benchmark's draw)
FLOORS = ("gap", "z:1", "z:2", "none")  # relevance floor rules compared on the relevance-ordered list
COUNT_KINDS = ("attributes", "attributes+scene", "category", "colour")  # kinds whose queries name a category


def walk(service, text: str) -> dict[str, Any]:
    """Pages 1-3 of the query, its facets, and the page after its last one."""
    from engine.query import SearchRequest

    def at(offset: int, limit: int = PAGE, facets: bool = False):
        return service.search(SearchRequest(text, gair=False, limit=limit, offset=offset, facets=facets))

    first = at(0, facets=True)
    pages = [[p.product_id for p in first.products]] + [[p.product_id for p in at(k * PAGE).products]
                                                         for k in range(1, PAGES)]
    listed: list[str] = []
    scores: list[float] = []
    offset, response, walked = 0, None, 0
    while walked < MAX_STEPS and (response is None or response.next_offset is not None):
        offset = 0 if response is None else response.next_offset
        response = at(offset, STEP)
        listed += [p.product_id for p in response.products]
        scores += [p.score for p in response.products]
        walked += 1
    past = at(offset + len(response.products), STEP) if response.next_offset is None else None
    clean = past is not None and not past.products and past.next_offset is None and not past.notes
    counted = first.facets.products if first.facets is not None else 0
    return {"pages": pages, "past_clean": clean, "reached_end": past is not None,
            "category_counts": dict(first.facets.values.get("category", {})) if first.facets else {},
            "counted": counted, "ranked": listed[:counted], "listed": listed, "scores": scores}


def repeats(pages: Sequence[Sequence[str]]) -> float:
    shown = [pid for page in pages for pid in page]
    return (len(shown) - len(set(shown))) / len(shown) if shown else 0.0


def measure(services: Mapping[str, Any], queries, category_of: Mapping[str, str]) -> dict[str, Any]:
    """Per backend and kind: repeat share, past-the-end clean share, count precision, top grade kept; and the
    share of queries whose pages 1-3 agree across the backends. `services`: backend name -> QueryService."""
    queries = first_per_kind(queries, PER_KIND)
    walks = {name: [walk(service, q.text) for q in queries] for name, service in services.items()}
    out: dict[str, Any] = {}
    kinds = list(dict.fromkeys(q.kind for q in queries))
    for name, runs in walks.items():
        per_kind = {}
        for kind in kinds:
            rows = [(q, w) for q, w in zip(queries, runs, strict=True) if q.kind == kind]
            m = {"repeats_pages_1_3": statistics.fmean(repeats(w["pages"]) for _, w in rows),
                 "past_the_end_clean": statistics.fmean(float(w["past_clean"]) for _, w in rows),
                 "counted_products": statistics.fmean(w["counted"] for _, w in rows)}
            if kind in COUNT_KINDS:
                m["count_in_category"] = statistics.fmean(_in_category(q, w, category_of) for q, w in rows)
                m["top_grade_counted"] = statistics.fmean(_top_kept(q, w) for q, w in rows)
                for rule in FLOORS:  # the floor rules side by side, on the listed products' scores
                    m[f"in_category@{rule}"] = statistics.fmean(_rule_share(q, w, category_of, rule) for q, w in rows)
                    m[f"top_grade@{rule}"] = statistics.fmean(_rule_top(q, w, rule) for q, w in rows)
                    m[f"counted@{rule}"] = statistics.fmean(_rule_n(w, rule) for _, w in rows)
            per_kind[kind] = {k: round(v, 4) for k, v in m.items()}
        out[name] = per_kind
    if len(walks) == 2:
        a, b = walks.values()
        out["backends_identical_pages_1_3"] = round(statistics.fmean(
            float(x["pages"] == y["pages"]) for x, y in zip(a, b, strict=True)), 4)
        out["backends_differ"] = [_difference(q.text, x, y) for q, x, y in zip(queries, a, b, strict=True)
                                  if x["pages"] != y["pages"]]
    return out


def _difference(text: str, x: dict[str, Any], y: dict[str, Any]) -> dict[str, Any]:
    """Where two backends' pages of one query part: the first differing rank of the walk, and both lists' product
    and score there (a score gap of float rounding says the engines' arithmetic, not the request, differs)."""
    at = next((k for k, (p, q) in enumerate(zip(x["listed"], y["listed"])) if p != q),
              min(len(x["listed"]), len(y["listed"])))
    near = slice(max(0, at - 1), at + 2)
    return {"query": text, "rank": at + 1, "a": list(zip(x["listed"][near], x["scores"][near])),
            "b": list(zip(y["listed"][near], y["scores"][near]))}


def first_per_kind(queries, n: int) -> list:
    seen: dict[str, int] = {}
    out = []
    for q in queries:
        if seen.get(q.kind, 0) < n:
            out.append(q)
            seen[q.kind] = seen.get(q.kind, 0) + 1
    return out


def _rule_n(run: Mapping[str, Any], rule: str) -> int:
    from engine.query.floor import kept

    return kept(run["scores"], rule)


def _rule_share(query, run: Mapping[str, Any], category_of: Mapping[str, str], rule: str) -> float:
    category = category_of[next(iter(query.grades))]
    listed = run["listed"][:_rule_n(run, rule)]
    return sum(category_of[p] == category for p in listed) / len(listed) if listed else 0.0


def _rule_top(query, run: Mapping[str, Any], rule: str) -> float:
    top = [pid for pid, g in query.grades.items() if g == query.top]
    listed = set(run["listed"][:_rule_n(run, rule)])
    return sum(pid in listed for pid in top) / len(top)


def _in_category(query, run: Mapping[str, Any], category_of: Mapping[str, str]) -> float:
    category = category_of[next(iter(query.grades))]
    counts = run["category_counts"]
    total = sum(counts.values())
    return counts.get(category, 0) / total if total else 0.0


def _top_kept(query, run: Mapping[str, Any]) -> float:
    top = [pid for pid, g in query.grades.items() if g == query.top]
    counted = set(run["ranked"])
    return sum(pid in counted for pid in top) / len(top)


def table(report: Mapping[str, Any]) -> str:
    """Markdown: one row per fusion, backend and kind."""
    lines = ["| fusion | backend | kind | repeats, pages 1-3 | past the end clean | counted | in category | "
             "top grade counted |", "|---|---|---|---|---|---|---|---|"]
    for fusion, by_backend in report.items():
        for backend, by_kind in by_backend.items():
            if backend in ("backends_identical_pages_1_3", "backends_differ"):
                continue
            for kind, m in by_kind.items():
                lines.append(f"| {fusion} | {backend} | {kind} | {m['repeats_pages_1_3']:.3f} | "
                             f"{m['past_the_end_clean']:.2f} | {m['counted_products']:.1f} | "
                             f"{_cell(m, 'count_in_category')} | {_cell(m, 'top_grade_counted')} |")
        if "backends_identical_pages_1_3" in by_backend:
            lines.append(f"| {fusion} | **both identical, pages 1-3** | all | "
                         f"{by_backend['backends_identical_pages_1_3']:.2f} | | | | |")
    lines += ["", "| fusion | backend | kind | " + " | ".join(f"{r}: counted / in category / top grade" for r in FLOORS)
              + " |", "|---|---|---|" + "---|" * len(FLOORS)]
    for fusion, by_backend in report.items():
        for backend, by_kind in by_backend.items():
            if backend in ("backends_identical_pages_1_3", "backends_differ"):
                continue
            for kind, m in by_kind.items():
                if f"counted@{FLOORS[0]}" in m:
                    cells = [f"{m[f'counted@{r}']:.1f} / {m[f'in_category@{r}']:.3f} / {m[f'top_grade@{r}']:.3f}"
                             for r in FLOORS]
                    lines.append(f"| {fusion} | {backend} | {kind} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _cell(m: Mapping[str, float], key: str) -> str:
    return f"{m[key]:.3f}" if key in m else ""
