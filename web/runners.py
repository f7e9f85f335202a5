"""The job functions the worker runs: "train", "reindex" and "preview" (see web/jobs/ for the contract).

Each takes (params, progress, cancel) and returns a JSON-ready result. Parameters are what the
web app submitted (web/jobs_submit.py builds them); everything else comes from the Resources the
runner was built with, so the same runners serve the worker thread and the `coinage worker` process.
"""
from __future__ import annotations

import dataclasses
import logging
import threading
import time
from pathlib import PurePosixPath
from typing import Any, Callable

import trainer
from engine.query import SearchRequest
from indexer import IndexerConfig, run_reindex

log = logging.getLogger(__name__)

Progress = Callable[[dict], None]
HISTORY_POINTS = 300  # loss values kept in a training job's progress, for the live chart


class Runners:
    def __init__(self, resources, shared_store: bool = True):
        self.res = resources
        self.shared_store = shared_store  # reindex writes through the app's open store (embedded: one process)

    def table(self) -> dict[str, Callable]:
        return {"train": self.train, "reindex": self.reindex, "preview": self.preview}

    # ------------------------------------------------------------------ train

    def train(self, params: dict, progress: Progress, cancel: threading.Event) -> dict[str, Any]:
        settings = self.res.settings
        overrides = dict(params.get("config") or {})
        config = dataclasses.replace(settings.train, **overrides)
        request = trainer.request_from_registry(self.res.registry, params["placeholder"], backbone=self.res.backbone,
                                                config=config)
        history: list[list[float]] = []

        def report(event: dict) -> None:
            losses = event.get("losses") or {}
            if event.get("phase") == "train" and "loss" in losses:
                history.append([event.get("step", 0), round(float(losses["loss"]), 6)])
                del history[:-HISTORY_POINTS]
            progress({**event, "history": history})

        result = trainer.train_concept(request, progress=report, cancel=cancel)  # looked up per run (tests stub it)
        out = {"status": result.status, "placeholder": result.placeholder, "version": result.version,
               "activated": result.activated, "steps_done": result.steps_done, "metrics": result.metrics}
        if result.status == "cancelled":
            out["message"] = (result.message if result.concept_deleted else
                              f"cancelled at step {result.steps_done}; retrain to resume from the checkpoint")
        return out

    # ------------------------------------------------------------------ reindex

    def reindex(self, params: dict, progress: Progress, cancel: threading.Event) -> dict[str, Any]:
        settings = self.res.settings
        rejects = settings.indexer_dir / _file_name(params.get("rejects") or f"rejects-{int(time.time())}.jsonl")
        config = IndexerConfig(catalog=settings.catalog, backbone=settings.backbone, store=settings.store,
                               alias=settings.query.collection, onnx=settings.onnx, onnx_cache=settings.onnx_cache,
                               rejects_path=rejects, progress_bar=False, device=settings.device,
                               threads=settings.threads)
        report = run_reindex(config, progress, cancel, store=self.res.store if self.shared_store else None)
        return report.to_json()

    # ------------------------------------------------------------------ preview

    def preview(self, params: dict, progress: Progress, cancel: threading.Event) -> dict[str, Any]:
        """GAIR (w*, every w's score and preview) for a text query, or the one preview of a query without a token.

        `params["request"]` is a SearchRequest as JSON; a `weight` in it that is not on the GAIR grid
        gets its own preview (`chosen`).
        """
        request = SearchRequest.from_json(params["request"])
        chosen = request.weight
        base = dataclasses.replace(request, weight=None, limit=1, offset=0)

        def report(done: int, total: int) -> None:
            progress({"stage": "generating", "done": done, "total": total})

        t0 = time.perf_counter()
        result = self.res.query.gair(base, progress=report, cancel=cancel)
        out: dict[str, Any] = {
            "gair": result.outcome is not None, "w_star": result.w_star if result.outcome is not None else None,
            # what chose the w of the results when the shopper picks none ('gair' or 'default'), for the panel
            "weight_source": result.response.weight_source,
            "cached": result.outcome.cached if result.outcome is not None else None,
            "scores": [s.to_json() for s in result.scores],
            "preview": result.preview.to_json() if result.preview is not None else None,
            "notes": list(result.response.notes), "timings_ms": dict(result.timings_ms), "chosen": None,
        }
        if chosen is not None and result.outcome is not None and float(chosen) not in result.previews:
            extra = self.res.query.preview(dataclasses.replace(base, weight=float(chosen)), cancel=cancel)
            out["chosen"] = extra.to_json()
        out["seconds"] = round(time.perf_counter() - t0, 3)
        return out


def _file_name(name: str) -> str:
    """A bare file name (no folders), so a job's parameters cannot point outside the indexer folder."""
    clean = PurePosixPath(str(name)).name
    if not clean or clean.startswith(".") or clean != str(name):
        raise ValueError(f"rejects file {name!r} must be a plain file name like 'rejects-123.jsonl'")
    return clean
