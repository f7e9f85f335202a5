"""The query service (docs/method.md, "Composition and GAIR"): parsing, composed retrieval, GAIR and previews.

Used by the web app, the JSON API and `coinage search`. See engine/query/service.py for the flow.
"""
from __future__ import annotations

from .config import QueryConfig
from .errors import ConflictingFields, IndexMismatch, IndexNotFound, PreviewUnavailable, QueryError
from .gair import GairOutcome, WeightScore, choose, score_weights
from .parse import ParsedQuery, parse_query, text_only_prompt
from .preview_jobs import PreviewJob
from .previews import Preview, PreviewCache, cache_key
from .schema import (METHODS, MODES, RETRIEVALS, SORTS, Correction, Facets, GairResult, ProductResult, ResultItem,
                     SearchRequest, SearchResponse)
from .service import QueryService

__all__ = [
    "METHODS", "MODES", "RETRIEVALS", "SORTS", "ConflictingFields", "Correction", "Facets", "GairOutcome",
    "GairResult", "IndexMismatch", "IndexNotFound", "ParsedQuery", "Preview", "PreviewCache", "PreviewJob", "PreviewUnavailable",
    "ProductResult", "QueryConfig", "QueryError", "QueryService", "ResultItem",
    "SearchRequest", "SearchResponse", "WeightScore", "cache_key", "choose", "parse_query", "score_weights",
    "text_only_prompt",
]
