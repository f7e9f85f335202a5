"""`coinage bench ...`: benchmarks that need the whole engine: `quality` (bench/quality.py) and `relevance`
(bench/relevance.py).

The other benchmarks (bench/indexing.py, query.py, store.py, training.py, generation.py) are scripts
run with `python bench/<name>.py`.
"""
from __future__ import annotations


def register(sub) -> list[str]:
    from .quality import __doc__ as quality_doc
    from .quality import add_arguments

    p = sub.add_parser("bench", help="benchmarks: quality (the paper's tables in the demo world), relevance "
                                     "(product search: dense, lexical, hybrid)")
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
    return ["bench"]


def _relevance(args) -> int:
    from .relevance import run_command

    return run_command(args, "coinage bench relevance")


def _quality(args) -> int:
    from .quality import run_command

    return run_command(args, "coinage bench quality")
