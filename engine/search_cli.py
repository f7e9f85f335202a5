"""`coinage search "<query>"`: search the product index from the command line (the engine's query service).

    coinage search "<aurora> dress on a beach" --category dress --max-price 50 --preview out.png
    coinage search --image photo.png --limit 5
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from engine.backbones import DEFAULT_BACKBONE
from engine.database import database_url_from_env
from engine.image_files import pil_error, pil_open_errors
from engine.preprocess import open_upright
from engine.product import CATEGORY, ID, PRICE, PRODUCT_ID, TITLE
from engine.store import StoreConfig, open_store

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
ID_FIELDS = (PRODUCT_ID, "sku", ID)  # shown in this order of preference (points not written by the indexer)
TITLE_FIELDS = (TITLE, "name")


def register(sub) -> list[str]:
    p = sub.add_parser("search", help="search the product index (custom tokens, filters, GAIR, previews)",
                       description=__doc__.splitlines()[0])
    p.add_argument("query", nargs="?", default="", help="query text, e.g. '<aurora> dress on a beach' "
                   "(may be left out with --image)")
    p.add_argument("--backbone", default=DEFAULT_BACKBONE, help="registry name, local directory or hf-hub:org/repo "
                   "(the backbone the index was built with)")
    p.add_argument("--diffusion-dir", help="local diffusers directory for the diffusion stack")
    p.add_argument("--clip-weights", help="local open_clip weights file instead of the pretrained tag")
    p.add_argument("--device", default="auto")
    p.add_argument("--store-path", help="embedded store directory (default: $COINAGE_STORE_PATH or var/store)")
    p.add_argument("--store-backend", choices=["embedded", "server"], help="default: $COINAGE_STORE_BACKEND or embedded")
    p.add_argument("--store-url", help="Qdrant server URL for --store-backend server")
    p.add_argument("--collection", default="products", help="collection or alias to search")
    p.add_argument("--root", help="concept registry root: its active tokens and their training-image features "
                   "(default: $COINAGE_HOME or ./var; its rows in PostgreSQL when COINAGE_DATABASE_URL is set)")
    p.add_argument("--tokens", help="a directory of custom-token files (*.safetensors) instead of the registry")
    p.add_argument("--concept-images", action="append", default=[], metavar="TOKEN=DIR",
                   help="training images of a token for GAIR, e.g. '<aurora>=photos/aurora' (repeatable; "
                   "overrides the registry's features for that token)")
    p.add_argument("--gair", action=argparse.BooleanOptionalAction, default=None,
                   help="choose the composition weight by Generation Aided Image Retrieval (default: on)")
    p.add_argument("--weight", type=float, help="fixed composition weight w in [0, 1] (no GAIR)")
    p.add_argument("--method", choices=["composed", "text-only", "text+image"], default="composed",
                   help="query vector: ours (composed) or a baseline")
    p.add_argument("--category", action="append", help="only this category (repeat for any of several)")
    p.add_argument("--colour", action="append", help="only this colour (repeat for any of several)")
    p.add_argument("--sort", choices=["relevance", "price_asc", "price_desc"], default="relevance")
    p.add_argument("--mode", choices=["products", "photos"], default="products",
                   help="one row per product (its matching photos counted) or per photo")
    p.add_argument("--retrieval", choices=["auto", "hybrid", "dense", "lexical"], default="auto",
                   help="auto: dense for a query with a custom token, else hybrid (CLIP and BM25 fused in the "
                        "store); or one side alone")
    p.add_argument("--no-correct", dest="correct", action="store_false",
                   help="search the words as typed (no typo correction against the catalog's words)")
    p.add_argument("--no-understand", dest="understand", action="store_false",
                   help="search the text as typed: no prices, negations, ids or concept names read out of it")
    p.add_argument("--ignore", action="append", default=[], metavar="KEY",
                   help="leave one understood constraint unread, by the key printed after it (repeatable)")
    p.add_argument("--min-price", type=float)
    p.add_argument("--max-price", type=float)
    p.add_argument("--filter", action="append", default=[], metavar="FIELD=VALUE",
                   help="exact match on any payload field (integers are matched as integers; repeatable)")
    p.add_argument("--limit", type=int, default=10)
    p.add_argument("--offset", type=int, default=0)
    p.add_argument("--seed", type=int, help="diffusion seed for GAIR and the preview")
    p.add_argument("--steps", type=int, help="denoising steps (default: the backbone's)")
    p.add_argument("--image", help="search by this photo (with the query text, both are combined)")
    p.add_argument("--preview", help="write the preview image of the chosen query to this PNG file")
    p.add_argument("--preview-dir", help="preview cache directory shared with the web app (default: memory only)")
    p.add_argument("--text-runtime", choices=["auto", "onnx", "torch"], default="auto",
                   help="text encoder: the ONNX export when available (auto), required (onnx), or PyTorch")
    p.add_argument("--json", action="store_true", help="print the response as JSON instead of a table")
    p.set_defaults(func=run)
    return ["search"]


def run(args: argparse.Namespace) -> int:
    from engine.loading import load_backbone
    from engine.query import QueryConfig, QueryService
    from engine.tokenizer import find_placeholders

    request = _request(args)
    backbone = load_backbone(args.backbone, device=args.device, diffusion_dir=args.diffusion_dir,
                             clip_weights=args.clip_weights)
    tokens, features = token_sources(args, backbone)
    config = QueryConfig(collection=args.collection, preview_dir=args.preview_dir, steps=args.steps,
                         text_runtime=args.text_runtime)
    overrides = {k: v for k, v in (("path", args.store_path), ("backend", args.store_backend),
                                   ("url", args.store_url)) if v is not None}
    with open_store(StoreConfig.from_env(**overrides)) as store:
        service = QueryService(backbone, store, tokens, features, config)
        gair_on = request.gair if request.gair is not None else config.gair
        wants_gair = (gair_on and request.weight is None and request.method == "composed"
                      and bool(find_placeholders(request.query)))
        if args.preview or wants_gair:
            result = service.gair(request, progress=_progress if not args.json else None)
            response, preview = result.response, result.preview
        else:
            result, response, preview = None, service.search(request), None
    if args.preview:
        if preview is None:
            response.notes.append("no preview for this query")
        else:
            Path(args.preview).write_bytes(preview.png)
            response.notes.append(f"preview (w = {preview.w}) written to {args.preview}")
    if args.json:
        print(json.dumps(result.to_json() if result is not None else response.to_json(), indent=2, default=str))
    else:
        print(format_table(response, result))
    return 0


def _request(args: argparse.Namespace):
    from engine.query import QueryError, SearchRequest

    image = None
    if args.image:
        try:
            image = Path(args.image).read_bytes()
        except OSError as e:
            raise QueryError(f"cannot read --image {args.image}: {e}") from e
    filters = {}
    for item in args.filter:
        field, sep, value = item.partition("=")
        if not sep or not field:
            raise QueryError(f"--filter {item!r} must be FIELD=VALUE, e.g. --filter color=red")
        filters[field] = int(value) if value.lstrip("-").isdigit() else value
    category, colour = (None if not v else (v[0] if len(v) == 1 else v) for v in (args.category, args.colour))
    return SearchRequest(query=args.query, image=image, category=category, colour=colour, min_price=args.min_price,
                         max_price=args.max_price, filters=filters, limit=args.limit, offset=args.offset,
                         gair=args.gair, weight=args.weight, seed=args.seed, method=args.method, mode=args.mode,
                         retrieval=args.retrieval, sort=args.sort, correct=args.correct, understand=args.understand,
                         ignore=list(args.ignore))


def token_sources(args: argparse.Namespace, backbone):
    """(tokens, features): token files from --tokens, else the concept registry's active tokens (when one exists).

    --concept-images TOKEN=DIR supplies (or overrides) a token's training images for GAIR.
    """
    from engine.tokens import TokenSet

    images = ConceptImages(args.concept_images, backbone)
    if args.tokens:
        return load_tokens(args.tokens, backbone), images
    from engine.concepts import DB_NAME, ConceptRegistry, default_root

    root = Path(args.root) if args.root else default_root()
    database_url = database_url_from_env()
    if database_url is None and not (root / "concepts" / DB_NAME).is_file():
        return TokenSet(), images
    registry = ConceptRegistry(root, database_url=database_url)

    def features(placeholder: str):
        return images(placeholder) if placeholder in images.dirs else registry.features(placeholder)

    return (lambda: registry.active_tokens(backbone.id, backbone.text_width)), features


def load_tokens(directory: str | Path, backbone):
    """Every token file in `directory` (none when it does not exist), checked against the backbone."""
    from engine.tokens import TokenSet, load_token

    path = Path(directory)
    files = sorted(path.glob("*.safetensors")) if path.is_dir() else []
    return TokenSet([load_token(f, backbone_id=backbone.id, width=backbone.text_width) for f in files])


class ConceptImages:
    """Features provider from `TOKEN=DIR` arguments: a token's training images, encoded on first use."""

    def __init__(self, specs: list[str], backbone):
        from engine.query import QueryError
        from engine.tokenizer import validate_placeholder

        self.backbone = backbone
        self.dirs: dict[str, Path] = {}
        for spec in specs:
            placeholder, sep, directory = spec.partition("=")
            if not sep:
                raise QueryError(f"--concept-images {spec!r} must be TOKEN=DIR, e.g. '<aurora>=photos/aurora'")
            self.dirs[validate_placeholder(placeholder.strip())] = Path(directory)

    def __call__(self, placeholder: str):
        from engine.images import ImageEncoder
        from engine.query import QueryError

        if placeholder not in self.dirs:
            raise QueryError(f"GAIR needs the training images of {placeholder}: pass "
                             f"--concept-images '{placeholder}=DIR', or search with --no-gair")
        files = sorted(f for f in self.dirs[placeholder].glob("*") if f.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise QueryError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {self.dirs[placeholder]} for {placeholder}")
        images = []
        for f in files:
            try:
                images.append(open_upright(f))
            except pil_open_errors() as e:
                raise QueryError(f"{f} is not an image Coinage can read ({pil_error(e)}); GAIR needs the "
                                 f"training images of {placeholder}: remove or replace it") from e
        return ImageEncoder(self.backbone).encode_pil(images)


def format_table(response, result=None) -> str:
    """The results as a text table, then w*, the GAIR scores and the notes."""
    rows = [("rank", "score", "id", "title", "category", "price", "photos")]
    photos = {r.rank: len(p.photos) for p in response.products for r in p.photos[:1]}
    for r in response.results:
        p = r.payload
        rows.append((str(r.rank), f"{r.score:.4f}", str(_first(p, ID_FIELDS) or r.id[:8]),
                     str(_first(p, TITLE_FIELDS) or "")[:40], str(p.get(CATEGORY, "")), _price(p.get(PRICE)),
                     str(photos.get(r.rank, ""))))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    related = next((i for i, p in enumerate(response.products) if p.related), None)
    if related is not None:  # below the relevance floor: listed after the matches, not counted
        lines.insert(related + 1, "-- related items (beyond what matches the query; not counted) --")
    if response.correction is not None and response.correction.changes:
        lines.insert(0, f"showing results for {response.correction.corrected!r}; search instead for "
                        f"{response.correction.original!r} with --no-correct")
    if response.correction is not None and response.correction.suggestion:
        lines.insert(0, f"did you mean {response.correction.suggestion!r}?")
    found = response.interpretation
    hard = [c for c in found.constraints if c.hard] if found is not None else []
    if hard:
        lines.insert(0, "understood: " + "; ".join(f"{c.label} [{c.key}]" for c in hard)
                     + f" -> searching {found.text!r} (drop one with --ignore KEY, all with --no-understand)")
    if not response.results:
        lines.append("(no results)")
    lines.append("")
    lines.append(f"query: {response.prompt if response.prompt is not None else '(image)'}   method: {response.method}"
                 f"   w: {response.weight if response.weight is not None else '-'} ({response.weight_source})"
                 + (f"   + concept photos x{response.concept_photos:g}" if response.concept_photos else ""))
    if result is not None and result.outcome is not None:
        scores = ", ".join(f"w={s.w:g}: {s.score:.3f}" for s in result.scores)
        cached = " (cached)" if result.outcome.cached else ""
        ranks = "" if result.w_star == response.weight else f" (shown; w = {response.weight:g} ranks)"
        lines.append(f"GAIR w* = {result.w_star:g}{cached}{ranks}; min(context, object) scores: {scores}")
    lines.append(f"retrieval: {response.retrieval}   sort: {response.sort}   per {response.mode[:-1]}")
    if response.facets is not None:
        for name, counts in response.facets.values.items():
            lines.append(f"{name}: " + ", ".join(f"{v} ({n})" for v, n in counts.items()))
        lines.append("price: " + ", ".join(f"{b['min'] if b['min'] is not None else ''}-"
                                           f"{b['max'] if b['max'] is not None else ''} ({b['count']})"
                                           for b in response.facets.price))
    for note in response.notes:
        lines.append(f"note: {note}")
    if response.next_offset is not None:
        lines.append(f"more: --offset {response.next_offset}")
    return "\n".join(lines)


def _first(payload: dict, names: tuple[str, ...]):
    for name in names:
        if payload.get(name) not in (None, ""):
            return payload[name]
    return None


def _price(value) -> str:
    return f"{value:.2f}" if isinstance(value, (int, float)) and not isinstance(value, bool) else ""


def _progress(done: int, total: int) -> None:
    print(f"\rgenerating: step {done}/{total}", end="\n" if done >= total else "", file=sys.stderr, flush=True)
