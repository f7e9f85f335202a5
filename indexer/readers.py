"""Stage 1, read: catalog files -> raw rows. A row that cannot be parsed is yielded with its error.

Formats (chosen by extension):
- CSV (.csv): a header row; `attributes` holds a JSON object string. `row` = record number (header
  not counted).
- JSON Lines (.jsonl, .ndjson): one JSON object a line; blank lines are skipped. `row` = line number.
- Parquet (.parquet, .pq): one row per record; `attributes` is a struct/map column or a JSON
  string (a struct column gives every row all its keys, null where a row had none).
  `row` = 1-based row index.

Every reader can also resume mid-file (`checkpoints`, `rows_from`): one pass finds up to N checkpoints spread
over the file, each at a product boundary (the row's product differs from the last product above it), with the byte
offset reading resumes at (Parquet: the row index, its row groups are seekable). The Ray path
(indexer.ray_stages) reads its ranges from these, so no task ever reads the rows before its own.
"""
from __future__ import annotations

import contextlib
import csv
import json
import re
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


@dataclass(frozen=True)
class Checkpoint:
    """Where reading can resume: before the reader's `position`-th row (0-based, counting the rows it yields)."""

    position: int
    offset: int  # byte offset of that row's first line (CSV, JSON Lines); the row index (Parquet)
    row: int  # that row's `row` (JSON Lines counts blank lines, so it is not position + 1 there)


@dataclass(frozen=True)
class Checkpoints:
    total: int  # rows the reader yields (count())
    points: list[Checkpoint]  # the first at position 0 (none for an empty file), then one at each chosen boundary


def product_of(fields: Any) -> str | None:
    """A row's product as the catalog spells it (product_id, else id); None when it has neither (or no fields)."""
    if not isinstance(fields, dict):
        return None
    value = fields.get("product_id") or fields.get("id")
    return str(value) if value is not None and not isinstance(value, (dict, list)) else None


class CatalogReader:
    """Iterate raw rows of one catalog file; `count()` gives the number of rows for progress and ETA.
    A file that cannot be read (permissions, I/O error) is an IndexerError naming it; subclasses implement
    `_count`, `_records` (the rows as the file holds them, with their offsets) and `_parse` (one to a RawRow)."""

    format = ""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def count(self) -> int:
        with self._reading():
            return self._count()

    def __iter__(self) -> Iterator[RawRow]:
        with self._reading():
            for _, row, record in self._records():
                yield self._parse(row, record)

    def rows_from(self, point: Checkpoint) -> Iterator[RawRow]:
        """The rows from `point` (of this file's `checkpoints`) to the end of the file."""
        with self._reading():
            for _, row, record in self._records(point.offset, point.row):
                yield self._parse(row, record)

    def checkpoints(self, most: int) -> Checkpoints:
        """One pass over the file: its row count and at most `most` checkpoints, each at a product boundary, as
        evenly spread as the boundaries allow, so a product listed in consecutive rows (as catalogs list a
        product's photos) lies between two checkpoints. A checkpoint is sought every `every` rows, from every row
        on; when more than `most` are filed, every other one is dropped and `every` doubles, so a small file gets
        fine checkpoints and a large one no more than `most`. Rows are parsed only where a checkpoint is sought:
        the pass costs about what count() does."""
        if most < 1:
            raise ValueError(f"at most {most} checkpoints: pass a positive number")
        points: list[Checkpoint] = []
        position, last, every, previous = 0, 0, 1, None  # `previous`: product of the last parsed row with one
        with self._reading():
            for offset, row, record in self._id_records():
                if not points:
                    points.append(Checkpoint(0, offset, row))
                elif position - last >= every - 1:  # from one row early: the row above a boundary names its product
                    product = self._product(record)
                    if product is not None and previous is not None and product != previous:
                        points.append(Checkpoint(position, offset, row))
                        last, previous = position, None
                        if len(points) > most:
                            points, every = points[::2], every * 2
                            last = points[-1].position
                    elif product is not None:
                        previous = product
                position += 1
        return Checkpoints(position, points)

    def _id_records(self) -> Iterator[tuple[int, int, Any]]:
        """`_records()` for `checkpoints`, which needs no more of a row than its product."""
        return self._records()

    def _product(self, record: Any) -> str | None:
        """The product of a record as `_records` yields it (a product-less or unparsable row: None)."""
        return product_of(self._parse(0, record).fields)

    @contextlib.contextmanager
    def _reading(self) -> Iterator[None]:
        try:
            yield
        except OSError as e:
            raise IndexerError(f"catalog {self.path} cannot be read ({e.strerror or e}); make it readable by "
                               "this user (check its permissions and the disk) and run again") from e

    def _count(self) -> int:
        raise NotImplementedError

    def _records(self, offset: int | None = None, row: int = 1) -> Iterator[tuple[int, int, Any]]:
        """(offset, row, record) per row, from `offset` (where row `row` is; None: the first row)."""
        raise NotImplementedError

    def _parse(self, row: int, record: Any) -> RawRow:
        raise NotImplementedError


class CsvReader(CatalogReader):
    format = "csv"

    def _count(self) -> int:
        return sum(1 for _ in self._records())  # exactly the rows __iter__ yields (records csv refuses included)

    def _records(self, offset: int | None = None, row: int = 1) -> Iterator[tuple[int, int, Any]]:
        with open(self.path, "rb") as f:
            lines = _Lines(f)
            records = _csv_records(lines)
            header = next((r for r in records if r != ([], None)), None)  # leading blank lines are skipped
            if header is None:
                return
            if header[1] is not None:
                raise IndexerError(f"catalog {self.path}: the header row is unreadable ({header[1]}); fix the file")
            self._header = [h.strip() for h in header[0]]
            if offset is not None:
                f.seek(offset)
                lines = _Lines(f, offset)
                records = _csv_records(lines)
            start = lines.offset
            for n, record in enumerate(records, start=row):
                yield start, n, record
                start = lines.offset

    def _parse(self, row: int, record: Any) -> RawRow:
        values, error = record
        if error is not None:
            return RawRow(row, None, error)
        if not values or all(not v.strip() for v in values):
            return RawRow(row, None, "empty row")
        if len(values) != len(self._header):
            return RawRow(row, None, f"row has {len(values)} fields but the header has {len(self._header)}")
        return RawRow(row, dict(zip(self._header, values)))


class _Lines:
    """The text lines of a binary file from byte `offset`, as open(newline="") splits them (after \n, \r\n
    or a lone \r, kept in the line) and decoded as UTF-8 (a BOM at the start dropped; undecodable bytes become
    U+FFFD instead of stopping the whole file); `offset`: the bytes consumed so far. The csv module reads one
    record's lines and no more, so between records `offset` is where the next record starts."""

    def __init__(self, f, offset: int = 0):
        self._f, self.offset, self._pending = f, offset, []

    def __iter__(self):
        return self

    def __next__(self) -> str:
        if not self._pending:
            line = self._f.readline()
            if not line:
                raise StopIteration
            if self.offset == 0 and line.startswith(b"\xef\xbb\xbf"):
                self.offset, line = 3, line[3:]
            self._pending = [line] if b"\r" not in line[:-1] else _LONE_CR.split(line)
        line = self._pending.pop(0)
        self.offset += len(line)
        return line.decode("utf-8", errors="replace")


_LONE_CR = re.compile(rb"(?<=\r)(?!\n)(?=.)", re.S)  # between a \r and what follows it, unless that is \n


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

    def _records(self, offset: int | None = None, row: int = 1) -> Iterator[tuple[int, int, Any]]:
        with open(self.path, "rb") as f:
            start = offset or 0
            if start:
                f.seek(start)
            for n, line in enumerate(f, start=row):
                if line.strip():
                    yield start, n, line
                start += len(line)

    def _parse(self, row: int, record: Any) -> RawRow:
        try:
            value = json.loads(record)
        except ValueError as e:  # UnicodeDecodeError is a ValueError too
            return RawRow(row, None, f"invalid JSON: {e}")
        except RecursionError:  # '[[[[...' nested deeper than the parser's stack
            return RawRow(row, None, "invalid JSON: nested deeper than Python can parse; flatten the row")
        if isinstance(value, dict):
            return RawRow(row, value)
        return RawRow(row, None, f"expected a JSON object, got {type(value).__name__}")


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

    def _records(self, offset: int | None = None, row: int = 1, columns: list[str] | None = None
                 ) -> Iterator[tuple[int, int, Any]]:
        """From row index `offset`: its row group is the first one read, and only its rows before `offset` are
        skipped."""
        file = self._file()
        groups, first, skip = [], 0, offset or 0
        for g in range(file.metadata.num_row_groups):
            rows = file.metadata.row_group(g).num_rows
            if groups or skip < first + rows:
                groups.append(g)
            else:
                first += rows
        if columns is not None:
            columns = [c for c in columns if c in file.schema_arrow.names]
        n = first
        for batch in file.iter_batches(batch_size=1024, row_groups=groups, columns=columns):
            for record in batch.to_pylist():
                if n >= skip:
                    yield n, n + 1, record
                n += 1

    def _parse(self, row: int, record: Any) -> RawRow:
        attrs = record.get("attributes")
        if isinstance(attrs, list) and all(isinstance(x, tuple) and len(x) == 2 for x in attrs):
            record["attributes"] = dict(attrs)  # a map column arrives as (key, value) pairs
        return RawRow(row, record)

    def _id_records(self) -> Iterator[tuple[int, int, Any]]:
        return self._records(columns=["product_id", "id"])


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
