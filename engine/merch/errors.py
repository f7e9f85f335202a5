"""Errors of the merchandising rules and synonyms."""
from __future__ import annotations

from engine.errors import CoinageError


class MerchError(CoinageError):
    """A synonym or rule that cannot be stored or applied; the message names the field and the fix."""


class MerchNotFound(MerchError):
    """No synonym or rule with that id (the web answers 404)."""
