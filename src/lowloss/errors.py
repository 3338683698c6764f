"""The one exception type users see: its message is printed as a single `lowloss: error:` line."""


class LowlossError(Exception):
    """A problem the user can act on (bad file, unknown name, mismatched inputs)."""
