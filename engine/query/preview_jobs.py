"""The identity of a preview job: which text requests share one generation (GAIR's grid and its previews).

The web app asks the query service (`QueryService.preview_job`) before it queues a job, so two shoppers
typing the same query share one job, and a job is queued again only when what its images depend on changed
(a token retrained, the grid, the steps, the preview size).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine.tokenizer import find_placeholders
from engine.tokens import TokenSet

from .config import QueryConfig
from .previews import cache_key
from .schema import SearchRequest


@dataclass(frozen=True)
class PreviewJob:
    """What determines the preview job of a text request (GAIR's grid and the previews it makes)."""

    key: str  # dedupe key: requests with equal keys get the same images, so they share one job
    params: dict[str, Any]  # the job's parameters: {"request": the SearchRequest JSON a worker runs}


def preview_job(request: SearchRequest, tokens: TokenSet, config: QueryConfig, backbone_id: str) -> PreviewJob:
    """The preview job of `request` with the registered `tokens`: its query (whitespace folded), seed, GAIR
    switch, method and a weight off the grid (which gets a preview of its own), the versions of the tokens it
    names, the backbone, the grid, the steps and the preview size."""
    grid = list(config.weights)
    versions = {p: tokens.get(p).version for p in dict.fromkeys(find_placeholders(request.query)) if p in tokens}
    extra = float(request.weight) if request.weight is not None and float(request.weight) not in grid else None
    job = {"query": " ".join(request.query.split()), "seed": request.seed, "gair": request.gair, "weight": extra,
           "method": request.method}
    key = cache_key(kind="preview-job", request=job, versions=versions, backbone=backbone_id, grid=grid,
                    steps=config.steps, preview_size=config.preview_size)
    return PreviewJob(key, {"request": job})
