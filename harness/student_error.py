"""The submission's own error as the student sees it: read from the runner's report,
sanitized, capped, and rendered as one plain-text block.

The report is written where the submission's code ran, so everything in it is untrusted
data: types are checked, text is capped, control characters are dropped, absolute paths
are cut to their last part (the sandbox's ``/submission/`` to a relative path), and the
values of environment variables are replaced. Frames name only relative ``.py`` paths,
and the pipeline keeps only those of the submission's declared files. Every place that
shows the error (CLI, report.html, report.md, Gradescope) prints ``render(error)``.
"""

from __future__ import annotations

import builtins
import os
import re
from typing import Any

from .results import Frame, StudentError
from .sandbox.layout import SAFE_ENV

MAX_MESSAGE = 1200
MAX_LINES = 12
MAX_OUTPUT = 2000
MAX_FRAMES = 8
TYPE_NAME = re.compile(r"[A-Za-z_][\w.]{0,79}")
MOUNT = "/submission/"
# an absolute path: a slash not preceded by a word character, then path characters
ABS_PATH = re.compile(r"(?<![\w.~/-])/(?:[\w.+@~-]+/)*[\w.+@~-]*")
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\u200b-\u200f\u202a-\u202e\u2066-\u2069]")
BUILTIN_ERRORS = {
    name
    for name, value in vars(builtins).items()
    if isinstance(value, type) and issubclass(value, BaseException)
}
SECRET_NAME = re.compile(r"SECRET|TOKEN|KEY|PASS|SEED|CRED|AUTH", re.IGNORECASE)


def _env_values() -> list[str]:
    """Values of the host's and the sandbox's environment worth hiding, longest first."""
    values = set()
    for name, value in [*os.environ.items(), *SAFE_ENV.items()]:
        if len(value) >= 8 or (SECRET_NAME.search(name) and len(value) >= 3):
            values.add(value)
    return sorted(values, key=len, reverse=True)


def _path(match: re.Match[str]) -> str:
    path = match.group(0)
    if path.startswith(MOUNT):
        return path[len(MOUNT) :]
    if path == "/" or path.count("/") < 2:  # "/x": a unit or a ratio, not a host path
        return path
    return ".../" + path.rstrip("/").rsplit("/", 1)[-1]


def clean(text: Any, limit: int, lines: int = MAX_LINES) -> str:
    """Untrusted text made safe to show: a string, no control characters, no absolute
    paths, no environment values, at most ``lines`` lines and ``limit`` characters."""
    out = str(text) if text is not None else ""
    out = CONTROL.sub("", out.replace("\r\n", "\n").replace("\t", "    "))
    for value in _env_values():
        if value in out:
            out = out.replace(value, "<env>")
    out = ABS_PATH.sub(_path, out)
    kept = out.strip("\n").split("\n")
    if len(kept) > lines:
        kept = [*kept[:lines], f"... ({len(kept) - lines} more lines)"]
    out = "\n".join(kept)
    return out if len(out) <= limit else out[: limit - 3] + "..."


def _frame(raw: Any) -> Frame | None:
    if not isinstance(raw, dict):
        return None
    file, line = raw.get("file"), raw.get("line")
    if not isinstance(file, str) or not file.endswith(".py") or not isinstance(line, int):
        return None
    if file.startswith("/") or ".." in file.split("/") or len(file) > 200:
        return None
    return Frame(
        file=clean(file, 200, 1),
        line=max(0, line),
        function=clean(raw.get("function", ""), 80, 1),
        code=clean(raw.get("code", ""), 200, 1),
    )


def from_report(
    error: dict[str, Any], report: dict[str, Any], log: str, *, show_text: bool
) -> StudentError:
    """The student's view of a runner's error. ``show_text=False`` (the code had seen
    hidden inputs, so its text could carry them out): the exception's type only."""
    etype = str(error.get("type", ""))
    etype = etype if TYPE_NAME.fullmatch(etype) else "Exception"
    if not show_text:  # even a type name could carry data out: builtin names only
        return StudentError(type=etype if etype in BUILTIN_ERRORS else "Exception")
    raw = error.get("frames")
    frames = [f for f in map(_frame, raw[-MAX_FRAMES:] if isinstance(raw, list) else []) if f]
    shape = report.get("input_shape")
    ok_shape = (
        isinstance(shape, list)
        and 0 < len(shape) <= 8
        and all(isinstance(d, int) and 0 <= d < 2**31 for d in shape)
    )
    message = str(error.get("message", ""))
    if "weights_only" in message:  # torch's advice to load untrusted pickles: never shown
        message = _without_pickle_advice(message)
    return StudentError(
        type=etype,
        message=clean(message, MAX_MESSAGE),
        frames=frames,
        input_shape=shape if ok_shape else None,
        output=clean(log, MAX_OUTPUT, 40) if log.strip() else "",
    )


def _without_pickle_advice(message: str) -> str:
    """torch's weights-only refusal, reduced to what it refused: its advice to pass
    ``weights_only=False`` is unsafe and not the fix (``harness/hints.py`` gives that)."""
    found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", message)
    what = f" (it found {found.group(1)})" if found else ""
    return f"the weights-only load refused the file: it holds more than tensors{what}"


def first_line(error: StudentError, limit: int = 240) -> str:
    """``Type: first line of the message``, for a one-sentence status message."""
    line = error.message.split("\n", 1)[0].strip()
    text = f"{error.type}: {line}" if line else error.type
    return text if len(text) <= limit else text[: limit - 3] + "..."


def with_error(message: str, error: StudentError | None) -> str:
    """A status message that ends with the error's first line, unless it already says it."""
    if error is None or not error.message:
        return message
    line = error.message.split("\n", 1)[0].strip()
    return message if line[:60] in message else f"{message}: {first_line(error)}"


def only_files(error: StudentError | None, files: list[str]) -> StudentError | None:
    """Frames of the submission's declared files only (the rest are not the student's)."""
    if error is None:
        return None
    allowed = set(files)
    return error.model_copy(update={"frames": [f for f in error.frames if f.file in allowed]})


def shape_text(shape: list[int]) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ")"


def render(error: StudentError | None, *, output: bool = True) -> str:
    """The error as the student reads it, the same in every place it is shown."""
    if error is None:
        return ""
    if not error.message:
        lines = [f"{error.type} (its text is not shown: the code had seen the hidden test inputs)"]
    else:
        head, *rest = error.message.split("\n")
        lines = [f"{error.type}: {head}", *(f"    {r}" for r in rest)]
    if error.frames:
        lines.append("in your code (innermost last):")
        for f in error.frames:
            where = f", in {f.function}" if f.function else ""
            lines.append(f"  {f.file}, line {f.line}{where}")
            if f.code:
                lines.append(f"    {f.code.strip()}")
    if error.input_shape:
        lines.append(f"the model was given a batch of shape {shape_text(error.input_shape)}")
    if error.hint:
        lines.append(f"hint: {error.hint}")
    if output and error.output:
        lines.append("your code's output:")
        lines.extend(f"  {line}" for line in error.output.split("\n"))
    return "\n".join(lines)
