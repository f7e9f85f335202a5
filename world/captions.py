"""The caption grammar: "a photo of a red striped dress on a beach" and its paraphrases.

A caption = template(description, context phrase). Descriptions name the colour, the pattern
(optionally with its colour) and the category; context phrases come from `vocab.CONTEXTS`.
Captions never mention the hidden identity (trim colour, emblem, shape).

Two template sets: TRAIN_TEMPLATES for everything the backbone may train on, and
HELDOUT_TEMPLATES that only appear in backbone evaluation. Photo-dependent templates
("a bright photo of ...") are added only when the photo's lighting or scale makes them true.
"""
from __future__ import annotations

import random

from .specs import PhotoSpec, ProductSpec
from .vocab import CATEGORY_NOUNS, CONTEXTS, PATTERN_WORDS

#: Paraphrase templates the backbone trains on; {desc} carries its article ("a red dress").
TRAIN_TEMPLATES: tuple[str, ...] = (
    "a photo of {desc} {context}",
    "a picture of {desc} {context}",
    "{desc} {context}",
    "product shot of {desc} {context}",
    "an image of {desc} {context}",
    "a product photo of {desc} {context}",
    "{desc}, photographed {context}",
    "a catalog photo of {desc} {context}",
)

#: Templates reserved for backbone evaluation: never produced for training.
HELDOUT_TEMPLATES: tuple[str, ...] = (
    "a snapshot of {desc} {context}",
    "here is {desc} {context}",
)

#: Template used for query captions and the canonical caption of a photo.
CANONICAL_TEMPLATE = "a photo of {desc} {context}"

#: The placeholder a query caption carries where the custom token goes.
TOKEN_PLACEHOLDER = "{token}"

BRIGHT, DARK, CLOSE = 1.08, 0.92, 1.0  # thresholds for the photo-dependent templates


def caption_templates(photo: PhotoSpec | None = None, *, heldout: bool = False) -> tuple[str, ...]:
    """Templates that may caption `photo` (all base templates when `photo` is None)."""
    if heldout:
        return HELDOUT_TEMPLATES
    extra: list[str] = []
    if photo is not None:
        if photo.brightness >= BRIGHT:
            extra.append("a bright photo of {desc} {context}")
        if photo.brightness <= DARK:
            extra.append("a dark photo of {desc} {context}")
        if photo.scale >= CLOSE:
            extra.append("a close-up photo of {desc} {context}")
    return TRAIN_TEMPLATES + tuple(extra)


def _article(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def describe(product: ProductSpec, rng: random.Random | None = None) -> str:
    """Noun phrase with article for the visible attributes: "a red dress with white stripes".

    Without `rng` it is the canonical "a red striped dress" / "a red dress".
    """
    nouns = CATEGORY_NOUNS[product.category]
    if rng is None:
        noun, colour = nouns[0], product.colour
        if product.pattern == "solid":
            return _article(f"{colour} {noun}")
        return _article(f"{colour} {PATTERN_WORDS[product.pattern][0][0]} {noun}")
    noun, colour = rng.choice(nouns), product.colour
    if product.pattern == "solid":
        return _article(rng.choice((f"{colour} {noun}", f"{colour} {noun}", f"plain {colour} {noun}",
                                    f"solid {colour} {noun}")))
    adjectives, plural = PATTERN_WORDS[product.pattern]
    adj, pc = rng.choice(adjectives), product.pattern_colour
    return _article(rng.choice((
        f"{colour} {adj} {noun}",
        f"{colour} {adj} {noun}",
        f"{adj} {colour} {noun}",
        f"{colour} {noun} with {pc} {plural}",
        f"{colour} and {pc} {adj} {noun}",
    )))


def caption(photo: PhotoSpec, rng: random.Random, *, heldout: bool = False) -> str:
    """A random paraphrase describing `photo`'s colour, pattern, category and context."""
    template = rng.choice(caption_templates(photo, heldout=heldout))
    return template.format(desc=describe(photo.product, rng), context=rng.choice(CONTEXTS[photo.context]))


def canonical_caption(photo: PhotoSpec) -> str:
    """The one fixed caption of a photo: "a photo of a red striped dress on a beach"."""
    return CANONICAL_TEMPLATE.format(desc=describe(photo.product), context=CONTEXTS[photo.context][0])


def query_caption(photo: PhotoSpec, token: str = TOKEN_PLACEHOLDER) -> str:
    """PerVL-style query for a held-out photo: "a photo of a {token} dress on a brick wall"."""
    noun = CATEGORY_NOUNS[photo.product.category][0]
    return CANONICAL_TEMPLATE.format(desc=f"a {token} {noun}", context=CONTEXTS[photo.context][0])
