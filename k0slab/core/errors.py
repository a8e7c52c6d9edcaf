"""One exception type for every failure a user can act on.

Each error carries the offending value and the fix, so that the task layer can print a single
line and exit non-zero instead of a traceback.
"""
from __future__ import annotations


class K0slabError(Exception):
    """A failure with a message naming what is wrong and a hint saying what to do."""

    def __init__(self, message: str, hint: str = "", details: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        # Extra lines shown under the one-line error, e.g. the tail of a console log.
        self.details = details

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message
