"""The Ray path's partitions follow products (indexer.ray_stages.read_slices / owned_rows): the row ranges of
`slices` move their edges to product boundaries, so a product whose photos are listed together is read by one
task, every row is read by exactly one task, and a product longer than a range is not split either."""
from __future__ import annotations

import json
import random

import pyarrow as pa
import pytest

from indexer.ray_stages import read_slices, slices


def _catalog(tmp_path, sizes: list[int]) -> tuple[str, list[str]]:
    """Products of the given photo counts, listed together; every 9th row lacks a title (rejected)."""
    lines, products = [], []
    for p, size in enumerate(sizes):
        for k in range(size):
            n = len(lines)
            fields = {"id": f"r{n}", "product_id": f"p{p}", "image": "x.png", "title": "t"}
            if n % 9 == 8:
                del fields["title"]
            lines.append(json.dumps(fields))
            products.append(f"p{p}")
    path = tmp_path / "catalog.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return str(path), products


@pytest.mark.parametrize("seed", range(4))
def test_every_row_is_read_once_and_every_product_by_one_task(tmp_path, seed):
    rng = random.Random(seed)
    sizes = [rng.choice([1, 1, 2, 6, 7, 30]) for _ in range(40)]
    catalog, products = _catalog(tmp_path, sizes)
    total = len(products)
    for parts in (1, 2, 3, 8, 16, 64, total):
        owner: dict[int, int] = {}
        for task, part in enumerate(slices(total, parts)):
            for table in read_slices(pa.Table.from_pylist([part]), catalog, batch_rows=5):
                for row in table.column("row").to_pylist():
                    assert row not in owner, (parts, row)
                    owner[row] = task
        assert sorted(owner) == list(range(1, total + 1)), parts  # rows are numbered from 1
        tasks: dict[str, set[int]] = {}
        for n, product in enumerate(products):
            if n % 9 != 8:  # a rejected row is a product of its own
                tasks.setdefault(product, set()).add(owner[n + 1])
        assert all(len(t) == 1 for t in tasks.values()), parts


def test_plain_row_ranges_would_split_products(tmp_path):
    """What the boundaries fix: with 7-photo products and 8 ranges, plain ranges cut products in two."""
    _, products = _catalog(tmp_path, [7] * 12)
    cut = [s for s in slices(len(products), 8) if s["start"] and products[s["start"]] == products[s["start"] - 1]]
    assert cut
