"""Task specs: one flat ``tasks/<id>/task.toml`` each, parsed into a frozen object."""

from __future__ import annotations

import hashlib
import re
import tomllib
from functools import cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .errors import UserError
from .spec_errors import user_error_from_validation


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DatasetSpec(_Frozen):
    provider: str
    options: dict[str, Any] = Field(default_factory=dict)


class SplitsSpec(_Frozen):
    public: tuple[str, ...] = ("train", "validation")
    check: str = "validation"
    hidden: str = "test"


class MetricsSpec(_Frozen):
    primary: str
    report: tuple[str, ...]
    bootstrap_samples: int = Field(1000, ge=100, le=100_000)
    bootstrap_seed: int = 0


class LimitsSpec(_Frozen):
    time_seconds: float = Field(600, gt=0)
    memory_mb: int = Field(4096, ge=256)
    pids: int = Field(64, ge=8)
    cpus: float = Field(2.0, gt=0)
    tmpfs_mb: int = Field(64, ge=1)
    output_mb: int = Field(256, ge=1)
    log_kb: int = Field(64, ge=1)
    # the submission folder's size cap, raised above the contract's 50 MiB (None: 50 MiB,
    # or 4 bytes per allowed parameter plus a margin when the task has a parameter limit)
    folder_mb: int | None = Field(None, ge=50)


class GradingSpec(_Frozen):
    """Points for Gradescope-style scores: linear between two values of the primary metric."""

    max_score: float = Field(100, gt=0)
    full_marks_at: float
    zero_marks_at: float
    daily_quota: int = Field(0, ge=0)  # hidden-set gradings per team per day; 0 = unlimited


class IntegritySpec(_Frozen):
    # run the model's own code on the test inputs when it cannot be exported ("unverified")
    allow_eager_fallback: bool = False
    # values a model may hold beyond its weights file before it is flagged; also the float
    # literals a graph may hold before they count
    allowance: int = Field(1024, ge=0)
    show_student_output: bool = False
    operators: tuple[str, ...] = ()  # ATen operator names allowed beyond harness/program/ops.py
    # memorization probe: the first `probe_count` hidden inputs again (at most: sized to
    # fill phase B's static batches, integrity.probe_size), each pixel moved by up to
    # `probe_amplitude` gray levels; flagged when the score drops by more than
    # `probe_gap` of the grading scale (full_marks_at .. zero_marks_at)
    probe_count: int = Field(256, ge=0)
    probe_amplitude: int = Field(1, ge=1, le=16)
    probe_gap: float = Field(0.1, gt=0, le=1)
    # canaries: fresh images from the secret seed mixed into the hidden inputs (generated
    # tasks only; harness/canary.py), flagged when they score `probe_gap` below the hidden
    canaries: int = Field(64, ge=0)


class LeaderboardSpec(_Frozen):
    count: Literal["best", "latest"] = "best"
    public_fraction: float = Field(0.5, gt=0, le=1)
    split_seed: int = 0


class ReferenceSpec(_Frozen):
    name: str
    path: str
    expected: float | None = None  # None: "not yet measured"
    tolerance: float = 0.0
    measured: str = "not yet measured"


class TaskSpec(_Frozen):
    id: str
    title: str
    kind: Literal["classification", "regression"]
    input_shape: tuple[int, int, int]
    classes: tuple[str, ...] = ()
    parameter_limit: int | None = Field(None, gt=0)
    batch_size: int = Field(256, gt=0)
    device: Literal["auto", "cpu"] = "auto"
    required_training: tuple[str, ...] = ()
    dataset: DatasetSpec
    splits: SplitsSpec = SplitsSpec()
    metrics: MetricsSpec
    limits: LimitsSpec = LimitsSpec()
    grading: GradingSpec
    integrity: IntegritySpec = IntegritySpec()
    leaderboard: LeaderboardSpec = LeaderboardSpec()
    references: tuple[ReferenceSpec, ...] = ()
    # filled by the loader, not written in the file
    source: str = ""
    spec_hash: str = ""

    @model_validator(mode="after")
    def _consistent(self) -> TaskSpec:
        if self.kind == "classification" and len(self.classes) < 2:
            raise ValueError("a classification task needs at least two `classes`")
        if self.kind == "regression" and self.classes:
            raise ValueError("a regression task has no `classes`")
        if self.metrics.primary not in self.metrics.report:
            raise ValueError("`metrics.primary` must be one of `metrics.report`")
        if self.splits.hidden in self.splits.public:
            raise ValueError("the hidden split cannot also be public")
        if self.splits.check not in self.splits.public:
            raise ValueError("`splits.check` must be a public split")
        return self

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def reference_folder(self, ref: ReferenceSpec) -> Path:
        """Where a reference lives: ``path`` is relative to the folder that holds the tasks
        folder (the project: ``tasks/<id>/task.toml`` beside ``reference_solutions/``)."""
        project = Path(self.source).resolve().parent.parent.parent
        return (project / ref.path).resolve()


def tasks_root() -> Path:
    """The ``tasks/`` folder: ``$HARNESS_TASKS`` or the repository's own."""
    from .settings import settings

    return settings().tasks_dir


def load_task_file(path: Path) -> TaskSpec:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise UserError(f"{path}: cannot read the task spec ({exc.strerror})") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not valid TOML ({exc})", "check the quoting") from None
    data["source"] = str(path)
    data["spec_hash"] = hashlib.sha256(raw).hexdigest()
    try:
        spec = TaskSpec.model_validate(data)
    except ValidationError as exc:
        raise user_error_from_validation(path, exc, "see tasks/README.md for the fields") from None
    if spec.id != path.parent.name:
        raise UserError(
            f"{path}: field `id`: is {spec.id!r} but the folder is {path.parent.name!r}",
            "a task's id is its folder name",
        )
    _check_registered(spec, path)
    return spec


def _check_registered(spec: TaskSpec, path: Path) -> None:
    from .metrics import METRICS
    from .providers import providers

    if spec.dataset.provider not in providers:
        err = None
        try:
            providers.get(spec.dataset.provider)
        except UserError as exc:
            err = exc
        assert err is not None
        raise UserError(f"{path}: field `dataset.provider`: {err.message}", err.hint)
    for name in spec.metrics.report:
        if name not in METRICS:
            raise UserError(
                f"{path}: field `metrics.report`: unknown metric {name!r}",
                f"known: {', '.join(METRICS.names())}",
            )
        if METRICS.get(name).kind != spec.kind:
            raise UserError(
                f"{path}: field `metrics.report`: {name!r} is a {METRICS.get(name).kind} metric",
                f"this task is {spec.kind}",
            )


@cache
def _load_cached(path: str, mtime_ns: int) -> TaskSpec:
    return load_task_file(Path(path))


TASK_ID_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")


def load_task(task_id: str, root: Path | None = None) -> TaskSpec:
    """The task ``task_id`` of the tasks folder; the id is checked before it becomes a path."""
    root = root or tasks_root()
    if not isinstance(task_id, str) or not TASK_ID_RE.fullmatch(task_id):
        raise UserError(
            f"{str(task_id)[:80]!r} is not a task id",
            "a task id is 1-64 lowercase letters, digits or '-' (the name of a folder "
            "under tasks/), never a path",
        )
    path = root / task_id / "task.toml"
    if not path.is_file():
        known = sorted(p.parent.name for p in root.glob("*/task.toml"))
        import difflib

        close = difflib.get_close_matches(task_id, known, n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"known tasks: {', '.join(known)}"
        raise UserError(f"unknown task {task_id!r}: no {path}", hint)
    return _load_cached(str(path), path.stat().st_mtime_ns)


def all_tasks(root: Path | None = None) -> list[TaskSpec]:
    root = root or tasks_root()
    return [load_task(p.parent.name, root) for p in sorted(root.glob("*/task.toml"))]
