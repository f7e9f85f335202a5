"""The one error type of the world package. Messages name the bad argument and the fix."""
from __future__ import annotations

from engine.errors import CoinageError


class WorldError(CoinageError, ValueError):
    """A world/catalog argument is out of range or a catalog directory is unusable (a CoinageError, so `coinage`
    reports it as a user error; still a ValueError for callers that catch bad arguments)."""
