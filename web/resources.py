"""What the app runs on, built once per app (never at import): backbone, store, registry, jobs, query service.

`Resources` hangs off `app.extensions["coinage"]`; tests build an app per settings and close it.
The adapters here are the app's only glue to the engine's public APIs:

- `TokenProvider`: the registry's active tokens as the TokenSet the query service asks for,
  reloaded only when a concept is activated, deactivated, retrained or deleted;
- `concept_features`: the training-image features GAIR needs, as the service's features provider;
- `CatalogInfo`: categories and price range of the catalog file, for the search filters.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from engine.concepts import ConceptError, ConceptRegistry
from engine.diffusion import GenerationCancelled
from engine.errors import CoinageError
from engine.loading import load_backbone
from engine.merch import MerchSource, MerchStore
from engine.merch.analytics import AnalyticsLog
from engine.product import CATEGORY, PRICE
from engine.query import QueryService
from engine.store import StoreError, open_store
from engine.tokens import TokenSet
from web.jobs import JobStore, Worker, retention
from web.preview_queue import PreviewQueue
from web.settings import AppSettings
from indexer import IndexCancelled
from indexer.readers import open_catalog

from .analytics import Recorder
from .runners import Runners
from .security import secret_key

log = logging.getLogger(__name__)


class TokenProvider:
    """The active custom tokens; one registry query per call, token files re-read only when they change."""

    def __init__(self, registry: ConceptRegistry, backbone):
        self.registry = registry
        self.backbone = backbone
        self._lock = threading.Lock()
        self._state: tuple = ()
        self._tokens = TokenSet()

    def __call__(self) -> TokenSet:
        state = tuple((c.placeholder, c.active_version, c.updated) for c in self.registry.list() if c.active_version)
        with self._lock:
            if state != self._state:
                self._tokens = self.registry.active_tokens(self.backbone.id, self.backbone.text_width)
                self._state = state
            return self._tokens


def concept_features(registry: ConceptRegistry):
    """A features provider for QueryService: placeholder -> (n, embed_dim); KeyError when there are none."""

    def features(placeholder: str):
        try:
            return registry.features(placeholder)
        except ConceptError as e:
            raise KeyError(placeholder) from e

    return features


@dataclass
class CatalogInfo:
    """Facts about the catalog file for the search form (read once per file modification)."""

    categories: list[str] = field(default_factory=list)
    min_price: float | None = None
    max_price: float | None = None
    rows: int = 0


class CatalogFacts:
    def __init__(self, path: Path):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._key: tuple | None = None
        self._info = CatalogInfo()

    def get(self) -> CatalogInfo:
        try:
            stat = self.path.stat()
        except OSError:
            return CatalogInfo()
        key = (stat.st_mtime_ns, stat.st_size)
        with self._lock:
            if key != self._key:
                self._info = self._read()
                self._key = key
            return self._info

    def _read(self) -> CatalogInfo:
        categories, prices, rows = set(), [], 0
        try:
            for raw in open_catalog(self.path):
                rows += 1
                fields = raw.fields or {}
                if isinstance(fields.get(CATEGORY), str) and fields[CATEGORY]:
                    categories.add(fields[CATEGORY])
                try:
                    prices.append(float(fields.get(PRICE)))
                except (TypeError, ValueError):
                    pass
        except (CoinageError, OSError) as e:
            log.warning("cannot read the catalog %s for the search filters (%s)", self.path, e)
        return CatalogInfo(sorted(categories), min(prices) if prices else None, max(prices) if prices else None, rows)


class Resources:
    """The loaded backbone, open store, registry, job store and query service of one app."""

    def __init__(self, settings: AppSettings, backbone: Any = None, with_diffusion: bool | None = None):
        """`with_diffusion`: load the backbone's UNet and VAE. By default every process does but the web processes
        of a worker deployment (COINAGE_WORKER=process): they never generate, so they load the CLIP towers only
        and their previews come from `coinage worker` (which passes True)."""
        self.settings = settings
        if settings.threads:
            torch.set_num_threads(settings.threads)
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        if with_diffusion is None:
            with_diffusion = settings.worker.mode != "process"
        self.backbone = backbone if backbone is not None else self._load_backbone(settings, with_diffusion)
        self.store = open_store(settings.store)
        self.registry = ConceptRegistry(settings.registry_root, database_url=settings.database_url)
        self.jobs = JobStore(settings.jobs_db, database_url=settings.database_url)
        self.tokens = TokenProvider(self.registry, self.backbone)
        self.query = QueryService(self.backbone, self.store, self.tokens, concept_features(self.registry),
                                  settings.query)
        self.catalog = CatalogFacts(settings.catalog)
        self.previews = PreviewQueue(self.jobs, settings.limits, self.query.preview_png)  # searches' preview jobs
        # synonyms, rules and search analytics: tables in the registry's database (engine/merch, web/analytics.py)
        self.merch = MerchStore(self.registry.db_path, settings.database_url)
        self.query.merch = MerchSource(self.merch, settings.merch.refresh_s)
        self.analytics = Recorder(AnalyticsLog(self.registry.db_path, settings.database_url),
                                  secret_key(settings), settings.merch)
        self.worker: Worker | None = None
        self._closed = False

    @staticmethod
    def _load_backbone(settings: AppSettings, with_diffusion: bool):
        return load_backbone(settings.backbone, device=settings.device, with_diffusion=with_diffusion)

    # ------------------------------------------------------------------ worker

    def make_worker(self, shared_store: bool = True) -> Worker:
        w = self.settings.worker
        runners = Runners(self, shared_store=shared_store)
        return Worker(self.jobs, runners.table(), lanes=w.lanes, poll_s=w.poll_s, heartbeat_s=w.heartbeat_s,
                      stale_after_s=w.stale_after_s, max_attempts=w.max_attempts,
                      cancelled_types=(GenerationCancelled, IndexCancelled),
                      housekeeping=self.prune, housekeeping_every_s=self.settings.retention.every_s)

    def prune(self) -> dict[str, int]:
        """One retention pass over the job store and the preview files (the worker runs it on a schedule)."""
        return retention.prune(self.jobs, self.query.cache, self.settings.retention)

    def start_worker(self) -> Worker:
        if self.worker is None:
            self.worker = self.make_worker().start()
        return self.worker

    # ------------------------------------------------------------------ state

    def index_ready(self) -> tuple[bool, str]:
        """Whether the product index exists (and how many products it holds), for /readyz and the pages."""
        name = self.settings.query.collection
        try:
            count = self.store.count(name)
        except StoreError as e:
            return False, (f"no product index {name!r}: {e.__class__.__name__}. Build it with `coinage demo "
                           "--no-serve` (demo catalog) or `coinage index --catalog FILE`, or start a reindex "
                           "on the admin catalog page")
        return True, f"{count} catalog images indexed in {name!r}"

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.worker is not None:
            self.worker.stop()
        self.previews.close()
        self.jobs.db.close()
        self.analytics.close()
        self.store.close()
