"""The demo world's vocabulary: categories, colours, patterns, scene contexts and emblems.

Everything here is a constant; the renderer, the caption grammar and the samplers read it,
and `world.json` records it so a catalog on disk says which vocabulary made it.

Visible attributes (category, colour, pattern, pattern colour, context) are what captions
talk about. Hidden identity (trim colour, emblem glyph, emblem slot, shape) is drawn on
the product but never named in a caption: that is what a custom token has to learn.
"""
from __future__ import annotations

from types import MappingProxyType
from typing import Mapping

#: Parent categories, each drawn as a parametric silhouette (see `world.silhouettes`).
CATEGORIES: tuple[str, ...] = (
    "dress", "t-shirt", "trousers", "sneaker", "backpack", "mug", "teapot", "lamp",
)

#: Nouns a caption may use for each category; the first is the canonical one.
CATEGORY_NOUNS: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "dress": ("dress",),
    "t-shirt": ("t-shirt", "tee"),
    "trousers": ("trousers", "pants"),
    "sneaker": ("sneaker", "shoe"),
    "backpack": ("backpack", "rucksack"),
    "mug": ("mug", "coffee mug"),
    "teapot": ("teapot",),
    "lamp": ("lamp", "table lamp"),
})

#: Named colours -> sRGB. Chosen to stay apart under the renderer's lighting jitter.
COLOURS: Mapping[str, tuple[int, int, int]] = MappingProxyType({
    "red": (208, 32, 40),
    "orange": (246, 134, 22),
    "yellow": (250, 218, 40),
    "green": (40, 150, 62),
    "blue": (36, 84, 208),
    "purple": (122, 52, 172),
    "pink": (246, 150, 196),
    "brown": (112, 66, 30),
    "black": (28, 28, 30),
    "white": (246, 246, 242),
    "gray": (138, 138, 140),
})

#: Patterns drawn inside the silhouette in the pattern colour ("solid" has none).
PATTERNS: tuple[str, ...] = ("solid", "striped", "dotted", "checked", "zigzag")

#: Pattern -> (adjectives, plural noun) for captions: "a striped dress", "a dress with red stripes".
PATTERN_WORDS: Mapping[str, tuple[tuple[str, ...], str]] = MappingProxyType({
    "striped": (("striped",), "stripes"),
    "dotted": (("dotted", "polka-dot"), "dots"),
    "checked": (("checked", "checkered"), "checks"),
    "zigzag": (("zigzag",), "zigzags"),
})

#: Scene contexts -> caption phrases; the first phrase is canonical (used in query captions).
CONTEXTS: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "studio": ("in a studio", "on a plain studio background", "in the studio"),
    "beach": ("on a beach", "on the beach", "at the beach", "by the sea"),
    "brick_wall": ("on a brick wall", "in front of a brick wall", "against a brick wall"),
    "grass": ("on the grass", "on a lawn", "in the grass"),
    "wooden_table": ("on a wooden table", "on a wood table", "on a wooden tabletop"),
    "snow": ("in the snow", "on the snow", "in a snowy field"),
    "night_city": ("in the city at night", "on a city street at night", "against a night skyline"),
    "pool": ("by a swimming pool", "next to a pool", "by the pool"),
})

#: Emblem glyphs (hidden identity), drawn ~10 px tall on the product body in the trim colour.
EMBLEMS: tuple[str, ...] = (
    "star", "heart", "cross", "ring", "triangle", "diamond",
    "bar", "chevron", "crescent", "square", "arrow", "hourglass",
)

#: Number of emblem placements per category (anchors live in `world.silhouettes`).
EMBLEM_SLOTS: int = 3

#: Words that must never appear in a caption: they would leak the hidden identity.
HIDDEN_WORDS: frozenset[str] = frozenset(EMBLEMS) | {"trim", "emblem", "logo", "badge", "glyph"}

#: About 100 single words that can describe a product; used for automatic attribute selection.
ATTRIBUTE_WORDS: tuple[str, ...] = (
    # the world's colours, then other colour words
    *COLOURS,
    "navy", "beige", "cream", "maroon", "olive", "teal", "turquoise", "gold", "silver",
    "golden", "crimson", "lavender", "khaki", "ivory", "charcoal", "tan",
    # patterns
    "solid", "plain", "striped", "dotted", "checked", "checkered", "zigzag", "plaid",
    "floral", "spotted", "patterned",
    # tone and light
    "bright", "dark", "pale", "light", "vivid", "muted", "faded", "deep", "pastel", "neon",
    # condition and finish
    "old", "new", "worn", "shiny", "matte", "glossy", "vintage", "clean", "dirty", "scuffed",
    "polished", "rustic",
    # size and shape
    "small", "large", "tiny", "big", "tall", "short", "long", "wide", "narrow", "slim",
    "round", "flat", "chunky", "oversized",
    # material
    "cotton", "denim", "leather", "ceramic", "wooden", "metal", "plastic", "wool", "canvas",
    "glass", "silk", "linen", "porcelain", "suede",
    # style
    "casual", "elegant", "sporty", "classic", "modern", "cozy", "simple", "fancy", "cute",
    "trendy", "minimal", "retro",
)


def colour_distance(a: str, b: str) -> float:
    """Perceptual-ish distance between two named colours ("redmean" weighted RGB, 0..~765)."""
    (r1, g1, b1), (r2, g2, b2) = COLOURS[a], COLOURS[b]
    rmean = (r1 + r2) / 2.0
    dr, dg, db = r1 - r2, g1 - g2, b1 - b2
    return ((2 + rmean / 256) * dr * dr + 4 * dg * dg + (2 + (255 - rmean) / 256) * db * db) ** 0.5


#: Two colours closer than this are not used together on one product (pattern or trim vs body).
MIN_CONTRAST: float = 200.0


def contrasting(a: str, b: str) -> bool:
    """True when colours `a` and `b` are far enough apart to read as two colours at 64x64."""
    return a != b and colour_distance(a, b) >= MIN_CONTRAST
