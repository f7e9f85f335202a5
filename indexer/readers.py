"""Stage 1, read: catalog files -> raw rows. A row that cannot be parsed is yielded with its error.

Formats (chosen by extension):
- CSV (.csv): a header row; `attributes` holds a JSON object string. `row` = record number (header
  not counted).
- JSON Lines (.jsonl, .ndjson): one JSON object a line; blank lines are skipped. `row` = line number.
- Parquet (.parquet, .pq): one row per record; `attributes` is a struct/map column or a JSON
  string (a struct column gives every row all its keys, null where a row had none).
  `row` = 1-based row index.
"""
from __future__ import annotations

import contextlib
import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from .errors import IndexerError

FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet", ".pq": "parquet"}


@dataclass
class RawRow:
    row: int  # position in the file (see module docstring), reported in the rejects file
    fields: dict[str, Any] | None  # column -> value as the file holds it; None when the row did not parse
    error: str | None = None  # why the row did not parse


class CatalogReader:
    """Iterate raw rows of one catalog file; `count()` gives the number of rows for progress and ETA.
    A file that cannot be read (permissions, I/O error) is an IndexerError naming it; subclasses implement
    `_count` and `_rows`."""

    format = ""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def count(self) -> int:
        with self._reading():
            return self._count()

    def __iter__(self) -> Iterator[RawRow]:
        with self._reading():
            yield from self._rows()

    @contextlib.contextmanager
    def _reading(self) -> Iterator[None]:
        try:
            yield
        except OSError as e:
            raise IndexerError(f"catalog {self.path} cannot be read ({e.strerror or e}); make it readable by "
                               "this user (check its permissions and the disk) and run again") from e

    def _count(self) -> int:
        raise NotImplementedError

    def _rows(self) -> Iterator[RawRow]:
        raise NotImplementedError


class CsvReader(CatalogReader):
    format = "csv"

    def _open(self):
        # utf-8-sig drops a BOM; undecodable bytes become U+FFFD instead of stopping the whole file
        return open(self.path, newline="", encoding="utf-8-sig", errors="replace")

    def _count(self) -> int:
        return sum(1 for _ in self)  # exactly the rows __iter__ yields (records the csv module rejects included)

    def _rows(self) -> Iterator[RawRow]:
        with self._open() as f:
            records = _csv_records(f)
            header = next((r for r in records if r != ([], None)), None)  # leading blank lines are skipped
            if header is None:
                return
            if header[1] is not None:
                raise IndexerError(f"catalog {self.path}: the header row is unreadable ({header[1]}); fix the file")
            header = [h.strip() for h in header[0]]
            for n, (values, error) in enumerate(records, start=1):
                if error is not None:
                    yield RawRow(n, None, error)
                elif not values or all(not v.strip() for v in values):
                    yield RawRow(n, None, "empty row")
                elif len(values) != len(header):
                    yield RawRow(n, None, f"row has {len(values)} fields but the header has {len(header)}")
                else:
                    yield RawRow(n, dict(zip(header, values)))


def _csv_records(f) -> Iterator[tuple[list[str], str | None]]:
    """(values, None) per CSV record, or ([], reason) for one the csv module refuses (e.g. a field over
    csv.field_size_limit()); reading goes on at the next line instead of stopping the whole catalog."""
    reader = csv.reader(f)
    while True:
        try:
            values = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            yield [], f"unreadable CSV record: {e}"
            continue
        yield values, None


class JsonlReader(CatalogReader):
    format = "jsonl"

    def _count(self) -> int:
        with open(self.path, "rb") as f:
            return sum(1 for line in f if line.strip())

    def _rows(self) -> Iterator[RawRow]:
        with open(self.path, "rb") as f:
            for n, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    value = json.loads(line)
                except ValueError as e:  # UnicodeDecodeError is a ValueError too
                    yield RawRow(n, None, f"invalid JSON: {e}")
                    continue
                except RecursionError:  # '[[[[...' nested deeper than the parser's stack
                    yield RawRow(n, None, "invalid JSON: nested deeper than Python can parse; flatten the row")
                    continue
                if isinstance(value, dict):
                    yield RawRow(n, value)
                else:
                    yield RawRow(n, None, f"expected a JSON object, got {type(value).__name__}")


class ParquetReader(CatalogReader):
    format = "parquet"

    def _file(self):
        import pyarrow.parquet as pq

        try:
            return pq.ParquetFile(self.path)
        except Exception as e:  # pyarrow raises ArrowInvalid/OSError for non-Parquet files
            raise IndexerError(f"{self.path} is not a readable Parquet file: {e}") from e

    def _count(self) -> int:
        return int(self._file().metadata.num_rows)

    def _rows(self) -> Iterator[RawRow]:
        n = 0
        for batch in self._file().iter_batches(batch_size=1024):
            for record in batch.to_pylist():
                n += 1
                attrs = record.get("attributes")
                if isinstance(attrs, list) and all(isinstance(x, tuple) and len(x) == 2 for x in attrs):
                    record["attributes"] = dict(attrs)  # a map column arrives as (key, value) pairs
                yield RawRow(n, record)


def open_catalog(path: str | Path) -> CatalogReader:
    """The reader for `path` by extension; a missing file or unknown extension is an IndexerError."""
    path = Path(path)
    if not path.is_file():
        raise IndexerError(f"catalog {path} does not exist or is not a file; pass --catalog PATH to a "
                           ".csv, .jsonl or .parquet file (e.g. `python -m world.catalog --out var/world`)")
    kind = FORMATS.get(path.suffix.lower())
    if kind is None:
        raise IndexerError(f"catalog {path}: unknown extension {path.suffix!r}; use one of {sorted(FORMATS)}")
    return {"csv": CsvReader, "jsonl": JsonlReader, "parquet": ParquetReader}[kind](path)
