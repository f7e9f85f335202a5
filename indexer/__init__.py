"""Catalog ingestion: reader -> decoder/validator -> embedder -> writer, into the vector store.

    from indexer import IndexerConfig, run_index, run_reindex
    run_index(IndexerConfig(catalog="var/world/catalog.jsonl", backbone="tiny-random"))

`run_index` updates the live collection in place (incremental, resumable); `run_reindex` builds a
new collection and switches the alias to it (blue/green). Both are the `coinage index` and
`coinage reindex` commands (indexer/cli.py).
"""
from __future__ import annotations

from .config import IndexerConfig
from .decode import ImageLimits
from .errors import IndexCancelled, IndexerError
from .pipeline import run_index
from .reindex import ReindexReport, run_reindex
from .report import IngestReport

__all__ = ["ImageLimits", "IndexCancelled", "IndexerConfig", "IndexerError", "IngestReport", "ReindexReport",
           "run_index", "run_reindex"]
