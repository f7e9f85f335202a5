"""Benchmark the speller: lookup time per word at a large vocabulary, build time, and the speller cases, against
the old rapidfuzz speller in the same run.

    coinage bench speller [--words 300000] [--typos 300] [--old-typos 30] [--seed 0] [--out bench/results/speller.json]

- Vocabulary: the demo world's catalog words (world 0) plus random pronounceable words up to --words distinct
  words (4-12 letters, alternating consonant and vowel runs), counts drawn from a Zipf law.
- Lookups: --typos unknown words, each a vocabulary word with one or two random edits (delete, swap, replace,
  insert), and as many known words; per word, `Speller.judge` (the whole decision: English and BM25-stem checks,
  split/join, the deletion-index lookup) for the new speller, and the old speller's `correct_word` (a rapidfuzz
  OSA scan over every word; on --old-typos words, it is slow).
- Build: the new speller's build time at the full vocabulary (done only when the vocabulary's version changes),
  and the old one's (it was rebuilt every 30 s).
- Version check: what SpellingSource polls instead of rebuilding (embedded store: one stat of the artifact).
- Cases: the issue's real words and typos on the world-0 catalog, old and new.
"""
from __future__ import annotations

import argparse
import random
import statistics
import string
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from bench.common import RESULTS, header, write_json

CASES = ["cat bowl", "milk jug", "goat", "cape", "dresses", "red dresses", "sneakers", "drsss", "sneekers",
         "backpak", "tshirt", "t shirt", "stripd tshirt", "teapto", "bakcpack", "trousres", "sneekrs"]


class OldSpeller:
    """The rapidfuzz speller this one replaced (engine/spelling.py at e8bc43e), reduced to its decision."""

    def __init__(self, counts: Mapping[str, int]):
        self.counts = dict(counts)
        self._words = sorted(self.counts)
        self._function = frozenset("a an and at by for from in into near of on or over the to under with "
                                   "without".split())

    def correct_word(self, word: str) -> str | None:
        from rapidfuzz import process
        from rapidfuzz.distance import OSA

        lower = word.lower()
        if lower in self.counts or lower in self._function or len(lower) < 3 or any(c.isdigit() for c in lower):
            return None
        found = process.extract(lower, self._words, scorer=OSA.distance, score_cutoff=1 if len(lower) <= 5 else 2,
                                limit=None)
        return min(found, key=lambda m: (m[1], -self.counts[m[0]], m[0]))[0] if found else None

    def correct(self, query: str) -> str:
        from engine.lexical import WORD_RE

        return WORD_RE.sub(lambda m: self.correct_word(m.group(0)) or m.group(0), query)


def _pseudo_word(rng: random.Random) -> str:
    consonants, vowels = "bcdfghjklmnprstvwz", "aeiou"
    n = rng.randint(4, 12)
    out = []
    while len(out) < n:
        out.append(rng.choice(consonants if len(out) % 2 == 0 else vowels))
    return "".join(out)


def _typo(rng: random.Random, word: str, edits: int) -> str:
    for _ in range(edits):
        i = rng.randrange(len(word))
        kind = rng.choice("dsri")
        if kind == "d" and len(word) > 3:
            word = word[:i] + word[i + 1:]
        elif kind == "s" and i + 1 < len(word):
            word = word[:i] + word[i + 1] + word[i] + word[i + 2:]
        elif kind == "r":
            word = word[:i] + rng.choice(string.ascii_lowercase) + word[i + 1:]
        else:
            word = word[:i] + rng.choice(string.ascii_lowercase) + word[i:]
    return word


def _per_word_ms(fn: Callable[[str], Any], words: Iterable[str]) -> dict[str, float]:
    times = []
    for w in words:
        t0 = time.perf_counter()
        fn(w)
        times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    return {"n": len(times), "mean_ms": round(statistics.fmean(times), 4),
            "p50_ms": round(times[len(times) // 2], 4), "p95_ms": round(times[int(len(times) * 0.95) - 1], 4),
            "max_ms": round(times[-1], 4)}


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, round(time.perf_counter() - t0, 3)


def run(words: int, typos: int, old_typos: int, seed: int) -> dict[str, Any]:
    from engine.spelling import Speller, english_words
    from engine.store import StoreConfig, open_store
    from engine.vocabulary import Vocabulary, vocabulary_version, write_vocabulary
    from world.build import make_world
    from world.catalog import catalog_rows

    rng = random.Random(seed)
    catalog = Vocabulary()
    for row in catalog_rows(make_world(0)):
        catalog.add(row)
    big = Vocabulary(catalog.counts, catalog.rows)
    while len(big.counts) < words:
        big.counts.setdefault(_pseudo_word(rng), max(1, int(1000 / rng.paretovariate(1.0))))
    _, english_s = _timed(english_words)
    speller, build_s = _timed(lambda: Speller(big))
    old, old_build_s = _timed(lambda: OldSpeller(big.counts))
    vocab_words = sorted(big.counts)
    unknown = [_typo(rng, w, rng.choice((1, 2))) for w in rng.sample(vocab_words, typos)]
    unknown = [w for w in unknown if w not in big.counts]
    known = rng.sample(vocab_words, typos)
    figures: dict[str, Any] = {
        "vocabulary_words": len(big.counts), "catalog_words": len(catalog.counts),
        "build_s": {"new": build_s, "old": old_build_s, "english_dictionary_load_s": english_s},
        "lookup_unknown_word": {"new": _per_word_ms(speller.judge, unknown),
                                "old": _per_word_ms(old.correct_word, unknown[:old_typos])},
        "lookup_known_word": {"new": _per_word_ms(speller.judge, known),
                              "old": _per_word_ms(old.correct_word, known)},
    }
    with tempfile.TemporaryDirectory() as tmp, open_store(StoreConfig(path=str(Path(tmp) / "store"))) as store:
        store.create_collection("bench", dim=4)
        _, figures["artifact_write_s"] = _timed(lambda: write_vocabulary(store, "bench", big))
        figures["version_check"] = _per_word_ms(lambda _: vocabulary_version(store, "bench"), range(1000))
    small_new, small_old = Speller(catalog), OldSpeller(catalog.counts)
    figures["cases_world0"] = []
    for q in CASES:
        found = small_new.correct(q)
        figures["cases_world0"].append({"query": q, "old": small_old.correct(q), "new_lexical": found.corrected,
                                        "new_dense": found.dense, "new_suggestion": found.suggestion})
    return figures


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="coinage bench speller", description=__doc__.split("\n\n")[0])
    p.add_argument("--words", type=int, default=300_000, help="distinct vocabulary words")
    p.add_argument("--typos", type=int, default=300, help="unknown (and as many known) words looked up")
    p.add_argument("--old-typos", type=int, default=30, help="unknown words looked up by the old speller (slow)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=RESULTS / "speller.json")
    args = p.parse_args(argv)
    argv = list(argv) if argv is not None else []
    doc = {**header("speller", argv), **run(args.words, args.typos, args.old_typos, args.seed)}
    write_json(args.out, doc)
    for key in ("vocabulary_words", "build_s", "lookup_unknown_word", "lookup_known_word", "version_check"):
        print(f"{key}: {doc[key]}")
    for case in doc["cases_world0"]:
        print(case)
    print(f"wrote {args.out}")
    return 0
