"""Errors of the query service. All are CoinageErrors, so the CLI and the web app report them as user errors."""
from __future__ import annotations

from engine.errors import CoinageError


class QueryError(CoinageError):
    """A query that cannot be run as given (empty, malformed, bad filter, bad field); the message names the fix."""


class IndexNotFound(QueryError):
    """The collection or alias the service searches does not exist in the vector store."""


class IndexMismatch(QueryError):
    """The index was built with a backbone whose embedding size differs from the query backbone's."""


class PreviewUnavailable(QueryError):
    """A preview or GAIR was asked for where none can be generated (no diffusion stack, image-only query)."""


class ConflictingFields(QueryError):
    """Fields each well formed that do not go together: min_price above max_price, method 'text+image' without
    a custom token in the query."""
