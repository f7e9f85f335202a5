"""Each side's window and their fusion, in Python, so that every store backend gives the same candidate set.

A search asks the store for each side (dense CLIP, lexical BM25) on its own: its best `window` points under the
request's filter (plain nearest queries; both backends agree on those). Fusing here rather than in the engine
is what makes the result the same on every backend and every call:

- a side's window ends at a score, never inside a run of equal scores (BM25 ties: photos sharing their text),
  since engines order equal scores as they like and would let different points in (`side_window`: a run that
  fills the window is taken whole, up to QueryConfig.candidate_window_most);
- RRF ranks equal scores equally (competition ranking, "1224"), so a tie gets one reciprocal rank whatever
  order the engine listed it in; DBSF normalises each side by its mean and spread (Qdrant's formula:
  mean +- 3 sample standard deviations), which the order does not change;
- the fused list is ordered by score, then point id.

The formulas are Qdrant's (qdrant_client/hybrid/fusion.py, the same as the server's): RRF
1 / ((rank + 1) / weight + k - 1), DBSF (score - low) / (high - low) summed over the sides.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence

from engine.store import Fusion, Hit


def side_window(fetch: Callable[[int], list[Hit]], window: int, most: int) -> list[Hit]:
    """A side's best `window` points, ending at a score boundary. `fetch(n)` returns the store's best n points
    (fewer when fewer match). When the last point of the window ties with the first one past it, that whole
    run of equal scores is left out; when the run fills the window (nothing scores above it), the window
    grows to hold the whole run instead, up to `most` points (past that, which points of the run the engine
    returned is the engine's choice). Best first; equal scores by point id."""
    ranked = _ranked(fetch(window + 1))
    if len(ranked) <= window:
        return ranked
    edge = ranked[window - 1].score
    if ranked[window].score < edge:
        return ranked[:window]
    above = [h for h in ranked[:window] if h.score > edge]
    if above:
        return above
    ranked = _ranked(fetch(most + 1))
    tie = [h for h in ranked if h.score >= edge]
    return tie if len(tie) <= most else ranked[:window]


def _ranked(hits: Sequence[Hit]) -> list[Hit]:
    return sorted(hits, key=lambda h: (-h.score, h.id))


def fuse(sides: Sequence[Sequence[Hit]], fusion: Fusion) -> list[Hit]:
    """One list from the sides' windows (dense first, then lexical, as Fusion.weights), best first; a point's
    payload from the first side that has it."""
    if len(sides) == 1:
        return _ranked(sides[0])
    scores: dict[str, float] = {}
    points: dict[str, Hit] = {}
    for i, side in enumerate(sides):
        if fusion.method == "rrf":
            weight = fusion.weights[i] if fusion.weights is not None else 1.0
            contribution = _rrf(side, fusion.rrf_k, weight)
        else:
            contribution = _dbsf(side)
        for hit, score in zip(side, contribution, strict=True):
            scores[hit.id] = scores.get(hit.id, 0.0) + score
            points.setdefault(hit.id, hit)
    fused = [dataclasses.replace(points[pid], score=score) for pid, score in scores.items()]
    return _ranked(fused)


def _rrf(side: Sequence[Hit], k: int, weight: float) -> list[float]:
    if weight <= 0:
        return [0.0] * len(side)
    out, rank = [], 0
    for i, hit in enumerate(side):
        if i and hit.score < side[i - 1].score:
            rank = i  # equal scores share the rank of the first of them
        out.append(1.0 / ((rank + 1.0) / weight + k - 1.0))
    return out


def _dbsf(side: Sequence[Hit]) -> list[float]:
    n = len(side)
    if n <= 1:
        return [0.5] * n
    mean = math.fsum(h.score for h in side) / n
    variance = math.fsum((h.score - mean) ** 2 for h in side) / (n - 1)
    if variance == 0:
        return [0.5] * n
    std = math.sqrt(variance)
    low, high = mean - 3 * std, mean + 3 * std
    if high <= low:  # a spread below float resolution: as equal scores
        return [0.5] * n
    return [(h.score - low) / (high - low) for h in side]
