"""The one exception type users see: its message is printed as a single `lowloss: error:` line."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class LowlossError(Exception):
    """A problem the user can act on (bad file, unknown name, mismatched inputs)."""


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """`; did you mean 'ot+wa'?` for the closest known name, or '' when none is close."""
    close = difflib.get_close_matches(name, list(known), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""
