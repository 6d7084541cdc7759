"""No submission stops the batch: the host stages after the sandbox, guarded one by one.

``guarded_step`` runs one host stage of one submission (its report, its plots, its
Gradescope file, its record in the store); a failure becomes a note in that submission's
document and the batch goes on. ``load_or_invalid`` reads a submission folder that may not
even be walkable (a tree too deep, an unreadable file) into an invalid submission.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from .identity import Identity
from .results import Flag, ResultDocument
from .submission import Submission, load_submission


def guarded_step(doc: ResultDocument, step: str, action: Callable[[], object]) -> bool:
    """Run a host stage after the sandbox for one submission; a failure becomes a note
    in its document (``step_failed``) and the batch goes on. True if it succeeded."""
    try:
        action()
    except Exception as exc:
        doc.flags.append(
            Flag(
                code="step_failed",
                audience="instructor",
                message=f"the {step} stage failed: {type(exc).__name__}: {str(exc)[:300]}",
            )
        )
        return False
    return True


def load_or_invalid(path: Path, *, tasks_dir: Path | None, identity: Identity) -> Submission:
    """``load_submission``; a folder that cannot even be read is an invalid submission of
    the grader's team (rule ``folder.readable``), never an exception."""
    try:
        return load_submission(path, tasks_dir=tasks_dir, identity=identity)
    except Exception as exc:
        sub = Submission(
            path=path, team=identity.team_of(path).name, task_id=identity.task or "unknown"
        )
        sub.broke("folder.readable", f"the folder could not be read ({type(exc).__name__})")
        return sub
