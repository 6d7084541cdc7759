"""Errors meant for people: one sentence naming the file, field or rule, plus a hint."""

from __future__ import annotations


class UserError(Exception):
    """An operator or configuration mistake, printed without a traceback.

    The CLI prints ``message`` and, on the next line, ``hint``; exit status 2.
    """

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} (hint: {self.hint})" if self.hint else self.message
