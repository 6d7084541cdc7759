"""Write the few TOML values the kit's tasks and manifests use (no dependency)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any


def value(v: Any) -> str:
    """One TOML value: a bool, number, string, list or inline table."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # a TOML basic string: JSON's escapes are TOML's
    if isinstance(v, Mapping):
        return "{ " + ", ".join(f"{k} = {value(x)}" for k, x in v.items()) + " }"
    if isinstance(v, list | tuple):
        return "[" + ", ".join(value(x) for x in v) + "]"
    raise TypeError(f"no TOML for {type(v).__name__}")


def table(name: str, items: Mapping[str, Any]) -> str:
    """A ``[name]`` table, one ``key = value`` line per item."""
    return f"[{name}]\n" + "".join(f"{k} = {value(v)}\n" for k, v in items.items())
