"""The attribute vocabulary for automatic attribute selection.

The shipped list is the demo world's ~100 product-describing words (colours, patterns, tone,
condition, size and shape, material, style: `world.vocab.ATTRIBUTE_WORDS`), standing in for
the paper's 100 C-GQA attributes. Pass `TrainRequest.vocabulary` to use a shop's own list.
"""
from __future__ import annotations

from world.vocab import ATTRIBUTE_WORDS


def attribute_vocabulary() -> list[str]:
    return list(ATTRIBUTE_WORDS)
