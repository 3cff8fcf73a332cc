"""Errors that the CLI turns into one clear line and a non-zero exit."""

from __future__ import annotations

import difflib
from typing import Iterable


class AttribkitError(Exception):
    """A problem with the user's input or environment, not a bug.

    The message is shown as-is, on one line, without a traceback.
    """


class UnknownNameError(AttribkitError, KeyError):
    def __init__(self, kind: str, name: str, known: Iterable[str]):
        known = sorted(known)
        close = difflib.get_close_matches(name, known, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        listing = ", ".join(known) if known else "none registered"
        super().__init__(f"unknown {kind} {name!r}{hint} (known: {listing})")

    def __str__(self) -> str:  # KeyError would quote the message
        return self.args[0]


class ScenarioError(AttribkitError):
    pass


class DataError(AttribkitError):
    pass
