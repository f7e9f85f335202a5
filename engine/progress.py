"""Progress bars (tqdm) that suit where they are written: a terminal gets a live bar, a log file a line now and
then. tqdm on a stream that is not a TTY still writes every refresh (up to ten a second), each one a line in a
log collector: 100 lines of index progress in a server log. Every Coinage bar is made here."""
from __future__ import annotations

import sys
from typing import Any

from tqdm import tqdm

LOG_INTERVAL_S = 30.0  # at most one progress line this often when the stream is not a terminal


def bar(iterable: Any = None, **kwargs: Any) -> tqdm:
    """`tqdm(iterable, **kwargs)`, writing to stderr (or `file=`) at most every LOG_INTERVAL_S seconds, at a fixed
    width, when that stream is not a terminal."""
    stream = kwargs.get("file") or sys.stderr
    if not _is_tty(stream):
        kwargs["mininterval"] = max(kwargs.get("mininterval", 0.1), LOG_INTERVAL_S)
        kwargs["dynamic_ncols"] = False
        kwargs.setdefault("ncols", 100)
    return tqdm(iterable, **kwargs)


def _is_tty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False
