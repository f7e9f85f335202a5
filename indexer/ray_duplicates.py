"""Duplicate ids on the Ray path, without a per-row set in one process: a distributed group-by before the pass.

Partitions run in parallel, so a store look-up (what the in-process path uses, indexer.pipeline) would race: two
rows of one id in two partitions may both find the id unseen. Instead the catalog's valid rows are read as
(id, row) and grouped by id on Ray Data (a shuffle across the workers and the object store, spilling to disk);
only the ids held by more than one row come back to the driver, with their first row. The read stage then rejects
every other row of such an id, "duplicate id: first seen at row N", as the in-process path does. The driver holds
the repeated ids only, at most MAX_REPEATED_IDS of them.
"""
from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from .errors import IndexerError
from .decode import Row
from .ray_stages import validated_chunks

MAX_REPEATED_IDS = 100_000  # more repeated ids than this: the catalog is not de-duplicated; refuse


def repeated_ids(ray: Any, parts: Any, catalog: str, batch_rows: int, partitions: int) -> dict[str, int]:
    """id -> first valid row, for the ids that more than one valid row of `catalog` holds. `parts`: the dataset of
    row ranges (indexer.ray_stages.ranges) the pass reads too; `partitions`: of the shuffle (Ray's default, 200,
    is made for clusters; a few per worker keeps the tasks few on a small one)."""
    from ray.data.aggregate import Count, Min

    ids = parts.map_batches(_ids, fn_kwargs={"catalog": catalog, "batch_rows": batch_rows}, batch_size=1,
                            batch_format="pyarrow", num_cpus=0.05)
    grouped = ids.groupby("id", num_partitions=partitions).aggregate(Count(alias_name="rows"), Min("row", alias_name="first"))
    repeated = grouped.map_batches(_repeated, batch_format="pyarrow", num_cpus=0.05).take(MAX_REPEATED_IDS + 1)
    if len(repeated) > MAX_REPEATED_IDS:
        example = repeated[0]
        raise IndexerError(f"the catalog repeats more than {MAX_REPEATED_IDS:,} ids (e.g. {example['id']!r}, "
                           f"{example['rows']} rows from row {example['first']}); de-duplicate it, or index it "
                           "without --workers (the in-process path rejects every repeat)")
    return {r["id"]: int(r["first"]) for r in repeated}


def _ids(batch: pa.Table, catalog: str, batch_rows: int):
    """(id, row) of the valid rows of the ranges in `batch` (only what the group-by needs)."""
    for chunk in validated_chunks(batch, catalog, batch_rows):
        rows = [r for r in chunk if isinstance(r, Row)]
        yield pa.table({"id": pa.array([r.id for r in rows], pa.string()),
                        "row": pa.array([r.row for r in rows], pa.int64())})


def _repeated(groups: pa.Table) -> pa.Table:
    return groups.filter(pc.greater(groups["rows"], 1))
