"""Turn pydantic validation errors into one sentence naming the file and the field."""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError

from .errors import UserError


def field_path(loc: tuple[object, ...]) -> str:
    return ".".join(str(part) for part in loc) or "(top level)"


def user_error_from_validation(path: Path | str, err: ValidationError, hint: str) -> UserError:
    first = err.errors()[0]
    where = field_path(tuple(first["loc"]))
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        msg = "unknown field"
    more = f" (and {err.error_count() - 1} more)" if err.error_count() > 1 else ""
    return UserError(f"{path}: field `{where}`: {msg}{more}", hint)
