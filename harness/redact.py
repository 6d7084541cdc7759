"""Student-visible text never carries the grader's environment.

Every sandbox starts from ``SAFE_ENV``, but a submission graded with ``--sandbox process``
(no isolation) can still read the grader's environment from ``/proc`` and print it into
an error message. ``redact`` replaces every value of the grader's environment (and the
secret seed however it was given) in a text the student will see.
"""

from __future__ import annotations

import os

MIN_LENGTH = 6  # shorter values ("1", "C", "root") are too common to redact
SECRET_KEYS = ("HARNESS_SECRET_SEED",)  # hidden however short
MARK = "[redacted]"
# values that describe the machine, not secrets, and are common words or paths
_PLAIN = {
    "PYTHONDONTWRITEBYTECODE",
    "PYTHONUNBUFFERED",
    "PYTHONHASHSEED",
    "LANG",
    "LC_ALL",
    "SHLVL",
    "HOME",
    "USER",
    "LOGNAME",
    "SHELL",
    "TERM",
    "PWD",
    "OLDPWD",
    "_",
}


def environment_values() -> list[str]:
    """The values to hide: the grader's environment, longest first (a value that contains
    another is replaced whole)."""
    values = {
        value
        for key, value in os.environ.items()
        if (key not in _PLAIN and len(value) >= MIN_LENGTH)
        or (key in SECRET_KEYS and len(value) >= 2)
    }
    return sorted(values, key=len, reverse=True)


def redact(text: str) -> str:
    """``text`` with every environment value of the grader replaced by ``[redacted]``."""
    if not text:
        return text
    for value in environment_values():
        if value in text:
            text = text.replace(value, MARK)
    return text
