"""Query parsing: placeholders checked against the registered tokens, parent words inserted.

A query reads like `<aurora> dress on a beach`. Each placeholder must be a registered token
(an unknown one raises UnknownTokenError naming the closest registered names). Composition
needs the parent word c after the token (`[t, *, c]`): when a query names a token but not its
parent anywhere, the parent is inserted right after each occurrence of the token and a note
says so (`<aurora> on a beach` -> `<aurora> dress on a beach`).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from engine.errors import UnknownTokenError
from engine.tokenizer import PLACEHOLDER_RE, find_placeholders
from engine.tokens import TokenSet

from .errors import QueryError


@dataclass(frozen=True)
class ParsedQuery:
    original: str  # the query as the user typed it
    prompt: str  # what is encoded: whitespace normalised, parent words inserted
    placeholders: tuple[str, ...]  # distinct custom tokens, in order of first appearance
    notes: tuple[str, ...] = ()  # what parsing changed or noticed, for the response

    @property
    def has_tokens(self) -> bool:
        return bool(self.placeholders)


def parse_query(text: str, tokens: TokenSet, max_chars: int = 500) -> ParsedQuery:
    """Check and normalise a text query; raises QueryError, TokenError or UnknownTokenError."""
    if not isinstance(text, str):
        raise QueryError(f"the query must be text, got {type(text).__name__}")
    prompt = _squash(text)
    if not prompt:
        raise QueryError("empty query: type what you are looking for (e.g. '<aurora> dress on a beach') "
                         "or search by an image")
    if len(prompt) > max_chars:
        raise QueryError(f"query of {len(prompt)} characters is longer than the {max_chars} accepted; shorten it "
                         "(the text encoder reads at most 75 word pieces)")
    found = find_placeholders(prompt)  # TokenError for malformed placeholders or stray brackets
    placeholders = tuple(dict.fromkeys(found))
    for placeholder in placeholders:
        if placeholder not in tokens:
            raise UnknownTokenError(placeholder, tokens.names())
    missing = {p: parent for p in placeholders
               if (parent := tokens.get(p).meta.parent.strip()) and not mentions(prompt, parent)}
    notes = [f"added the parent word {parent!r} after {p} (the query did not name it)" for p, parent in missing.items()]
    for placeholder, parent in missing.items():
        prompt = prompt.replace(placeholder, f"{placeholder} {parent} ")  # spaced: "<t>word" must not glue
    notes.extend(_bare_names(prompt, tokens, placeholders))
    return ParsedQuery(text, _squash(prompt), placeholders, tuple(notes))


def mentions(prompt: str, word: str) -> bool:
    """Whether `word` (or its plural) occurs as a whole word or phrase outside placeholders."""
    plain = PLACEHOLDER_RE.sub(" ", prompt)
    return re.search(rf"(?<![\w-]){re.escape(word)}(?:s|es)?(?![\w-])", plain, re.IGNORECASE) is not None


def text_only_prompt(parsed: ParsedQuery, tokens: TokenSet) -> str:
    """The 'text only' baseline prompt: each token replaced by its parent word (`<aurora> dress` -> `dress`)."""
    prompt = parsed.prompt
    for placeholder in parsed.placeholders:
        parent = tokens.get(placeholder).meta.parent.strip()
        if parent:
            prompt = re.sub(rf"{re.escape(placeholder)}\s+(?={re.escape(parent)}(?:s|es)?(?![\w-]))", "", prompt,
                            flags=re.IGNORECASE)
        prompt = prompt.replace(placeholder, parent)
    return _squash(prompt)


def _bare_names(prompt: str, tokens: TokenSet, used: tuple[str, ...]) -> list[str]:
    """Notes for registered token names typed without brackets ('aurora' where '<aurora>' was probably meant)."""
    plain = PLACEHOLDER_RE.sub(" ", prompt).lower()
    words = set(re.findall(r"[a-z0-9][a-z0-9_\-]*", plain))
    return [f"{name[1:-1]!r} is read as plain text; write {name} to use the custom token"
            for name in tokens.names() if name not in used and name[1:-1] in words]


def _squash(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()
