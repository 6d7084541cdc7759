"""The last stage: a grading's result document, graded or ended early by a ``Failed``."""

from __future__ import annotations

from ..hints import explain
from ..ranking import hidden_split_of
from ..redact import redact
from ..results import Flag, HiddenSplit, Params, ResultDocument, SandboxInfo
from ..submission import Submission, is_declared_reference
from ..verdicts import Failed
from .records import Grading, Notes, Scored


def graded(scored: Scored) -> ResultDocument:
    g, scores = scored.grading, scored.scores
    doc = of_grading(g, scored.notes, "graded", "", stage=None)
    doc.metrics, doc.intervals, doc.views = scores.metrics, scores.intervals, scores.views
    doc.details.update(scores.details)
    doc.details["integrity"] = scored.notes.evidence_dict()
    return doc


def ended(g: Grading, notes: Notes, failed: Failed) -> ResultDocument:
    """The document of a grading a stage ended: its status, message and the student's error."""
    doc = of_grading(g, notes, failed.status, failed.message, stage=failed.stage)
    doc.student_output = failed.output
    doc.error = explain(failed.error, failed.stage, g.sub)
    return doc


def of_grading(
    g: Grading, notes: Notes, status: str, message: str, *, stage: str | None
) -> ResultDocument:
    return build(
        g.sub,
        g.mode,
        g.sandbox,
        notes,
        status=status,
        message=message,
        stage=stage,
        split=g.split.split,
        hidden=hidden_split_of(g.split, g.mode),
        cache_key=g.cache_key,
    )


def build(
    sub: Submission,
    mode: str,
    sandbox: SandboxInfo,
    notes: Notes,
    *,
    status: str,
    message: str,
    stage: str | None,
    split: str = "",
    hidden: HiddenSplit | None = None,
    cache_key: str = "",
) -> ResultDocument:
    """Any result document of a submission: the one place its fields are filled."""
    return ResultDocument(
        task=sub.task_id,
        team=sub.team,
        status=status,
        members=list(sub.members),
        mode=mode,
        split=split,
        message=redact(message),
        stage=stage,
        violations=list(sub.violations),
        params=notes.params,
        training=dict(sub.manifest.training) if sub.manifest else {},
        history=sub.history,
        flags=_all_flags(sub, sandbox, notes.flags),
        timing=notes.timings(),
        sandbox=sandbox.model_copy(update={"device": notes.device}),
        hidden_split=hidden,
        submission_path=str(sub.path),
        submission_hash=sub.hash,
        task_spec_hash=sub.task.spec_hash if sub.task else "",
        harness_version=_version(),
        cache_key=cache_key,
        reference=is_declared_reference(sub),
        details=_write_up(sub),
    )


def no_notes(sub: Submission) -> Notes:
    """The notes of a grading that never reached a stage (the task's limit where known)."""
    return Notes(params=Params(limit=sub.task.parameter_limit) if sub.task else Params())


def _version() -> str:
    from .. import __version__

    return __version__


def _all_flags(sub: Submission, sandbox: SandboxInfo, flags: tuple[Flag, ...]) -> list[Flag]:
    out = [f.model_copy(update={"message": redact(f.message)}) for f in flags]
    if sub.ignored:
        out.append(
            Flag(
                code="ignored_files",
                audience="student",
                message=f"not read (undeclared): {', '.join(sub.ignored[:10])}",
            )
        )
    if not sandbox.isolated:
        out.append(
            Flag(
                code="not_isolated",
                audience="student",
                message=(
                    "graded with --sandbox process: the submission's code ran without isolation"
                ),
            )
        )
    return out


def _write_up(sub: Submission) -> dict[str, str]:
    """The student's REPORT.md (shown, escaped, in the report), capped."""
    if "REPORT.md" not in sub.files:
        return {}
    text = (sub.path / "REPORT.md").read_text(encoding="utf-8", errors="replace")
    return {"write_up": text[:20_000]}
