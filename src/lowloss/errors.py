"""The one exception type users see: its message is printed as a single `lowloss: error:` line."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class LowlossError(Exception):
    """A problem the user can act on (bad file, unknown name, mismatched inputs)."""


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """` (did you mean `ot+wa`?)` for the known name closest to a misspelt `name`, else ``."""
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f" (did you mean `{close[0]}`?)" if close else ""


def unknown_name(what: str, name: str, known: Iterable[str]) -> LowlossError:
    """`unknown dataset 'digit' (did you mean `digits`?); known: digits, mnist, …` as an error to raise."""
    known = list(known)
    return LowlossError(f"unknown {what} {name!r}{did_you_mean(name, known)}; known: {', '.join(known)}")


def shortened(text: str, limit: int) -> str:
    """`text` cut to `limit` characters with an ellipsis: a message quotes a user's value, however long."""
    return text if len(text) <= limit else text[: limit - 1] + "…"
