"""Checks on text that comes from outside (JSON bodies, forms, catalog rows) before it is stored, encoded or shown.

Python strings can hold what UTF-8 cannot: a lone surrogate (`"\\ud800"`, which JSON's `\\ud800` escape decodes to)
raises UnicodeEncodeError deep inside whatever encodes it next (the tokenizer, SQLite, the vector store). Names
an admin chooses (concept words, version names) must also not carry control characters (NUL, newlines) or
invisible format characters (bidi overrides such as U+202E, zero-width spaces) that would be shown raw.
"""
from __future__ import annotations

import unicodedata

# Unicode general categories refused in a name: control (Cc: NUL, newlines), format (Cf: bidi overrides,
# zero-width characters), surrogate (Cs)
NAME_REFUSED_CATEGORIES = ("Cc", "Cf", "Cs")


def encoding_problem(value: str) -> str | None:
    """Why `value` cannot be encoded as UTF-8 (a lone surrogate, with its position), or None when it can."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        return f"a lone surrogate {value[e.start]!r} at position {e.start} (not valid Unicode text)"
    return None


def name_problem(value: str) -> str | None:
    """Why `value` is unfit as a name shown to people (see NAME_REFUSED_CATEGORIES), or None when it is fit."""
    for i, c in enumerate(value):
        category = unicodedata.category(c)
        if category in NAME_REFUSED_CATEGORIES:
            return (f"the character U+{ord(c):04X} ({unicodedata.name(c, category)}) at position {i}; names take "
                    "printable characters only (no control, invisible or bidi-override characters)")
    return None


def first_unencodable(value: object, path: str = "") -> str | None:
    """The path (e.g. `filters.colour[1]`) of the first string in a JSON-like value (dict keys included) that
    cannot be encoded as UTF-8, or None when every string can."""
    if isinstance(value, str):
        return path if encoding_problem(value) else None
    if isinstance(value, dict):
        for key, item in value.items():
            sub = f"{path}.{key}" if path else str(key)
            if isinstance(key, str) and encoding_problem(key):
                return f"{path} (a key)" if path else "(a field name)"
            found = first_unencodable(item, sub)
            if found:
                return found
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            found = first_unencodable(item, f"{path}[{i}]")
            if found:
                return found
    return None
