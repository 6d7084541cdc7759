"""The result document: one schema-versioned JSON file per graded submission.

Everything downstream (CLI table, reports, leaderboard, gradebook CSV) is a pure
function of these documents. The field names are a public interface: keep them.
"""

from __future__ import annotations

import json
import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

SCHEMA_VERSION = 2
# version 1 documents (before ``hidden_split``) are still read: the field is then None
READABLE_VERSIONS = (1, 2)
Status = Literal["graded", "invalid", "over_limit", "failed", "timeout", "killed"]
STATUSES: tuple[str, ...] = ("graded", "invalid", "over_limit", "failed", "timeout", "killed")


class _Doc(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Violation(_Doc):
    rule: str  # a stable rule name, e.g. "manifest.task"
    message: str


class LayerCount(_Doc):
    name: str
    shape: list[int]
    numel: int
    kind: Literal["parameter", "buffer", "norm_stat", "constant", "created"] = "parameter"


class Params(_Doc):
    counted: int | None = None  # the number checked against the limit
    limit: int | None = None
    weights_file: int | None = None  # values in the weights file (tied tensors once)
    buffers: int = 0  # normalization running statistics, reported apart
    model_reported: int | None = None  # the model's own sum(p.numel()); only to flag a gap
    verified: bool = False  # counted from the exported computation, not the eager model
    per_layer: list[LayerCount] = Field(default_factory=list)


class SandboxInfo(_Doc):
    backend: str
    isolated: bool
    image: str | None = None
    image_id: str | None = None
    device: str | None = None


class HiddenSplit(_Doc):
    """Which hidden split a grading scored on, without the seed or the labels.

    ``fingerprint`` is a one-way digest of the prepared split's content key (seed digest,
    provider options, private files' sizes and times): equal fingerprints mean the same
    split. ``public_seed`` says the split was generated from the public fallback seed,
    which students can regenerate.
    """

    fingerprint: str
    public_seed: bool = False


class Flag(_Doc):
    """Something the instructor should look at; does not change the status."""

    code: str
    message: str
    audience: Literal["student", "instructor"] = "instructor"


class Frame(_Doc):
    """One frame of the submission's own code: a path relative to its folder."""

    file: str
    line: int
    function: str = ""
    code: str = ""


class StudentError(_Doc):
    """The submission's own error, as the student sees it: sanitized and capped on the
    host (``harness/student_error.py``), never the harness's traceback."""

    type: str
    message: str = ""  # empty when withheld (the code had seen hidden inputs)
    frames: list[Frame] = Field(default_factory=list)  # innermost last
    input_shape: list[int] | None = None  # the batch the model was given
    hint: str = ""
    output: str = ""  # the run's own stdout/stderr tail (when it may be shown)


class ResultDocument(_Doc):
    schema_version: int = SCHEMA_VERSION
    task: str
    team: str
    members: list[str] = Field(default_factory=list)
    mode: Literal["grade", "check"] = "grade"
    split: str = "test"
    status: Status
    message: str = ""
    stage: str | None = None  # the stage a failure happened in
    violations: list[Violation] = Field(default_factory=list)
    metrics: dict[str, float] = Field(default_factory=dict)
    intervals: dict[str, list[float]] = Field(default_factory=dict)
    views: dict[str, dict[str, float]] = Field(default_factory=dict)  # public/private parts
    details: dict[str, Any] = Field(default_factory=dict)
    params: Params = Field(default_factory=Params)
    training: dict[str, Any] = Field(default_factory=dict)
    history: list[dict[str, float]] = Field(default_factory=list)
    flags: list[Flag] = Field(default_factory=list)
    timing: dict[str, float] = Field(default_factory=dict)
    sandbox: SandboxInfo | None = None
    hidden_split: HiddenSplit | None = None  # None: recorded before version 2, or a check
    student_output: str = ""  # the submission's own stdout/traceback: instructor view only
    error: StudentError | None = None  # the submission's own error, for the student
    submission_path: str = ""
    submission_hash: str = ""
    task_spec_hash: str = ""
    cache_key: str = ""  # submission, task spec, harness version, inputs, mode, backend
    harness_version: str = ""
    graded_at: str = Field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    reference: bool = False  # a reference solution, shown but not ranked

    def to_json(self) -> str:
        return self.model_dump_json(indent=2)


def graded_when(doc: ResultDocument) -> datetime:
    """``graded_at`` as an aware datetime (naive stamps are taken as UTC; unreadable ones
    sort first)."""
    try:
        stamp = datetime.fromisoformat(doc.graded_at)
    except ValueError:
        return datetime.min.replace(tzinfo=UTC)
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)


def result_path(results_dir: Path, task: str, team: str) -> Path:
    """``RESULTS/<task>/<team>/result.json``; ValueError unless both are safe folder names
    (the store, the reports and the leaderboard build every path of a result here)."""
    from .identity import path_component

    return results_dir / path_component(task, "task") / path_component(team, "team") / "result.json"


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` so a reader sees the old file or the new one, never a half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_result(results_dir: Path, doc: ResultDocument) -> Path:
    path = result_path(results_dir, doc.task, doc.team)
    write_atomic(path, doc.to_json())
    return path


def read_result(path: Path) -> ResultDocument | None:
    """The document at ``path``, or None when it is missing, truncated or not of this schema."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("schema_version") not in READABLE_VERSIONS:
            return None
        return ResultDocument.model_validate(data)
    except (OSError, ValueError, ValidationError, AttributeError):
        return None


def read_results(results_dir: Path) -> list[ResultDocument]:
    docs = []
    for path in sorted(results_dir.glob("*/*/result.json")):
        doc = read_result(path)
        if doc is not None:
            docs.append(doc)
    return docs


def json_schema() -> dict[str, Any]:
    return ResultDocument.model_json_schema()
