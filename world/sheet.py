"""Contact sheet of a world: a grid of its photos, rows by context, columns by category.

Run: `python -m world.sheet --seed 0 --out docs/world_samples.png`.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image

from .build import World, make_world
from .render import render
from .vocab import CATEGORIES, CONTEXTS


def contact_sheet(world: World, cols: int = 16, rows: int = 8, size: int = 64) -> Image.Image:
    """Row r shows context r (cycling), column c category c (cycling), each a different product."""
    sheet = Image.new("RGB", (cols * size, rows * size), (255, 255, 255))
    contexts = list(CONTEXTS)
    for r in range(rows):
        for c in range(cols):
            ctx, cat = contexts[r % len(contexts)], CATEGORIES[c % len(CATEGORIES)]
            matches = [ph for ph in world.photos if ph.context == ctx and ph.product.category == cat]
            if matches:
                ph = matches[(c // len(CATEGORIES) * 7 + r * 3) % len(matches)]
                sheet.paste(render(ph, size), (c * size, r * size))
    return sheet


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="world.sheet", description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, default=0, help="world seed")
    ap.add_argument("--out", type=Path, default=Path("docs/world_samples.png"), help="PNG to write")
    ap.add_argument("--cols", type=int, default=16, help="grid columns")
    ap.add_argument("--rows", type=int, default=8, help="grid rows")
    ap.add_argument("--size", type=int, default=64, help="tile side in pixels")
    args = ap.parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    contact_sheet(make_world(args.seed), args.cols, args.rows, args.size).save(args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
