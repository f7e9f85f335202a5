"""Run reporting: counts, per-stage times, the rejects file, the progress bar and progress callbacks."""
from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

log = logging.getLogger(__name__)

STAGES = ("read", "lookup", "decode", "embed", "write")


@dataclass
class IngestReport:
    """What one ingestion pass did."""

    collection: str  # the collection written to
    catalog: str  # the catalog file
    rows: int = 0  # rows read (parseable or not)
    accepted: int = 0  # rows embedded and written this run
    unchanged: int = 0  # rows skipped: same content hash as the stored point
    rejected: int = 0  # rows rejected (see rejects_path)
    pruned: int = 0  # points deleted because their id left the catalog (prune)
    embedder: str = ""  # runtime, precision and device, e.g. 'onnxruntime fp32 CPUExecutionProvider'
    runner: str = "in process"  # where the pass ran: 'in process' or 'ray data, N workers' (indexer.ray_pipeline)
    # busy seconds per stage (read, lookup, decode, embed, write); decode is summed over the workers
    stage_seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    wait_decode_seconds: float = 0.0  # time the embedder waited for decoded images (decoding was the bottleneck)
    seconds: float = 0.0  # wall time of the pass
    rejects_path: str | None = None  # JSONL file: {"row", "id", "reason"} per rejected row
    reject_reasons: dict[str, int] = field(default_factory=dict)  # reason (first words) -> count
    vocabulary_words: int = 0  # distinct words of the spelling vocabulary stored with the collection

    @property
    def rate(self) -> float:
        """Rows handled per second (accepted + unchanged + rejected)."""
        return (self.accepted + self.unchanged + self.rejected) / self.seconds if self.seconds else 0.0

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "rate": round(self.rate, 2)}

    def summary(self) -> str:
        stages = ", ".join(f"{k} {v:.2f}s" for k, v in self.stage_seconds.items())
        lines = [
            f"{self.collection}: {self.accepted} embedded, {self.unchanged} unchanged, {self.rejected} rejected, "
            f"{self.pruned} pruned of {self.rows} rows in {self.seconds:.1f}s "
            f"({self.rate:.1f} rows/s, {self.embedder}, {self.runner})",
            f"stage time: {stages}; embedder waited {self.wait_decode_seconds:.2f}s for decoding",
        ]
        if self.rejected:
            top = ", ".join(f"{n} x {r}" for r, n in sorted(self.reject_reasons.items(), key=lambda kv: -kv[1])[:5])
            lines.append(f"rejected rows ({top}) listed in {self.rejects_path}")
        return "\n".join(lines)


class RejectLog:
    """Appends one JSON object per rejected row; flushed as it goes so a killed run keeps its list."""

    def __init__(self, path: Path, report: IngestReport):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.report = report
        # a lone surrogate in an id or reason is written escaped, never a UnicodeEncodeError that stops the run
        self._file = open(path, "w", encoding="utf-8", errors="backslashreplace")  # noqa: SIM115 - closed in close()
        report.rejects_path = str(path)

    def add(self, row: int, rid: str | None, reason: str) -> None:
        self._file.write(json.dumps({"row": row, "id": rid, "reason": reason}, ensure_ascii=False) + "\n")
        self._file.flush()
        self.report.rejected += 1
        key = reason.split(":")[0][:60]
        self.report.reject_reasons[key] = self.report.reject_reasons.get(key, 0) + 1

    def close(self) -> None:
        self._file.close()


class Progress:
    """A tqdm bar (items/s, ETA) and a throttled callback with a dict snapshot for the web job system."""

    def __init__(self, report: IngestReport, total: int | None, callback: Callable[[dict], None] | None,
                 bar: bool, stage: str, interval_s: float = 0.5):
        from engine.progress import bar as progress_bar

        self.report = report
        self.total = total
        self.callback = callback
        self.stage = stage
        self.interval_s = interval_s
        self.start = time.perf_counter()
        self._last = 0.0
        self.done = 0
        self.bar = progress_bar(total=total, unit="img", desc=stage, disable=not bar, smoothing=0.1,
                                dynamic_ncols=True)

    def advance(self, n: int = 1, force: bool = False) -> None:
        self.done += n
        self.bar.update(n)
        now = time.perf_counter()
        if self.callback is not None and (force or now - self._last >= self.interval_s):
            self._last = now
            self.callback(self.snapshot(now))

    def snapshot(self, now: float | None = None) -> dict[str, Any]:
        elapsed = (now or time.perf_counter()) - self.start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        eta = (self.total - self.done) / rate if self.total is not None and rate > 0 else None
        r = self.report
        return {"stage": self.stage, "collection": r.collection, "done": self.done, "total": self.total,
                "accepted": r.accepted, "unchanged": r.unchanged, "rejected": r.rejected,
                "rate": round(rate, 2), "eta_s": None if eta is None else round(eta, 1),
                "elapsed_s": round(elapsed, 2)}

    def close(self) -> None:
        self.bar.close()
