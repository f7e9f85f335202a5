"""Benchmark the speller: lookup time per word at a large vocabulary, build time, and the speller cases, against
the old rapidfuzz speller in the same run.

    coinage bench speller [--words 300000] [--typos 300] [--old-typos 30] [--seed 0] [--out bench/results/speller.json]

- Vocabulary: the demo world's catalog words (world 0) plus random pronounceable words up to --words distinct
  words (4-12 letters, alternating consonant and vowel runs), counts drawn from a Zipf law.
- Lookups: --typos unknown words, each a vocabulary word with one or two random edits (delete, swap, replace,
  insert), and as many known words; per word, `Speller.judge` (the whole decision: English and BM25-stem checks,
  split/join, the deletion-index lookup) for the new speller, and the old speller's `correct_word` (a rapidfuzz
  OSA scan over every word; on --old-typos words, it is slow). Each per-word figure is given twice: wall time
  (`*_ms`, what a search waits, scheduler pauses of a loaded machine included) and the process's CPU time
  (`cpu_*_ms`, the work itself).
- Index: the candidate index alone, engine/spelling_index.py's DeletionIndex against symspellpy's SymSpell (what
  the speller used before, same prefix length and edits): build time, and `closest` on the same unknown words.
- Build: the new speller's build time at the full vocabulary (done only when the vocabulary's version changes),
  and the old one's (it was rebuilt every 30 s); and the update to a next version with 100 words added and 100
  removed (`Speller(..., previous=)`, what SpellingSource does after an index run).
- Version check: what SpellingSource polls instead of rebuilding (embedded store: one stat of the artifact).
- Cases: the issue's real words and typos on the world-0 catalog, old and new.
- Short words (`short_words`, --short-seeds): on each world seed's catalog, every 5-letter catalog word given two
  typos (the relevance benchmark's typo maker, 20 draws per word, draws that are a known or English word left out):
  corrected to the word (its plural or singular counts), to another word, or left as typed; and one typo in each of
  400 common 5-letter English words the catalog lacks: how many the speller rewrites (it should not guess at words
  the shop does not sell). Under three configs in the same run: both rules off (before), the letters-kept rule
  (`short_word_letters_lost`), and that rule plus searching the suggestion of a query that would match nothing
  (`apply_when_nothing_matches`); each draw is a one-word query.
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
    wall, cpu = [], []
    for w in words:
        t0, c0 = time.perf_counter(), time.process_time()
        fn(w)
        cpu.append((time.process_time() - c0) * 1000)
        wall.append((time.perf_counter() - t0) * 1000)
    out: dict[str, float] = {"n": len(wall)}
    for prefix, times in (("", sorted(wall)), ("cpu_", sorted(cpu))):
        out.update({f"{prefix}mean_ms": round(statistics.fmean(times), 4),
                    f"{prefix}p50_ms": round(times[len(times) // 2], 4),
                    f"{prefix}p95_ms": round(times[int(len(times) * 0.95) - 1], 4),
                    f"{prefix}max_ms": round(times[-1], 4)})
    return out


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, round(time.perf_counter() - t0, 3)


def _timed_cpu(fn: Callable[[], Any]) -> tuple[Any, dict[str, float]]:
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, {"wall_s": round(time.perf_counter() - t0, 3), "cpu_s": round(time.process_time() - c0, 3)}


class SymSpellIndex:
    """The candidate index the speller used before engine/spelling_index.py: symspellpy's SymSpell (Verbosity.CLOSEST,
    the C++ optimal-string-alignment distance), behind DeletionIndex's `closest`."""

    def __init__(self, words: Iterable[str], max_edits: int, prefix_length: int):
        from symspellpy import SymSpell
        from symspellpy.editdistance import DistanceAlgorithm, EditDistance

        self._index = SymSpell(max_edits, prefix_length,
                               distance_comparer=EditDistance(DistanceAlgorithm.DAMERAU_OSA_FAST))
        for word in words:
            self._index.create_dictionary_entry(word, 1)

    def closest(self, word: str, max_edits: int) -> tuple[int, list[str]]:
        from symspellpy import Verbosity

        found = [s for s in self._index.lookup(word, Verbosity.CLOSEST, max_edits) if s.term != word]
        return (found[0].distance, sorted(s.term for s in found)) if found else (max_edits + 1, [])


def compare_indexes(words: list[str], unknown: list[str], config) -> dict[str, Any]:
    """DeletionIndex vs SymSpell on the same words: build, and `closest` at the speller's edit limit per word."""
    from engine.spelling_index import DeletionIndex

    limit = max(config.max_edits_short, config.max_edits_long)
    out: dict[str, Any] = {}
    for name, kind in (("deletion_index", DeletionIndex), ("symspellpy", SymSpellIndex)):
        index, build = _timed_cpu(lambda kind=kind: kind(words, limit, config.prefix_length))
        out[name] = {"build": build, "closest": _per_word_ms(lambda w, index=index: index.closest(w, limit), unknown)}
        del index
    return out


def run(words: int, typos: int, old_typos: int, seed: int) -> dict[str, Any]:
    from engine.spelling import Speller, SpellingConfig, english_words
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
    speller, build = _timed_cpu(lambda: Speller(big))
    old, old_build_s = _timed(lambda: OldSpeller(big.counts))
    vocab_words = sorted(big.counts)
    unknown = [_typo(rng, w, rng.choice((1, 2))) for w in rng.sample(vocab_words, typos)]
    unknown = [w for w in unknown if w not in big.counts]
    known = rng.sample(vocab_words, typos)
    indexed = [w for w in vocab_words if len(w) >= SpellingConfig().min_word_length]
    nxt = Vocabulary(big.counts, big.rows)
    for w in rng.sample(vocab_words, 100):
        del nxt.counts[w]
    while len(nxt.counts) < len(big.counts) + 100:
        nxt.counts.setdefault(_pseudo_word(rng), 1)
    _, update = _timed_cpu(lambda: Speller(nxt, previous=speller))
    figures: dict[str, Any] = {
        "vocabulary_words": len(big.counts), "catalog_words": len(catalog.counts),
        "build_s": {"new": build["wall_s"], "new_cpu": build["cpu_s"], "old": old_build_s,
                    "new_update_100_words": update["wall_s"], "new_update_100_words_cpu": update["cpu_s"],
                    "english_dictionary_load_s": english_s},
        "index": compare_indexes(indexed, unknown, speller.config),
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


SHORT_CONFIGS = {"before": {"short_word_letters_lost": -1, "apply_when_nothing_matches": False},
                 "letters_kept": {"apply_when_nothing_matches": False},
                 "letters_kept_and_nothing_matches": {}}


def short_words(seeds: Iterable[int]) -> dict[str, Any]:
    """The Short words figures (module doc), per config and world seed, and their totals."""
    from bench.relevance_shopper import one_typo
    from engine.spelling import Speller, SpellingConfig, english_words
    from engine.vocabulary import Vocabulary
    from world.build import make_world
    from world.catalog import catalog_rows

    english = english_words()
    out: dict[str, Any] = {name: {"per_seed": {}} for name in SHORT_CONFIGS}
    for seed in seeds:
        catalog = Vocabulary()
        for row in catalog_rows(make_world(seed)):
            catalog.add(row)
        plain = Speller(catalog, SpellingConfig(**SHORT_CONFIGS["before"]))
        rng = random.Random(f"short-words:{seed}")
        targets = sorted(w for w in catalog.counts if len(w) == 5 and w.isalpha())
        typos = [(w, t) for w in targets for t in (one_typo(one_typo(w, rng), rng) for _ in range(20))
                 if t != w and t not in english and not plain.known(t)]
        lacking = sorted(w for w in english if len(w) == 5 and w.isalpha() and w not in catalog.counts
                         and english[w] > 1_000_000)
        foreign = [t for t in (one_typo(w, rng) for w in rng.sample(lacking, min(400, len(lacking))))
                   if t not in english and not plain.known(t)]
        for name, overrides in SHORT_CONFIGS.items():
            speller = Speller(catalog, SpellingConfig(**overrides))
            tally = {"right": 0, "wrong": 0, "left": 0, "typos": len(typos), "foreign_typos": len(foreign),
                     "foreign_rewritten": 0}
            for word, typed in typos:
                got = speller.correct(typed).corrected
                key = "left" if got == typed else "right" if got.rstrip("s") == word.rstrip("s") else "wrong"
                tally[key] += 1
            tally["foreign_rewritten"] = sum(speller.correct(t).corrected != t for t in foreign)
            out[name]["per_seed"][seed] = tally
    for name in SHORT_CONFIGS:
        per = out[name]["per_seed"].values()
        total = {k: sum(t[k] for t in per) for k in ("right", "wrong", "left", "typos", "foreign_typos",
                                                    "foreign_rewritten")}
        total["right_share"] = round(total["right"] / max(total["typos"], 1), 4)
        total["wrong_share"] = round(total["wrong"] / max(total["typos"], 1), 4)
        total["foreign_rewritten_share"] = round(total["foreign_rewritten"] / max(total["foreign_typos"], 1), 4)
        out[name]["total"] = total
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="coinage bench speller", description=__doc__.split("\n\n")[0])
    p.add_argument("--words", type=int, default=300_000, help="distinct vocabulary words")
    p.add_argument("--typos", type=int, default=300, help="unknown (and as many known) words looked up")
    p.add_argument("--old-typos", type=int, default=30, help="unknown words looked up by the old speller (slow)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--short-seeds", type=int, nargs="*", default=[0, 1, 2, 3],
                   help="world seeds of the short-word typo figures (none: skip them)")
    p.add_argument("--out", type=Path, default=RESULTS / "speller.json")
    args = p.parse_args(argv)
    argv = list(argv) if argv is not None else []
    doc = {**header("speller", argv), **run(args.words, args.typos, args.old_typos, args.seed)}
    if args.short_seeds:
        doc["short_words"] = short_words(args.short_seeds)
    write_json(args.out, doc)
    for key in ("vocabulary_words", "build_s", "index", "lookup_unknown_word", "lookup_known_word", "version_check"):
        print(f"{key}: {doc[key]}")
    for name, figures in doc.get("short_words", {}).items():
        print(f"short words, {name}: {figures['total']}")
    for case in doc["cases_world0"]:
        print(case)
    print(f"wrote {args.out}")
    return 0
