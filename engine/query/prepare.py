"""The first stage of a search: a request validated and understood before anything is encoded.

    prep = prepare(service, request)   # -> Prepared: constraints read, typos corrected, tokens parsed, synonyms

In order: the request is validated and its collection pinned (the alias resolved once: the catalog words, the
speller and the retriever all read that collection, even if a reindex moves the alias mid-request); query
understanding (engine/query/understand.py) reads prices, negations, identifiers and concept names out of the
text; the speller (engine/spelling.py) corrects the words left, the lexical side always and the dense side only
for certain typos (the facet values the corrected words name are read then: they keep the count honest); the
parser finds the custom tokens; the shop's synonyms (engine/merch) expand what BM25 searches. The service wires
the sources (catalog words, speller, registered tokens, merchandising); this module only orders the steps.
"""
from __future__ import annotations

import dataclasses
import io
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from engine.images import ImageEncoder
from engine.spelling import strip_placeholders
from engine.tokens import TokenSet

from .errors import QueryError
from .parse import ParsedQuery, parse_query
from .retrieval import defines_query, named_facets
from .schema import Correction, SearchRequest
from .understand import Interpretation, understand

if TYPE_CHECKING:
    from .service import QueryService

SPELLER_WARMING = "typo correction is not ready yet (the catalog's speller is being built): searched as typed"


@dataclass
class Prepared:
    """A validated request: parsed text (None for an image-only query), the tokens it uses, the image feature."""

    request: SearchRequest
    parsed: ParsedQuery | None
    tokens: TokenSet  # only the tokens the query names
    versions: dict[str, str]  # placeholder -> token version
    image_feature: torch.Tensor | None  # (embed_dim,) for an image query
    notes: list[str]
    seed: int
    correction: Correction | None = None  # the typo correction applied to the query text, if any
    lexical: str = ""  # what the lexical (BM25) side searches: the (corrected) words without placeholders
    interpretation: Interpretation | None = None  # what understanding read out of the text (None: off)
    merch: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # synonyms that expanded `lexical`
    collection: str | None = None  # the collection the request reads (the alias resolved once); None: no store
    # the facet values the searched words name, and whether they define the query (engine.query.candidates: the
    # count keeps the named facets' products), read from the corrected words ("dres" names the category dress)
    named: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    defines: bool = True

    @property
    def has_tokens(self) -> bool:
        return self.parsed is not None and self.parsed.has_tokens

    @property
    def auto_retrieval(self) -> str:
        """What retrieval "auto" means here (RETRIEVALS): dense for a query with a custom token (the lexical side
        cannot read a token), unless a concept name typed as a catalog word also keeps the word for the lexical
        side (both readings: hybrid); hybrid otherwise."""
        both = self.interpretation is not None and bool(self.interpretation.lexical_words)
        return "dense" if self.has_tokens and not both else "hybrid"


def prepare(service: QueryService, request: SearchRequest) -> Prepared:
    if not isinstance(request, SearchRequest):
        raise QueryError(f"expected a SearchRequest, got {type(request).__name__}; build one with "
                         "SearchRequest(query=...) or SearchRequest.from_json(body)")
    config = service.config
    request.validate(config)
    collection = service.retriever.pin() if service.store is not None else None
    image = image_feature(service.images, request.image) if request.image is not None else None
    notes: list[str] = []
    parsed = correction = interpretation = None
    used = TokenSet()
    text = lexical = request.query
    named: dict[str, list[str]] = {}
    defines = True
    if request.query.strip() or image is None:
        registered = service.current_tokens()
        if request.understand and request.query.strip():  # before the speller: ids, prices, concept names
            words = service.catalog.get(collection)
            interpretation = understand(request.query, words, registered, config, request.ignore)
            request, text = interpretation.apply(request), interpretation.text
            notes.extend(interpretation.notes)
        correction, dense, lexical = correct(service, request, text, notes, collection)
        if interpretation is not None:  # the named facets of the corrected words ("dres": the category dress)
            named_in = interpretation if correction is None else understand(
                correction.corrected, words, registered, config, request.ignore)
            named, defines = named_facets(named_in), defines_query(named_in, words)
        text = dense  # the dense side: certain typos fixed, and the catalog's forms ("dresses" -> "dress")
        parsed = parse_query(text, registered, config.max_query_chars)
        notes.extend(parsed.notes)
        used = TokenSet([registered.get(p) for p in parsed.placeholders])
    if image is not None and parsed is not None:
        notes.append("searching by the image and the text together (normalised mean of both features)")
    seed = request.seed if request.seed is not None else config.seed
    if interpretation is not None:  # concepts typed as catalog words keep the word on the lexical side
        lexical = interpretation.lexical_text(lexical)
    lexical = strip_placeholders(lexical)  # the words BM25 searches
    expansion = service.merch.expand(lexical) if service.merch is not None else None  # synonyms
    return Prepared(request, parsed, used, {t.placeholder: t.version for t in used}, image, notes, seed,
                    correction, expansion.text if expansion else lexical, interpretation,
                    [s.applied_json() for s in expansion.applied] if expansion else [], collection, named, defines)


def correct(service: QueryService, request: SearchRequest, text: str,
            notes: list[str], collection: str | None = None) -> tuple[Correction | None, str, str]:
    """(the correction shown, the dense side's text, the lexical side's text): unknown words corrected to catalog
    words (the lexical side), certain typos also for the dense side, which reads the catalog's own form of a word
    it knows only through its BM25 stem too (not shown: analysis, not spelling); the correction is None when
    nothing changed or is suggested (or asked not to). `collection`: the request's pinned collection."""
    if not request.correct:
        return None, text, text
    speller = service.spelling.get(collection)
    if speller is None:
        if service.spelling.warming:
            notes.append(SPELLER_WARMING)
        return None, text, text
    found = speller.correct(text)
    if not found.changed and found.suggestion is None:
        return None, found.dense, found.corrected
    return Correction(found.original, found.corrected, list(found.changes), found.dense, found.suggestion,
                      list(found.suggested)), found.dense, found.corrected


def image_feature(images: ImageEncoder, image: Any) -> torch.Tensor:
    """A shopper's photo (a PIL image or image file bytes) as a CLIP image feature (embed_dim,)."""
    from PIL import Image

    from engine.image_files import pil_error, pil_open_errors

    if isinstance(image, (bytes, bytearray)):
        try:
            image = Image.open(io.BytesIO(image))
            image.load()
        except pil_open_errors() as e:
            raise QueryError(f"could not read the uploaded image ({pil_error(e)}); upload a PNG, JPEG or "
                             "WebP file") from e
    if not isinstance(image, Image.Image):
        raise QueryError(f"field 'image' must be a PIL image or image file bytes, got {type(image).__name__}")
    return images.encode_pil([image])[0].float().cpu()
