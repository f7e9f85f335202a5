"""`coinage demo`: catalog, index and server on a fresh machine with no network.

1. the demo catalog (world.catalog) in <data_dir>/world/, if it is missing;
2. the demo backbone "world" (world/backbone/), or "tiny-random" with a loud warning if it is not trained yet;
3. the product index, if it is missing or incomplete (incremental; a mismatched one is rebuilt);
4. photos of a few held-out products in <data_dir>/demo-concepts/<product>/, ready to upload as concepts;
5. the dev server with the worker thread (unless --no-serve).
"""
from __future__ import annotations

import json
import logging
import shutil
import sys
from pathlib import Path

import engine.backbones
from engine.store import StoreError, open_store
from indexer import IndexerConfig, IndexerError, run_index, run_reindex
from world.catalog import main as catalog_main

from .devserver import serve
from .resources import CatalogFacts

log = logging.getLogger(__name__)

DEMO_CONCEPTS = 3  # held-out products whose photos are copied out for the admin to upload


def _say(text: str) -> None:
    print(text, flush=True)


def run_demo(settings, products: int = 320, photos: int = 8, heldout: int | None = None, serve_after: bool = True,
             host: str = "127.0.0.1", port: int = 8000) -> int:
    for noisy in ("onnx_ir", "onnxscript", "werkzeug"):  # keep the console to what a demo user needs
        logging.getLogger(noisy).setLevel(logging.WARNING)
    demo_dir = settings.data_dir / "world"
    if not settings.catalog.is_file():
        if settings.catalog.resolve() != (demo_dir / "catalog.jsonl").resolve():
            print(f"error: the catalog {settings.catalog} does not exist; unset COINAGE_CATALOG to use the demo "
                  "catalog, or write the file first", file=sys.stderr)
            return 1
        rc = write_catalog(demo_dir, products, photos, heldout)
        if rc:
            return rc
    else:
        _say(f"[demo] catalog: {settings.catalog} (already written)")
    choose_backbone(settings)
    rc = ensure_index(settings)
    if rc:
        return rc
    concepts = concept_photos(settings)
    hint = ""
    if concepts:
        first, parent = concepts[0]
        hint = (f"[demo] to teach the search a new word: log in at /admin, register a concept named e.g. <{first.name}> "
                f"with parent word '{parent}', and upload the photos in {first}/\n")
    if not serve_after:
        _say("[demo] ready (--no-serve): run `coinage demo` or `coinage serve` to serve it")
        return 0
    banner = (f"[demo] backbone: {settings.backbone}\n{hint}"
              f"[demo] admin login: user '{settings.admin.user}'; in dev mode the password is printed once, at the "
              f"first start (above, if this is it).\n       Lost it? Delete {settings.data_dir / 'admin.json'} and "
              "run this again for a new one.\n")
    return serve(settings, host, port, banner=banner)


def write_catalog(out: Path, products: int, photos: int, heldout: int | None) -> int:
    if out.is_dir() and any(out.iterdir()) and not (out / "catalog.jsonl").is_file():
        print(f"error: {out} holds an unfinished catalog (a run was stopped while writing it); delete the folder "
              "and run `coinage demo` again", file=sys.stderr)
        return 1
    _say(f"[demo] writing the demo catalog ({products} products x {photos} photos) to {out} ...")
    argv = ["--out", str(out), "--products", str(products), "--photos", str(photos)]
    if heldout is not None:
        argv += ["--heldout", str(heldout)]
    return int(catalog_main(argv) or 0)


def choose_backbone(settings) -> None:
    """Use the demo backbone when it is trained; otherwise fall back to tiny-random, loudly."""
    world_dir, manifest = engine.backbones.WORLD_DIR, engine.backbones.MANIFEST  # read when called
    if settings.backbone != "world" or (world_dir / manifest).is_file():
        _say(f"[demo] backbone: {settings.backbone}")
        return
    bar = "!" * 78
    print(f"{bar}\nWARNING: the demo backbone is not trained yet ({world_dir} has no {manifest}).\n"
          "Falling back to 'tiny-random': random weights, so rankings and previews are MEANINGLESS.\n"
          "Train it with `coinage world train` (or install a checkout that ships world/backbone/),\n"
          "then run `coinage demo` again: the index is rebuilt with the demo backbone.\n"
          f"{bar}", file=sys.stderr, flush=True)
    settings.backbone = "tiny-random"


def ensure_index(settings) -> int:
    """Index the catalog unless the live collection already holds every row; rebuild one of another backbone."""
    rows = CatalogFacts(settings.catalog).get().rows
    alias = settings.query.collection
    try:
        with open_store(settings.store) as store:
            target = store.get_alias(alias)
            count = store.count(alias) if target is not None else 0
    except StoreError as e:
        print(f"error: vector store: {e}", file=sys.stderr)
        return 1
    config = IndexerConfig(catalog=settings.catalog, backbone=settings.backbone, store=settings.store, alias=alias,
                           onnx=settings.onnx, onnx_cache=settings.onnx_cache, device=settings.device,
                           threads=settings.threads, rejects_path=settings.indexer_dir / "rejects-demo.jsonl")
    marker = settings.indexer_dir / "demo-index.json"  # which backbone the demo indexed with
    built_with = json.loads(marker.read_text()).get("backbone") if marker.is_file() else None
    if target is not None and count >= rows and built_with in (None, settings.backbone):
        _say(f"[demo] index: {count} catalog images in {target} (already built)")
        return 0
    try:
        if target is not None and built_with not in (None, settings.backbone):
            _say(f"[demo] the index was built with backbone {built_with}; rebuilding it with {settings.backbone} ...")
            report = run_reindex(config).ingest
        else:
            _say(f"[demo] indexing {rows} catalog images with backbone {settings.backbone} ...")
            report = run_index(config)
    except (IndexerError, StoreError) as e:
        print(f"error: indexing failed: {e}", file=sys.stderr)
        return 1
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({"backbone": settings.backbone}) + "\n")
    _say(f"[demo] {report.summary()}")
    return 0


def concept_photos(settings) -> list[tuple[Path, str]]:
    """Copy the concept photos of a few held-out products to <data_dir>/demo-concepts/<product>/ (once)."""
    world = settings.catalog.parent
    splits_file = world / "splits.json"
    if not splits_file.is_file():
        return []
    splits = json.loads(splits_file.read_text())
    rows = {}
    with open(settings.catalog, encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            rows[row["id"]] = row
    out = []
    for product in splits.get("heldout", [])[:DEMO_CONCEPTS]:
        folder = settings.data_dir / "demo-concepts" / product
        photos = [rows[pid] for pid in splits.get("concept", {}).get(product, []) if pid in rows]
        if not photos:
            continue
        if not folder.is_dir():
            folder.mkdir(parents=True)
            for row in photos:
                source = world / row["image"]
                if source.is_file():
                    shutil.copyfile(source, folder / source.name)
        out.append((folder, photos[0].get("category") or "product"))
    return out
