"""Progress bars in logs: tqdm on a stream that is not a terminal wrote a line per refresh (100 lines of index
progress in a server log); now at most one line per LOG_INTERVAL_S, and a terminal still gets a live bar."""
from __future__ import annotations

import io
import itertools

import pytest
import tqdm.std

from indexer.report import IngestReport, Progress


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def slow_clock(monkeypatch):
    """Every reading of tqdm's clock is 2 s later: 100 updates span 200 s, as a real index run would."""
    ticks = itertools.count(0, 2.0)
    monkeypatch.setattr(tqdm.std, "time", lambda: next(ticks))


def _lines(stream: io.StringIO) -> int:
    return len([part for part in stream.getvalue().replace("\r", "\n").split("\n") if part.strip()])


def test_index_progress_into_a_log_is_a_line_now_and_then(slow_clock, monkeypatch):
    log = io.StringIO()
    monkeypatch.setattr("sys.stderr", log)
    progress = Progress(IngestReport("c", "catalog.jsonl"), 100, None, bar=True, stage="index")
    for _ in range(100):
        progress.advance()
    progress.close()
    assert 2 <= _lines(log) <= 10, log.getvalue()  # 200 s of work: about one line per 30 s, and the last one
    assert "100/100" in log.getvalue()


def test_a_terminal_still_gets_a_live_bar(slow_clock, monkeypatch):
    terminal = _Tty()
    monkeypatch.setattr("sys.stderr", terminal)
    progress = Progress(IngestReport("c", "catalog.jsonl"), 100, None, bar=True, stage="index")
    for _ in range(100):
        progress.advance()
    progress.close()
    assert _lines(terminal) > 50
