"""The Jinja environment shared by the leaderboard site and the submission reports."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from . import facts

HERE = Path(__file__).parent
CSS_PATH = HERE / "static" / "style.css"


MD_SPECIAL = re.compile(r"([\\`\[\]|])")
CSV_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")


def md_cell(value: Any) -> str:
    """Student text made inert in Markdown (a table cell or a line): no pipes, no line
    breaks, no raw HTML, no link, image or code span (``[``, ``]`` and backticks are
    backslash-escaped: ``![x](http://...)`` shows as text, nothing is fetched)."""
    text = MD_SPECIAL.sub(r"\\\1", str(value))
    text = text.replace("<", "&lt;").replace(">", "&gt;")
    return " ".join(text.split())


def csv_cell(value: Any) -> Any:
    """A cell no spreadsheet runs as a formula: text starting with = + - @ tab or CR gets a
    leading apostrophe (numbers stay numbers). Every CSV the harness writes uses it."""
    if isinstance(value, str) and value.startswith(CSV_TRIGGERS):
        return "'" + value
    return value


@cache
def environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=select_autoescape(enabled_extensions=("html.j2",), default=False),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(
        metric=facts.fmt,
        interval=facts.fmt_interval,
        count=facts.fmt_count,
        seconds=facts.fmt_seconds,
        md=md_cell,
    )
    env.globals.update(label=facts.label, arrow=facts.arrow)
    return env


def render(template: str, **context: Any) -> str:
    return environment().get_template(template).render(**context)


def css() -> str:
    return CSS_PATH.read_text(encoding="utf-8")
