"""The submission contract (shared/SUBMISSION_FORMAT.md): parse, validate, hash.

Every broken rule is reported with its stable name (``folder.symlink``,
``manifest.task``, ...) so a student can look it up in the contract.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import UserError
from .identity import TEAM_RE, Identity, Team
from .results import Violation
from .spec_errors import field_path
from .tasks import TASK_ID_RE, TaskSpec, load_task

MANIFEST = "submission.toml"
MAX_TOTAL = 50 * 2**20  # the contract's cap; a task may raise it (``folder_cap``)
FOLDER_MARGIN = 8 * 2**20  # code, manifest, history, write-up, safetensors header
MAX_PYTHON = 2**20
WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth")
HISTORY_COLUMNS = ("epoch", "train_loss", "val_loss")
HISTORY_OPTIONAL = ("train_acc", "val_acc")


class Normalize(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    mean: list[float]
    std: list[float]

    @field_validator("std")
    @classmethod
    def _positive(cls, v: list[float]) -> list[float]:
        if any(s <= 0 for s in v):
            raise ValueError("every std must be positive")
        return v


class ModelSection(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    entrypoint: str = "model:build_model"
    weights: str = "weights.safetensors"
    normalize: Normalize | None = None

    @field_validator("entrypoint")
    @classmethod
    def _entry(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", v):
            raise ValueError("must be `module:callable`, e.g. `model:build_model`")
        return v


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    task: str
    team: str | None = None
    members: list[str] = Field(default_factory=list)
    model: ModelSection = ModelSection()
    training: dict[str, Any] = Field(default_factory=dict)


@dataclass
class Submission:
    """A submission folder as the contract sees it. ``violations`` empty means valid."""

    path: Path
    team: str
    task_id: str
    manifest: Manifest | None = None
    task: TaskSpec | None = None
    files: list[str] = field(default_factory=list)  # declared files, relative
    ignored: list[str] = field(default_factory=list)  # present but not read
    violations: list[Violation] = field(default_factory=list)
    history: list[dict[str, float]] = field(default_factory=list)
    hash: str = ""
    members: list[str] = field(default_factory=list)  # the roster's, else the manifest's
    size: int = 0  # bytes of regular files in the folder

    def broke(self, rule: str, message: str) -> None:
        self.violations.append(Violation(rule=rule, message=message))


def load_submission(
    path: Path, *, tasks_dir: Path | None = None, identity: Identity | None = None
) -> Submission:
    """Read and check a submission folder. Never raises for a broken submission.

    The team and the task come from the grader (``identity``: the folder's name or the
    roster, the pinned task); the manifest may only agree with them."""
    identity = identity or Identity()
    team = identity.team_of(path)
    sub = Submission(path=path, team=team.name, task_id=identity.task or "unknown")
    sub.members = list(team.members)
    if team.problem is not None:
        sub.broke(*team.problem)
    if not path.is_dir():
        sub.broke("folder.exists", f"{path} is not a folder")
        return sub
    _check_folder(sub)
    manifest = _read_manifest(sub)
    if manifest is None:
        _check_size(sub)
        return sub
    sub.manifest = manifest
    if not team.members:
        sub.members = list(manifest.members)
    task_id = _task_id(sub, manifest, identity)
    if task_id is None:
        return sub
    try:
        sub.task = load_task(task_id, tasks_dir)
    except UserError as exc:
        sub.broke("manifest.task", f"{MANIFEST}: field `task`: {exc.message} ({exc.hint})")
        _check_size(sub)
        return sub
    sub.task_id = sub.task.id
    _check_team(sub, manifest, team)
    _check_size(sub)
    _check_model(sub, manifest, sub.task)
    _check_training(sub, manifest, sub.task)
    if not sub.violations:
        sub.hash = content_hash(path, sub.files)
    return sub


def _task_id(sub: Submission, manifest: Manifest, identity: Identity) -> str | None:
    """The task to grade on: the pinned one (the manifest must name it), or the manifest's
    when it is a task id; None (and a broken rule) otherwise."""
    if identity.task is not None:
        if manifest.task != identity.task:
            sub.broke(
                "manifest.task",
                f"{MANIFEST}: field `task`: names {manifest.task[:80]!r}, but this batch "
                f"grades task {identity.task!r}; hand it in for {identity.task!r}",
            )
            return None
        return identity.task
    if not TASK_ID_RE.fullmatch(manifest.task):
        sub.broke(
            "manifest.task",
            f"{MANIFEST}: field `task`: {manifest.task[:80]!r} is not a task id "
            "(1-64 lowercase letters, digits or '-', the name of a task; never a path)",
        )
        return None
    return manifest.task


def _check_team(sub: Submission, manifest: Manifest, team: Team) -> None:
    """The manifest's ``team`` may only agree with the grader's. A declared reference
    solution of its task (listed by the task file, not by the submission) keeps its own."""
    if is_declared_reference(sub) and manifest.team and TEAM_RE.fullmatch(manifest.team):
        sub.team = manifest.team
        return
    if manifest.team is None or manifest.team == team.name or team.problem is not None:
        return
    where = "the roster" if team.from_roster else "the folder name"
    sub.broke(
        "manifest.team",
        f"{MANIFEST}: field `team`: {manifest.team[:80]!r} is not this submission's team "
        f"{team.name!r} (from {where}); remove the field or make it {team.name!r}",
    )


def is_declared_reference(sub: Submission) -> bool:
    """Whether the folder is one of its task's declared reference solutions."""
    if sub.task is None or not sub.task.references:
        return False
    here = sub.path.resolve()
    return any(sub.task.reference_folder(ref) == here for ref in sub.task.references)


def _walk(root: Path) -> list[Path]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = [d for d in dirnames if d != "__pycache__"]
        for name in filenames + [d for d in dirnames if (Path(dirpath) / d).is_symlink()]:
            out.append(Path(dirpath) / name)
    return sorted(out)


def _check_folder(sub: Submission) -> None:
    root = sub.path.resolve()
    total = python = 0
    for item in _walk(sub.path):
        rel = item.relative_to(sub.path).as_posix()
        if item.is_symlink():
            target = (item.parent / os.readlink(item)).resolve()
            if not target.is_relative_to(root):
                sub.broke("folder.symlink", f"{rel} is a symlink that leaves the folder")
            continue
        info = item.lstat()
        if not stat.S_ISREG(info.st_mode):
            sub.broke("folder.special", f"{rel} is not a regular file")
            continue
        total += info.st_size
        if item.suffix == ".py":
            python += info.st_size
        elif info.st_mode & 0o111 or _looks_executable(item):
            sub.broke("folder.executable", f"{rel} is an executable; only .py code is allowed")
    sub.size = total
    if python > MAX_PYTHON:
        sub.broke("folder.python_size", f"Python source is {python / 2**20:.2f} MiB; at most 1 MiB")


def folder_cap(task: TaskSpec | None) -> tuple[int, str]:
    """The folder size cap in bytes for ``task``, and where it comes from: the task's
    ``limits.folder_mb``, else 4 bytes per allowed parameter plus a margin when that is
    more than the contract's 50 MiB, else 50 MiB."""
    if task is not None and task.limits.folder_mb is not None:
        return task.limits.folder_mb * 2**20, f"task {task.id}'s `limits.folder_mb`"
    if task is not None and task.parameter_limit is not None:
        derived = 4 * task.parameter_limit + FOLDER_MARGIN
        if derived > MAX_TOTAL:
            return derived, (
                f"task {task.id}: 4 bytes x parameter_limit {task.parameter_limit:,} + 8 MiB"
            )
    return MAX_TOTAL, "the contract's cap; a task raises it with `limits.folder_mb`"


def _check_size(sub: Submission) -> None:
    cap, source = folder_cap(sub.task)
    if sub.size > cap:
        sub.broke(
            "folder.size",
            f"the folder holds {sub.size / 2**20:.1f} MiB; at most {cap / 2**20:.0f} MiB "
            f"({source})",
        )


def _looks_executable(path: Path) -> bool:
    with open(path, "rb") as fh:
        head = fh.read(4)
    return head == b"\x7fELF" or head[:2] == b"#!"


def _read_manifest(sub: Submission) -> Manifest | None:
    mpath = sub.path / MANIFEST
    if not mpath.is_file() or mpath.is_symlink():
        sub.broke("manifest.present", f"{MANIFEST} is missing; every submission needs one")
        return None
    try:
        data = tomllib.loads(mpath.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        sub.broke("manifest.toml", f"{MANIFEST} is not valid TOML: {exc}")
        return None
    try:
        return Manifest.model_validate(data)
    except ValidationError as exc:
        for err in exc.errors():
            where = field_path(tuple(err["loc"]))
            msg = "unknown field" if err["type"] == "extra_forbidden" else err["msg"]
            rule = f"manifest.{str(err['loc'][0]) if err['loc'] else 'schema'}"
            sub.broke(rule, f"{MANIFEST}: field `{where}`: {msg}")
        return None


def _module_file(root: Path, module: str) -> str | None:
    base = Path(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if (root / candidate).is_file() and not (root / candidate).is_symlink():
            return candidate.as_posix()
    return None


def _check_model(sub: Submission, m: Manifest, task: TaskSpec) -> None:
    module = m.model.entrypoint.partition(":")[0]
    if _module_file(sub.path, module) is None:
        sub.broke(
            "model.entrypoint",
            f"{MANIFEST}: field `model.entrypoint`: no {module}.py in the folder",
        )
    weights = sub.path / m.model.weights
    if Path(m.model.weights).suffix not in WEIGHT_SUFFIXES:
        sub.broke(
            "model.weights",
            f"{MANIFEST}: field `model.weights`: {m.model.weights} must be "
            ".safetensors, .pt or .pth",
        )
    elif not weights.is_file() or weights.is_symlink() or ".." in Path(m.model.weights).parts:
        sub.broke(
            "model.weights",
            f"{MANIFEST}: field `model.weights`: {m.model.weights} is not a file in the folder",
        )
    if m.model.normalize is not None:
        channels = task.input_shape[0]
        for name in ("mean", "std"):
            values = getattr(m.model.normalize, name)
            if len(values) != channels:
                sub.broke(
                    "model.normalize",
                    f"{MANIFEST}: field `model.normalize.{name}` has "
                    f"{len(values)} values; task {task.id} has {channels} channel(s)",
                )
    declared = {MANIFEST, m.model.weights, "REPORT.md"}
    history = m.training.get("history")
    if isinstance(history, str):
        declared.add(history)
    files = []
    for item in _walk(sub.path):
        rel = item.relative_to(sub.path).as_posix()
        if item.is_symlink() or not item.is_file():
            continue
        if rel in declared or item.suffix == ".py":
            files.append(rel)
        else:
            sub.ignored.append(rel)
    sub.files = files


def _check_training(sub: Submission, m: Manifest, task: TaskSpec) -> None:
    missing = [k for k in task.required_training if k not in m.training]
    if missing:
        sub.broke(
            "training.required",
            f"{MANIFEST}: [training] lacks {', '.join(missing)}, which task {task.id} requires",
        )
    history = m.training.get("history")
    if history is None:
        return
    if not isinstance(history, str) or not (sub.path / history).is_file():
        sub.broke(
            "training.history",
            f"{MANIFEST}: field `training.history`: {history!r} is not a file in the folder",
        )
        return
    try:
        sub.history = read_history(sub.path / history)
    except ValueError as exc:
        sub.broke("training.history", f"{history}: {exc}")


def read_history(path: Path) -> list[dict[str, float]]:
    """Parse ``epoch,train_loss,val_loss[,train_acc,val_acc]``; raise ValueError naming the line."""
    import csv

    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        columns = [c.strip() for c in reader.fieldnames or []]
        if tuple(columns[:3]) != HISTORY_COLUMNS or any(
            c not in HISTORY_OPTIONAL for c in columns[3:]
        ):
            raise ValueError(
                f"columns are {','.join(columns) or '(none)'}; expected "
                "epoch,train_loss,val_loss[,train_acc,val_acc]"
            )
        rows = []
        for line, row in enumerate(reader, start=2):
            try:
                rows.append({k.strip(): float(v) for k, v in row.items() if v not in (None, "")})
            except ValueError:
                raise ValueError(f"line {line} holds a value that is not a number") from None
            if len(rows) > 10_000:
                raise ValueError("more than 10,000 epochs")
    return rows


def content_hash(root: Path, files: list[str]) -> str:
    digest = hashlib.sha256()
    for rel in sorted(files):
        digest.update(rel.encode() + b"\0")
        with open(root / rel, "rb") as fh:
            while chunk := fh.read(2**20):
                digest.update(chunk)
        digest.update(b"\0")
    return digest.hexdigest()


def find_submissions(paths: list[Path]) -> list[Path]:
    """Submission folders named by ``paths``: a folder with a manifest is one; a folder
    without one holding folders grades each of them."""
    found: list[Path] = []
    for path in paths:
        if not path.exists():
            raise UserError(
                f"{path} does not exist", "give a submission folder or a folder of them"
            )
        if path.is_dir() and not (path / MANIFEST).exists():
            children = sorted(
                p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")
            )
            if children and any((c / MANIFEST).exists() for c in children):
                found.extend(children)
                continue
        found.append(path)
    return found
