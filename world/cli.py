"""`coinage world ...`: build the demo world's catalog, train and evaluate its backbone."""
from __future__ import annotations

import importlib


def register(sub) -> list[str]:
    p = sub.add_parser("world", help="the demo world: catalog, backbone training, evaluation")
    wsub = p.add_subparsers(dest="action", metavar="ACTION")
    wsub.required = True
    for action, module, help_text in (
        ("catalog", "world.catalog", "write the procedural product catalog (images + catalog.jsonl/csv + splits)"),
        ("train", "world.train", "train the demo backbone (CLIP + latent diffusion) on the world"),
        ("eval", "world.evaluate", "measure the demo backbone: zero-shot accuracy, retrieval, generation"),
    ):
        # every argument (--help included) goes to the module's own parser: coinage.cli passes them as args.extra
        a = wsub.add_parser(action, help=help_text, add_help=False)
        a.set_defaults(func=_forward(module), forward_args=True)
    return ["world"]


def _forward(module: str):
    def run(args) -> int:
        return int(importlib.import_module(module).main(list(args.extra)) or 0)

    return run
