"""`coinage bench ...`: benchmarks that need the whole engine (today: `quality`, bench/quality.py).

The other benchmarks (bench/indexing.py, query.py, store.py, training.py, generation.py) are scripts
run with `python bench/<name>.py`.
"""
from __future__ import annotations


def register(sub) -> list[str]:
    from .quality import __doc__ as quality_doc
    from .quality import add_arguments

    p = sub.add_parser("bench", help="benchmarks: the quality benchmark (the paper's tables in the demo world)")
    bsub = p.add_subparsers(dest="benchmark", metavar="BENCHMARK")
    bsub.required = True
    q = bsub.add_parser("quality", help=quality_doc.splitlines()[0], description=quality_doc.splitlines()[0])
    add_arguments(q)
    q.set_defaults(func=_quality)
    return ["bench"]


def _quality(args) -> int:
    from .quality import run_command

    return run_command(args, "coinage bench quality")
