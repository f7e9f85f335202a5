"""Submitting the admin's jobs (the preview job is submitted by web/search_state.py, training by concepts_admin)."""
from __future__ import annotations

import uuid

from .errors import ApiError

REINDEX_KEY = "reindex"  # one reindex at a time: a second request returns the running job


def submit_reindex(res) -> str:
    """Queue a blue/green rebuild of the product index from the configured catalog (or return the active one)."""
    if not res.settings.catalog.is_file():
        raise ApiError(409, "catalog_missing", f"the catalog file {res.settings.catalog} does not exist; write it "
                       "(`coinage demo --no-serve` makes the demo catalog) or set COINAGE_CATALOG")
    params = {"catalog": str(res.settings.catalog), "rejects": f"rejects-{uuid.uuid4().hex[:12]}.jsonl"}
    return res.jobs.submit("reindex", params, dedupe_key=REINDEX_KEY)
