"""The words a concept is registered with, checked in one place for the admin form, the JSON API,
`coinage concept train` and TrainRequest.check:

- the placeholder must not be its own parent word (`<dress>` with parent 'dress'): every plain 'dress'
  search would then be read as the custom token;
- attribute words are deduplicated as the tokenizer reads them (case and runs of spaces do not count),
  and the subspace projection needs enough distinct ones for its rank (trainer/subspace.py);
- a parent word the tokenizer does not hold whole (engine.tokenizer.split_words) gets a warning, not an
  error: training works, but the backbone may not know what the word means;
- the parent and every attribute are printable text (engine.text_checks.name_problem: no NUL, newline, bidi
  override, zero-width or lone surrogate, which would be stored and shown raw on the admin pages), and a concept
  names at most MAX_ATTRIBUTES attribute words.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

from .config import TrainConfig, TrainingError


# Attribute words a concept may name (the subspace projection's rank is at most 32; the automatic choice takes 12).
MAX_ATTRIBUTES = 64


class ConceptWordError(TrainingError):
    """A placeholder, parent or attribute set that cannot be trained; `field` names the one at fault and `code`
    the reason (the web's error code): 'invalid_field' for a malformed word, 'unprintable_word' for one holding a
    control, invisible or bidi-override character, 'own_parent_word' and 'too_few_attributes' for well-formed
    words that do not go together."""

    def __init__(self, field: str, message: str, code: str = "invalid_field"):
        super().__init__(message)
        self.field, self.code = field, code


@dataclass(frozen=True)
class ConceptWords:
    placeholder: str  # '<aurora>'
    parent: str  # 'dress' (stripped)
    attributes: list[str] | None  # distinct, normalised attribute words; None: chosen automatically at training
    warnings: list[str]  # what trains but may not work well (a parent word the tokenizer splits)


def normalise(word: str) -> str:
    """A word as the tokenizer reads it: lower case, single spaces."""
    return " ".join(word.split()).lower()


def distinct_words(words: Sequence[str]) -> list[str]:
    """`words` normalised, empty ones and repeats dropped, in their first order."""
    return list(dict.fromkeys(w for w in (normalise(x) for x in words) if w))


def min_attributes(config: TrainConfig) -> int:
    """Distinct attribute words the method needs: the projection's rank r plus one (words centred on their mean
    span at most |A| - 1 directions), so 2 with the default rank min(|A| - 1, 32); none without a projection."""
    if not config.spec.projection:
        return 0
    return config.rank + 1 if config.rank is not None else 2


def parent_warnings(parent: str) -> list[str]:
    """Warnings about a parent word the backbone's tokenizer does not hold whole."""
    from engine.tokenizer import split_words

    return [f"the parent word {parent.strip()!r} is not in the backbone tokenizer's vocabulary: {word!r} is spelled "
            f"with {len(pieces)} sub-word pieces ({' | '.join(pieces)}), so the backbone may not know what it means; "
            "training goes ahead, but a common word for the category (e.g. 'dress', 'mug') usually makes a better "
            "parent" for word, pieces in split_words(parent).items()]


def check_concept_words(placeholder: str, parent: str, attributes: Sequence[str] | None,
                        config: TrainConfig) -> ConceptWords:
    """The checked words of a concept (see the module docstring); ConceptWordError names the field and the fix."""
    from engine.errors import TokenError
    from engine.tokenizer import validate_placeholder

    try:
        validate_placeholder(placeholder)
    except TokenError as e:
        raise ConceptWordError("placeholder", str(e)) from e
    if not parent or not parent.strip():
        raise ConceptWordError("parent", "parent must be the word naming the concept's category, e.g. 'dress'")
    _check_printable("parent", parent)
    given = [a for a in attributes or () if a.strip()]
    if len(given) > MAX_ATTRIBUTES:
        raise ConceptWordError("attributes", f"{len(given)} attribute words given, at most {MAX_ATTRIBUTES} are "
                               "taken; keep the words that describe the concept best (or leave the field empty)")
    for word in attributes or ():
        _check_printable("attributes", word)
    if normalise(parent) == placeholder[1:-1]:
        raise ConceptWordError("placeholder", f"the placeholder {placeholder} is its own parent word "
                               f"{parent.strip()!r}: every plain {parent.strip()!r} search would read as the custom "
                               f"token; name the concept with a new word (e.g. <{placeholder[1:-1]}-1> or <aurora>) "
                               f"and keep {parent.strip()!r} as its parent", "own_parent_word")
    words = distinct_words(attributes) if attributes is not None else []
    needed = min_attributes(config)
    if words and len(words) < needed:
        given = f"{len(words)} distinct attribute word{'s' if len(words) != 1 else ''} ({', '.join(words)})"
        raise ConceptWordError("attributes", f"method {config.method} projects the token onto the attribute words' "
                               f"subspace of rank {config.rank or 'min(|A| - 1, 32)'}, which needs at least {needed} "
                               f"distinct attribute words; got {given} (repeats, case and spacing do not count). "
                               "Add different attributes, or leave the field empty to choose them automatically",
                               "too_few_attributes")
    if not words and needed > config.num_attributes:
        raise ConceptWordError("attributes", f"the projection rank {config.rank} needs {needed} attribute words, but "
                               f"num_attributes chooses {config.num_attributes}; raise num_attributes or lower rank",
                               "too_few_attributes")
    return ConceptWords(placeholder, parent.strip(), words or None, parent_warnings(parent))


def _check_printable(field: str, word: str) -> None:
    from engine.text_checks import name_problem

    problem = name_problem(word)
    if problem:
        raise ConceptWordError(field, f"{field} word {word[:40]!r} holds {problem}", "unprintable_word")


def with_method(config: TrainConfig, method: str | None) -> TrainConfig:
    """`config` for another method (the one a form or a registered concept asks for)."""
    return config if not method or method == config.method else replace(config, method=method)
