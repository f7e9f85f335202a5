"""Indexer errors. A bad catalog row is never an error (it is rejected and reported); these are."""
from __future__ import annotations

from typing import Any

from engine.errors import CoinageError


class IndexerError(CoinageError):
    """A run could not complete (unreadable catalog, model or store failure, too many rejects).

    `report` holds what was done before the failure (an IngestReport or ReindexReport), when known.
    """

    def __init__(self, message: str, report: Any = None):
        super().__init__(message)
        self.report = report


class IndexCancelled(IndexerError):
    """The cancel event was set; points written before it stay (an index run resumes from there)."""


class Reject(Exception):
    """A row problem; its message is the reason written to the rejects file."""
