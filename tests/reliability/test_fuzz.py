"""Property-based fuzzing (hypothesis) of the catalog readers + row validation, the query parser and the
search request parser: whatever the input, the result is a typed value or one of our errors with a
message, never a crash.

Each property runs twice: a small deterministic sample in the default suite (FAST_EXAMPLES, seeded,
so CI is reproducible) and 10,000 random cases under `-m slow`. Every case is pure parsing (no model).
"""
from __future__ import annotations

import csv
import io
import json
import math
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.errors import CoinageError
from engine.product import CATALOG_FIELDS as PAYLOAD_FIELDS
from engine.query import QueryError, SearchRequest, parse_query, text_only_prompt
from engine.query.parse import mentions
from engine.tokenizer import PromptTokenizer, TokenLayout, find_placeholders
from engine.tokens import CustomToken, TokenMeta, TokenSet
from indexer.decode import Rejected, Row, validate
from indexer.errors import IndexerError
from indexer.readers import RawRow, open_catalog

FAST_EXAMPLES = 300
FULL_EXAMPLES = 10_000
_COMMON = dict(deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
FAST = settings(max_examples=FAST_EXAMPLES, derandomize=True, **_COMMON)
FULL = settings(max_examples=FULL_EXAMPLES, **_COMMON)

WORK = Path(tempfile.mkdtemp(prefix="coinage-fuzz-"))  # one scratch folder: hypothesis reruns the body in place


def both(name: str, strategy, check):
    """`test_<name>` (FAST, default suite) and `test_<name>_10k` (FULL, slow) running `check` on `strategy`."""
    fast = FAST(given(strategy)(check))
    full = pytest.mark.slow(FULL(given(strategy)(check)))
    return {f"test_{name}": fast, f"test_{name}_10k": full}


# --- strategies ---------------------------------------------------------------------------

scalars = (st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=True, allow_infinity=True)
           | st.text(max_size=12) | st.sampled_from(["", " ", "12.5", "-1", "nan", "inf", "{}", "[1]", '{"a": 1}']))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                                                          max_size=3), max_leaves=6)
keys = st.sampled_from(PAYLOAD_FIELDS + ("brand", "colour", "")) | st.text(max_size=6)
rows = st.dictionaries(keys, values, max_size=8)
good_row = st.fixed_dictionaries({"id": st.text(min_size=1, max_size=8) | st.integers(0, 10**6),
                                  "title": st.text(min_size=1, max_size=20), "image": st.text(min_size=1, max_size=12)},
                                 optional={"price": scalars, "category": scalars, "attributes": values, "extra": values})
raw_lines = st.binary(max_size=40) | st.sampled_from([b"\xff\xfe{}", b'{"id": "\xc3\x28"}', b"[]", b"null", b"{",
                                                       b'{"id": 1e999}', b'{"id": NaN, "title": Infinity}', b"\x00"])


def jsonl_line(value) -> bytes:
    return value if isinstance(value, bytes) else json.dumps(value).encode()


jsonl_files = st.lists(st.one_of(rows, good_row, raw_lines), max_size=6).map(lambda ls: b"\n".join(map(jsonl_line, ls)))


def csv_text(header, records) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(header)
    writer.writerows(records)
    return buf.getvalue()


cells = st.text(max_size=10) | st.sampled_from(["", "12", "-3", "nan", '{"a": 1}', "{oops", "\x00", "a,b", 'q"q'])
csv_files = st.one_of(
    st.builds(lambda h, r: csv_text(h, r).encode("utf-8"),
              st.lists(st.sampled_from(PAYLOAD_FIELDS + ("brand",)) | st.text(max_size=5), max_size=6),
              st.lists(st.lists(cells, max_size=7), max_size=5)),
    st.binary(max_size=200),
    st.builds(lambda body, junk, at: body[:at] + junk + body[at:],
              st.just(b"id,title,image,price\nr1,Mug,a.png,3\nr2,Cup,b.png,x\n"), st.binary(min_size=1, max_size=20),
              st.integers(0, 50)),
)


# --- catalog readers and validation --------------------------------------------------------------


def _read_all(path: Path) -> None:
    """Read every row and validate it: only RawRow -> Row | Rejected, or a catalog-wide IndexerError."""
    try:
        reader = open_catalog(path)
        expected = reader.count()
        got = 0
        for raw in reader:
            got += 1
            assert isinstance(raw, RawRow) and raw.row >= 1
            assert (raw.fields is None) == (raw.error is not None)
            _check_row(raw)
    except IndexerError as e:
        assert str(e)
        return
    assert got == expected, (got, expected)  # progress bars and ETAs rely on count()


def _check_row(raw: RawRow) -> None:
    result = validate(raw)
    assert isinstance(result, (Row, Rejected))
    if isinstance(result, Rejected):
        assert result.reason and result.row == raw.row
        return
    payload = result.payload()
    json.dumps(payload, allow_nan=False)  # the store takes strict JSON: no NaN, no bytes
    assert result.id and result.title and result.image
    assert result.price is None or (math.isfinite(result.price) and result.price >= 0)


def check_jsonl(data: bytes) -> None:
    path = WORK / "fuzz.jsonl"
    path.write_bytes(data)
    _read_all(path)


def check_csv(data: bytes) -> None:
    path = WORK / "fuzz.csv"
    path.write_bytes(data)
    _read_all(path)


def check_fields(fields: dict) -> None:
    _check_row(RawRow(1, fields))


globals().update(both("jsonl_catalog_reader", jsonl_files, check_jsonl))
globals().update(both("csv_catalog_reader", csv_files, check_csv))
globals().update(both("row_validation", st.one_of(rows, good_row), check_fields))


@FAST
@given(st.binary(max_size=300))
def test_parquet_reader_refuses_garbage_with_an_indexer_error(data):
    path = WORK / "fuzz.parquet"
    path.write_bytes(b"PAR1" + data + b"PAR1" if data[:1] == b"\x00" else data)
    _read_all(path)


# --- query parser ------------------------------------------------------------------------------


def _token(placeholder: str, parent: str) -> CustomToken:
    return CustomToken(placeholder, torch.zeros(2, 4), TokenMeta(parent=parent, backbone_id="x"))


TOKENS = TokenSet([_token("<aurora>", "dress"), _token("<mugsy>", "coffee mug"), _token("<c-3po>", "c++ (robot)"),
                   _token("<blank>", "  ")])
LAYOUT = TokenLayout.from_sizes(49408, {t.placeholder: t.num_vectors for t in TOKENS})
TOKENIZER = PromptTokenizer(77)
pieces = st.sampled_from(["<aurora>", "<mugsy>", "<c-3po>", "<blank>", "<nope>", "<Aurora>", "<a b>", "<>", "<", ">",
                          "<<aurora>>", "dress", "DRESSES", "coffee mug", "c++ (robot)", "aurora", " ", "\t\n", "\u00a0",
                          "<" + "x" * 41 + ">", "é", "\U0001f600", "\x00", "[", "(", "\\", "$1"]) | st.text(max_size=8)
queries = st.lists(pieces, max_size=14).map("".join)


def check_query(text: str) -> None:
    try:
        parsed = parse_query(text, TOKENS, max_chars=200)
    except CoinageError as e:  # QueryError, TokenError, UnknownTokenError: a message for the user
        assert str(e)
        return
    assert parsed.prompt and parsed.prompt == " ".join(parsed.prompt.split())
    assert set(parsed.placeholders) == set(find_placeholders(parsed.prompt)) <= set(TOKENS.names())
    for placeholder in parsed.placeholders:
        parent = TOKENS.get(placeholder).meta.parent.strip()
        assert not parent or mentions(parsed.prompt, parent), (parsed.prompt, parent)
    baseline = text_only_prompt(parsed, TOKENS)
    assert not find_placeholders(baseline)
    TOKENIZER([parsed.prompt], LAYOUT)  # the prompt the text tower will read tokenizes
    if baseline:
        TOKENIZER([baseline], LAYOUT)


globals().update(both("query_parser", queries, check_query))


# --- search request (the JSON API body) -------------------------------------------------------

request_fields = st.sampled_from(["query", "image", "category", "min_price", "max_price", "filters", "ranges", "limit",
                                  "offset", "gair", "weight", "seed", "method", "unknown"])
requests = st.dictionaries(request_fields, values | st.sampled_from(["aGVsbG8=", "!!", [0, 1], [None, 3], {"a": [1, 2]}]),
                           max_size=6) | values


def check_request(data) -> None:
    try:
        request = SearchRequest.from_json(data)
    except QueryError as e:
        assert str(e)
        return
    request.validate()
    json.dumps(request.to_json())


globals().update(both("search_request_parser", requests, check_request))
