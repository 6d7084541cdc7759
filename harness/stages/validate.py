"""The first stage: a loaded submission is admitted to grading, or settled without it.

Settled: invalid (the contract's violations), graded before with the same inputs (the
store's document, unless ``force``), or over its daily quota. Admitted: its task's split
is prepared and a private workspace is open (the caller closes it).
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass

from .. import integrity
from ..data import PreparedSplit, prepare_split
from ..errors import UserError
from ..options import GradeOptions, Mode, OnStage
from ..ranking import hidden_split_of
from ..results import Flag, Params, ResultDocument, SandboxInfo, Violation, read_result, result_path
from ..sandbox import Backend
from ..staging import Workspace
from ..store import ResultsStore
from ..submission import Submission
from ..tasks import TaskSpec
from ..warm import WarmSandboxes
from . import document
from .records import Admitted, Grading, Notes, sandbox_info


@dataclass(frozen=True)
class Settled:
    """A submission the stages need not grade: its document, and whether it is new (to be
    recorded) or the store's own."""

    doc: ResultDocument
    new: bool
    cache_key: str = ""


def admit(
    sub: Submission,
    *,
    options: GradeOptions,
    backend: Backend,
    mode: Mode,
    store: ResultsStore | None,
    on_stage: OnStage | None = None,
    warm: WarmSandboxes | None = None,
) -> Admitted | Settled:
    """Validate, prepare the inputs, look in the store (None: always grade)."""
    if on_stage is not None:
        on_stage(sub.task_id, sub.team, "validate")
    sandbox = sandbox_info(backend)
    if sub.violations or sub.task is None:
        return Settled(invalid(sub, mode, sandbox), new=True)
    task = sub.task
    split = _inputs(task, mode, options)
    key = cache_key(sub, task, split, mode, backend)
    flags = _seed_flags(split, mode)
    stored = None if options.force or store is None else _stored(store, key, sub, mode)
    if stored is not None:
        return Settled(stored, new=False, cache_key=key)
    if mode == "grade" and store is not None:
        quota = _quota(sub, task, store, options, mode, sandbox, split)
        if quota is not None:
            return quota
    grading = Grading(
        sub=sub,
        task=task,
        options=options,
        backend=backend,
        mode=mode,
        workspace=Workspace.create(),
        split=split,
        cache_key=key,
        sandbox=sandbox,
        on_stage=on_stage,
        warm=warm,
    )
    return Admitted(grading, Notes(params=Params(), flags=flags))


def invalid(
    sub: Submission, mode: str, sandbox: SandboxInfo, split: PreparedSplit | None = None
) -> ResultDocument:
    """The document of a submission the contract refuses (or the quota stops)."""
    rules = sorted({v.rule for v in sub.violations})
    first = sub.violations[0].message
    more = f" (and {len(sub.violations) - 1} more)" if len(sub.violations) > 1 else ""
    doc = document.build(
        sub,
        mode,
        sandbox,
        document.no_notes(sub),
        status="invalid",
        message=f"{first}{more}",
        stage="validate",
        split=split.split if split else "",
        hidden=hidden_split_of(split, mode),
    )
    doc.details["rules"] = rules
    return doc


def cache_key(
    sub: Submission, task: TaskSpec, split: PreparedSplit, mode: str, backend: Backend
) -> str:
    """Equal for two gradings of the same files, task, harness, inputs, mode and sandbox."""
    from .. import __version__

    parts = [sub.hash, task.spec_hash, __version__, split.key, mode, backend.name]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()


def _inputs(task: TaskSpec, mode: str, options: GradeOptions) -> PreparedSplit:
    split = task.splits.hidden if mode == "grade" else task.splits.check
    return prepare_split(task, split, data_root=options.data_root)


def _seed_flags(split: PreparedSplit, mode: str) -> tuple[Flag, ...]:
    if not (split.public_fallback_seed and mode == "grade"):
        return ()
    return (
        Flag(
            code="public_seed",
            message=(
                "the hidden split was generated with the public fallback seed: students "
                "can regenerate it; set HARNESS_SECRET_SEED for real grading"
            ),
        ),
    )


def _stored(store: ResultsStore, key: str, sub: Submission, mode: str) -> ResultDocument | None:
    """An earlier grading with the same cache key (republished as the team's result)."""
    old = store.lookup(key)
    if old is None and store.recover(sub.task_id, sub.team, mode):
        old = store.lookup(key)  # written just before a crash, now recorded
    if old is None or old.stage == "harness":
        return None
    store.publish(old)  # the team's result.json shows it again
    return old


def _quota(
    sub: Submission,
    task: TaskSpec,
    store: ResultsStore,
    options: GradeOptions,
    mode: Mode,
    sandbox: SandboxInfo,
    split: PreparedSplit,
) -> Settled | None:
    """Over the daily quota: the last result stands with a note, or, with none, a document
    that says so (never reused as a grading, never counted against the quota)."""
    try:
        integrity.check_quota(task, sub.team, store.history(sub.team, task.id))
    except integrity.QuotaExceeded as exc:
        last = read_result(result_path(options.results_dir, task.id, sub.team))
        if last is None:
            return Settled(_over_quota(sub, exc, mode, sandbox, split), new=True)
        note = Flag(
            code="quota",
            audience="student",
            message=f"{exc.message}: not graded again; this is your last result",
        )
        return Settled(last.model_copy(update={"flags": [*last.flags, note]}), new=False)
    return None


def _over_quota(
    sub: Submission, exc: UserError, mode: str, sandbox: SandboxInfo, split: PreparedSplit
) -> ResultDocument:
    why = Violation(rule="quota.daily", message=f"{exc.message}: not graded ({exc.hint})")
    stopped = dataclasses.replace(sub, violations=[*sub.violations, why])
    doc = invalid(stopped, mode, sandbox, split)
    doc.stage = "quota"
    return doc
