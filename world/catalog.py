"""Write a world as the shop catalog the indexer ingests, plus splits and hidden truth.

Layout of `out_dir` (same seed and arguments => byte-identical files):

    images/<product_id>/<k>.png   one RGB PNG per photo, `size` x `size`
    catalog.jsonl                 one row per photo: id, product_id, title, category, price,
                                  image (relative path), attributes {colour, pattern,
                                  pattern_colour, context, caption}
    catalog.csv                   the same rows; `attributes` is a JSON string
    splits.json                   train/heldout product ids, concept/query photo ids, query
                                  captions with a "{token}" placeholder, held-out combos/templates
    world.json                    seed, counts, vocabulary, templates
    truth.jsonl                   evaluation only: one row per product with the hidden identity
                                  (trim colour, emblem, emblem slot, shape, family) and photo jitter

Run: `python -m world.catalog --seed 0 --out var/world` (or `main([...])` in-process).
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import random
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.progress import bar as tqdm

from .build import SplitConfig, World, make_world
from .captions import HELDOUT_TEMPLATES, TOKEN_PLACEHOLDER, TRAIN_TEMPLATES, canonical_caption, caption, query_caption
from .errors import WorldError
from .render import MIN_SIZE, render
from .specs import PhotoSpec, ProductSpec
from .vocab import (ATTRIBUTE_WORDS, CATEGORIES, CATEGORY_NOUNS, COLOURS, CONTEXTS, EMBLEM_SLOTS, EMBLEMS,
                    PATTERNS)

FORMAT_VERSION = 1
CSV_COLUMNS = ("id", "product_id", "title", "category", "price", "image", "attributes")
OUTPUT_FILES = ("catalog.jsonl", "catalog.csv", "splits.json", "world.json", "truth.jsonl")

#: Made-up product-line names for shop titles.
PRODUCT_LINES: tuple[str, ...] = (
    "Aurora", "Basil", "Cascade", "Dune", "Ember", "Fjord", "Grove", "Harbor", "Indigo", "Juniper",
    "Kestrel", "Lumen", "Meadow", "Nimbus", "Orchid", "Pebble", "Quill", "Rowan", "Sierra", "Tundra",
    "Umber", "Vale", "Willow", "Yarrow", "Zephyr", "Alder", "Birch", "Cobalt", "Delta", "Elm",
    "Fable", "Garnet", "Haven", "Iris", "Jasper", "Kite", "Lark", "Maple", "Nova", "Opal",
)

#: Price range (min, max) per category, in the shop's currency.
PRICE_RANGES: dict[str, tuple[float, float]] = {
    "dress": (39, 129), "t-shirt": (12, 39), "trousers": (29, 99), "sneaker": (49, 159),
    "backpack": (29, 119), "mug": (8, 24), "teapot": (19, 69), "lamp": (25, 149),
}


@dataclass(frozen=True)
class Listing:
    """Shop-facing facts about a product that are not part of its look."""

    title: str  # "Aurora Striped Dress — Red"
    price: float  # e.g. 74.99


@dataclass(frozen=True)
class CatalogSummary:
    """What `write_catalog` wrote."""

    out_dir: Path  # the catalog directory
    products: int  # number of products
    photos: int  # number of photo rows / PNG files
    train_products: int  # products the backbone may train on
    heldout_products: int  # products reserved for custom tokens
    seconds: float  # wall time of the write, rendering included


def listing(world_seed: int, product: ProductSpec) -> Listing:
    """Deterministic title and price of `product` in the world of `world_seed`."""
    rng = random.Random(f"coinage-listing:{world_seed}:{product.id}")
    line = rng.choice(PRODUCT_LINES)
    pattern = "" if product.pattern == "solid" else product.pattern.title() + " "
    title = f"{line} {pattern}{product.category.title()} — {product.colour.title()}"
    lo, hi = PRICE_RANGES[product.category]
    return Listing(title=title, price=int(rng.uniform(lo, hi)) + 0.99)


def _image_path(photo: PhotoSpec) -> str:
    return f"images/{photo.product.id}/{photo.index}.png"


def catalog_rows(world: World) -> list[dict[str, Any]]:
    """One catalog row per photo (the public part: no trim, emblem or shape)."""
    rows = []
    listings = {p.id: listing(world.seed, p) for p in world.products}
    for ph in world.photos:
        p = ph.product
        rng = random.Random(f"coinage-caption:{world.seed}:{ph.id}")
        rows.append({
            "id": ph.id, "product_id": p.id, "title": listings[p.id].title, "category": p.category,
            "price": listings[p.id].price, "image": _image_path(ph),
            "attributes": {"colour": p.colour, "pattern": p.pattern, "pattern_colour": p.pattern_colour,
                           "context": ph.context, "caption": caption(ph, rng)},
        })
    return rows


def splits_doc(world: World) -> dict[str, Any]:
    s = world.splits
    queries = [{"photo_id": pid, "product_id": prod, "context": world.photo(pid).context,
                "query": query_caption(world.photo(pid)), "caption": canonical_caption(world.photo(pid))}
               for prod in s.heldout for pid in s.query[prod]]
    return {
        "format": FORMAT_VERSION, "seed": world.seed,
        "train": list(s.train), "heldout": list(s.heldout),
        "concept": {k: list(v) for k, v in s.concept.items()},
        "query": {k: list(v) for k, v in s.query.items()},
        "token_placeholder": TOKEN_PLACEHOLDER, "queries": queries,
        "heldout_combos": [list(c) for c in sorted(s.heldout_combos)],
        "heldout_templates": list(s.heldout_templates),
    }


def _count(values: list[str], names: Any) -> dict[str, int]:
    return {n: values.count(n) for n in names}


def world_doc(world: World, size: int) -> dict[str, Any]:
    prods, photos = world.products, world.photos
    return {
        "format": FORMAT_VERSION, "seed": world.seed, "image_size": size,
        "counts": {
            "products": len(prods), "photos": len(photos),
            "train_products": len(world.splits.train), "heldout_products": len(world.splits.heldout),
            "concept_photos": sum(len(v) for v in world.splits.concept.values()),
            "query_photos": sum(len(v) for v in world.splits.query.values()),
            "families": len(set(world.families.values())),
            "by_category": _count([p.category for p in prods], CATEGORIES),
            "by_colour": _count([p.colour for p in prods], COLOURS),
            "by_pattern": _count([p.pattern for p in prods], PATTERNS),
            "by_context": _count([ph.context for ph in photos], CONTEXTS),
        },
        "vocab": {
            "categories": list(CATEGORIES), "category_nouns": {k: list(v) for k, v in CATEGORY_NOUNS.items()},
            "colours": {k: list(v) for k, v in COLOURS.items()}, "patterns": list(PATTERNS),
            "contexts": {k: list(v) for k, v in CONTEXTS.items()}, "emblems": list(EMBLEMS),
            "emblem_slots": EMBLEM_SLOTS, "attribute_words": list(ATTRIBUTE_WORDS),
        },
        "templates": {"train": list(TRAIN_TEMPLATES), "heldout": list(HELDOUT_TEMPLATES)},
    }


def truth_rows(world: World) -> list[dict[str, Any]]:
    held = set(world.splits.heldout)
    return [{
        "product_id": p.id, "family": world.families[p.id], "split": "heldout" if p.id in held else "train",
        **{k: v for k, v in p.to_dict().items() if k != "id"},
        "photos": [{"id": ph.id, **ph.jitter_dict()} for ph in world.photos_of(p.id)],
    } for p in world.products]


def _dump_json(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, indent=1) + "\n"


def _jsonl(rows: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def _csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for r in rows:
        w.writerow([json.dumps(r[c], ensure_ascii=False) if c == "attributes" else r[c] for c in CSV_COLUMNS])
    return buf.getvalue()


def _prepare(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise WorldError(f"--out {out} is a file; give a directory path")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise WorldError(f"--out {out} is not empty; choose a new directory or pass overwrite=True "
                             "(--overwrite) to replace the catalog written there before")
        if not (out / "world.json").is_file():
            raise WorldError(f"--out {out} is not empty and holds no world.json, so it is not a catalog this "
                             "command wrote; refusing to overwrite it, choose another directory")
        shutil.rmtree(out / "images", ignore_errors=True)
        for name in OUTPUT_FILES:
            (out / name).unlink(missing_ok=True)
    (out / "images").mkdir(parents=True, exist_ok=True)


def write_catalog(world: World, out_dir: str | Path, size: int = 64, overwrite: bool = False,
                  progress: bool = False) -> CatalogSummary:
    """Render every photo of `world` and write the catalog files described in the module doc."""
    if size < MIN_SIZE:
        raise WorldError(f"size={size} is too small to show the emblem; use size >= {MIN_SIZE}")
    start = time.perf_counter()
    out = Path(out_dir)
    _prepare(out, overwrite)
    for p in world.products:
        (out / "images" / p.id).mkdir(exist_ok=True)
    for ph in tqdm(world.photos, desc="rendering", unit="img", disable=not progress):
        render(ph, size).save(out / _image_path(ph), format="PNG")
    rows = catalog_rows(world)
    (out / "catalog.jsonl").write_text(_jsonl(rows), encoding="utf-8")
    (out / "catalog.csv").write_text(_csv(rows), encoding="utf-8")
    (out / "splits.json").write_text(_dump_json(splits_doc(world)), encoding="utf-8")
    (out / "world.json").write_text(_dump_json(world_doc(world, size)), encoding="utf-8")
    (out / "truth.jsonl").write_text(_jsonl(truth_rows(world)), encoding="utf-8")
    return CatalogSummary(out_dir=out, products=len(world.products), photos=len(world.photos),
                          train_products=len(world.splits.train), heldout_products=len(world.splits.heldout),
                          seconds=time.perf_counter() - start)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="world.catalog", description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, default=0, help="world seed: changes products, emblems, contexts")
    ap.add_argument("--out", type=Path, default=Path("var/world"), help="catalog directory (default var/world)")
    ap.add_argument("--products", type=int, default=320, help="number of products (default 320)")
    ap.add_argument("--photos", type=int, default=8, help="photos per product (default 8)")
    ap.add_argument("--size", type=int, default=64, help="image side in pixels (default 64)")
    ap.add_argument("--heldout", type=int, default=SplitConfig.heldout_products,
                    help=f"held-out products for custom tokens (default {SplitConfig.heldout_products})")
    ap.add_argument("--overwrite", action="store_true", help="replace a catalog previously written to --out")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        world = make_world(args.seed, args.products, args.photos, SplitConfig(heldout_products=args.heldout))
        summary = write_catalog(world, args.out, size=args.size, overwrite=args.overwrite, progress=True)
    except WorldError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {summary.photos} photos of {summary.products} products "
          f"({summary.train_products} train, {summary.heldout_products} held out) "
          f"at {args.size}x{args.size} to {summary.out_dir} in {summary.seconds:.1f} s (seed {args.seed})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
