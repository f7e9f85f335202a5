"""Errors raised by the engine. Each message names the problem and the fix."""

import difflib


class CoinageError(Exception):
    """Base class: every engine error a user can act on."""


class BackboneNotFound(CoinageError):
    """A backbone identifier did not resolve to a registry name, a local directory or a hub id."""


class BackboneUnavailable(CoinageError):
    """The weights of a backbone could not be loaded (offline, missing files, wrong layout)."""


class ImageError(CoinageError):
    """A photo Coinage cannot use (e.g. a floating-point image)."""


class TokenError(CoinageError):
    """A custom-token problem: malformed placeholder, bad token file, width or backbone mismatch."""


class UnknownTokenError(TokenError):
    """A prompt names a placeholder that is not registered."""

    def __init__(self, placeholder: str, known: list[str]):
        self.placeholder = placeholder
        self.suggestions = difflib.get_close_matches(placeholder, known, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(self.suggestions)}?" if self.suggestions else ""
        listing = ", ".join(sorted(known)) if known else "none are registered yet"
        super().__init__(
            f"unknown custom token {placeholder!r}.{hint} Registered tokens: {listing}. "
            "Register the concept first (admin page or `coinage concept train`), or remove it from the query."
        )
