"""The one error type of the world package. Messages name the bad argument and the fix."""
from __future__ import annotations


class WorldError(ValueError):
    """A world/catalog argument is out of range or a catalog directory is unusable."""
