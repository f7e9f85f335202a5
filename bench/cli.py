"""`coinage bench <name> ...`: every benchmark, each writing bench/results/<name>.json through bench/common
(benchmark, command, date, machine). `coinage bench <name> --help` lists a benchmark's options."""
from __future__ import annotations

import importlib

# Benchmarks whose module (bench.<name>) parses its own arguments in main(argv); one line each for the help.
SCRIPTS = {
    "gair": "ways to choose GAIR's w and fuse the concept's photos or the preview, side by side (bench/gair.py)",
    "generation": "preview generation speed on the demo backbone (bench/generation.py)",
    "job_bounds": "the job system's bounds: rows added by 1,000 anonymous requests, search p95 with the job store "
                  "stalled (bench/job_bounds.py)",
    "indexing": "indexing throughput: CLIP image encoder in PyTorch vs ONNX Runtime, and the pipeline (bench/indexing.py)",
    "merch": "what merchandising rules cost a search: boost, a pin beyond the candidate list, a concept's products "
             "(bench/merch.py)",
    "load": "concurrent searches against the app under gunicorn, idle and while jobs run (bench/load.py)",
    "query": "query service: search latency, GAIR's time split and caches (bench/query.py)",
    "relevance_shopper": "what shoppers type: prices, negations, ids, concept names as words, typos, loose phrasing, "
                         "understanding on vs off (bench/relevance_shopper.py)",
    "suggest": "suggestions as you type: index build and p50/p95 per keystroke at 100k products (bench/suggest.py)",
    "realsize": "every deployment path at SD 1.5 / ViT-L-14 shapes on a random backbone (bench/realsize.py)",
    "store": "embedded vector-store candidates on CLIP-like vectors (bench/store.py)",
    "speller": "speller lookup and build time at a large vocabulary, and its cases, vs the old one (bench/speller.py)",
    "training": "training-loop cost: our step vs diffusers' textual-inversion step (bench/training.py)",
}


def register(sub) -> list[str]:
    from .quality import __doc__ as quality_doc
    from .quality import add_arguments

    p = sub.add_parser("bench", help="benchmarks: quality (the paper's tables in the demo world), relevance "
                                     "(product search: dense, lexical, hybrid), speed, scale and load")
    bsub = p.add_subparsers(dest="benchmark", metavar="BENCHMARK")
    bsub.required = True
    q = bsub.add_parser("quality", help=quality_doc.splitlines()[0], description=quality_doc.splitlines()[0])
    add_arguments(q)
    q.set_defaults(func=_quality)
    from .relevance import __doc__ as relevance_doc
    from .relevance import add_arguments as relevance_arguments

    r = bsub.add_parser("relevance", help=relevance_doc.splitlines()[0], description=relevance_doc.splitlines()[0])
    relevance_arguments(r)
    r.set_defaults(func=_relevance)
    for name, help_text in SCRIPTS.items():
        s = bsub.add_parser(name, help=help_text, add_help=False)  # --help goes to the benchmark's own parser
        s.set_defaults(func=_script(name), forward_args=True)
    return ["bench"]


def _relevance(args) -> int:
    from .relevance import run_command

    return run_command(args, "coinage bench relevance")


def _quality(args) -> int:
    from .quality import run_command

    return run_command(args, "coinage bench quality")


def _script(name: str):
    def run(args) -> int:
        return int(importlib.import_module(f"bench.{name}").main(list(args.extra)) or 0)

    return run
