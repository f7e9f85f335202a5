"""Prompt tokenization with custom-token placeholders.

A placeholder is `<name>` (lower-case letters, digits, '-' and '_'). Each registered placeholder
maps to `n` new ids after the base vocabulary, one per learned vector, in the order diffusers
expands `tok` into `tok tok_1 ... tok_{n-1}`. Text between placeholders goes through open_clip's
BPE tokenizer (the same vocabulary as the CLIP tokenizer Stable Diffusion ships).
"""
from __future__ import annotations

import functools
import logging
import re
from dataclasses import dataclass
from typing import Mapping, Sequence

import torch

from .errors import TokenError, UnknownTokenError

log = logging.getLogger(__name__)

NAME_PATTERN = r"[a-z0-9][a-z0-9_\-]{0,39}"
PLACEHOLDER_RE = re.compile(rf"<{NAME_PATTERN}>")
_CANDIDATE_RE = re.compile(r"<[^<>]*>")


def validate_placeholder(placeholder: str) -> str:
    if not isinstance(placeholder, str) or not PLACEHOLDER_RE.fullmatch(placeholder):
        raise TokenError(
            f"malformed placeholder {placeholder!r}: write it as '<name>' with 1-40 lower-case letters, "
            "digits, '-' or '_' inside the angle brackets, e.g. '<aurora>'"
        )
    return placeholder


def split_prompt(prompt: str) -> list[str]:
    """Split a prompt into text pieces and placeholders; stray or malformed brackets are an error."""
    pieces: list[str] = []
    pos = 0
    for match in _CANDIDATE_RE.finditer(prompt):
        text = prompt[pos:match.start()]
        _check_text(text, prompt)
        if text:
            pieces.append(text)
        pieces.append(validate_placeholder(match.group(0)))
        pos = match.end()
    _check_text(prompt[pos:], prompt)
    if prompt[pos:]:
        pieces.append(prompt[pos:])
    return pieces


def find_placeholders(prompt: str) -> list[str]:
    return [p for p in split_prompt(prompt) if PLACEHOLDER_RE.fullmatch(p)]


def _check_text(text: str, prompt: str) -> None:
    if "<" in text or ">" in text:
        raise TokenError(
            f"unbalanced '<' or '>' in {prompt!r}: custom tokens are written '<name>'; remove stray brackets"
        )


@functools.lru_cache(maxsize=1)
def bpe_tokenizer():
    from open_clip.tokenizer import SimpleTokenizer

    return SimpleTokenizer()


def split_words(text: str) -> dict[str, list[str]]:
    """The words of `text` that the BPE vocabulary does not hold whole: word -> the pieces it is spelled with.

    The tokenizer is byte-level BPE, so it has no unknown-token id: every string encodes. A word missing from
    its vocabulary is instead spelled out as several sub-word pieces (raw UTF-8 byte pieces for most non-Latin
    text and emoji), whose embeddings say little about what the word means. Punctuation splits words first, as
    in the tokenizer ('t-shirt' is 't', '-', 'shirt', each whole). Undecodable byte pieces are shown escaped.
    """
    bpe = bpe_tokenizer()
    out: dict[str, list[str]] = {}
    for word in bpe.pat.findall(bpe.clean_fn(text)):
        pieces = bpe.bpe("".join(bpe.byte_encoder[b] for b in word.encode("utf-8"))).split(" ")
        if len(pieces) > 1:
            out[word] = [bytes(bpe.byte_decoder[c] for c in p.removesuffix("</w>")).decode("utf-8", "backslashreplace")
                         for p in pieces]
    return out


@dataclass(frozen=True)
class TokenLayout:
    """Where each placeholder's vectors sit after the base vocabulary."""

    vocab_size: int
    offsets: Mapping[str, tuple[int, int]]  # placeholder -> (first row in the extra table, number of vectors)

    @classmethod
    def from_sizes(cls, vocab_size: int, sizes: Mapping[str, int]) -> "TokenLayout":
        offsets, start = {}, 0
        for placeholder, n in sizes.items():
            offsets[validate_placeholder(placeholder)] = (start, int(n))
            start += int(n)
        return cls(vocab_size, offsets)

    def ids(self, placeholder: str) -> list[int]:
        if placeholder not in self.offsets:
            raise UnknownTokenError(placeholder, list(self.offsets))
        start, n = self.offsets[placeholder]
        return [self.vocab_size + start + i for i in range(n)]


@dataclass
class Tokenized:
    ids: torch.Tensor  # (B, L) int64; ids >= vocab_size index the extra (custom) table
    eot_index: torch.Tensor  # (B,) position of the end-of-text token: where the pooled feature is read


class PromptTokenizer:
    """Tokenize prompts exactly as the diffusion pipeline's CLIP tokenizer does, placeholders included."""

    def __init__(self, context_length: int, pad: str = "eot"):
        self.bpe = bpe_tokenizer()
        self.context_length = context_length
        self.sot_id = self.bpe.sot_token_id
        self.eot_id = self.bpe.eot_token_id
        self.pad_id = self.eot_id if pad == "eot" else 0

    def encode_one(self, prompt: str, layout: TokenLayout) -> list[int]:
        ids: list[int] = []
        for piece in split_prompt(prompt):
            ids.extend(layout.ids(piece) if PLACEHOLDER_RE.fullmatch(piece) else self.bpe.encode(piece))
        return ids

    def __call__(self, prompts: Sequence[str], layout: TokenLayout) -> Tokenized:
        if isinstance(prompts, str):
            prompts = [prompts]
        rows, eots = [], []
        room = self.context_length - 2
        for prompt in prompts:
            body = self.encode_one(prompt, layout)
            if len(body) > room:
                log.warning("prompt truncated to %d tokens: %r", room, prompt)
                body = body[:room]
            row = [self.sot_id, *body, self.eot_id]
            eots.append(len(row) - 1)
            rows.append(row + [self.pad_id] * (self.context_length - len(row)))
        return Tokenized(torch.tensor(rows, dtype=torch.long), torch.tensor(eots, dtype=torch.long))
