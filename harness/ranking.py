"""The ranking policy: which gradings may count for a task's leaderboard, and why not.

A ``graded`` grading counts for the board only when

1. its document records the hidden split it scored on (documents of schema version 1 do
   not: re-grade them),
2. it ran under an isolating sandbox (``docker`` or ``bwrap``; ``--sandbox process`` runs
   a submission's code as the grader, so its numbers are not trusted for ranking),
3. that split was not generated from the public fallback seed (students can regenerate
   it), and
4. that split is the task's *current* hidden split: the one of the newest grading that
   meets 1 to 3.

Any other graded grading is *stale*: kept, listed with its reason, never ranked. A
grading that did not grade (invalid, failed, ...) carries a status, not a score, and is
never stale. This module is the one home of these rules; the leaderboard, the gradebook
and ``grade history`` call it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from .results import HiddenSplit, ResultDocument, graded_when

if TYPE_CHECKING:
    from .data import PreparedSplit


def hidden_split_of(split: PreparedSplit | None, mode: str) -> HiddenSplit | None:
    """The hidden split's identity for a grading's document (None for checks)."""
    if split is None or mode != "grade":
        return None
    return HiddenSplit(fingerprint=split.fingerprint, public_seed=split.public_fallback_seed)


def _trusted(doc: ResultDocument) -> bool:
    split = doc.hidden_split
    return (
        split is not None
        and not split.public_seed
        and doc.sandbox is not None
        and doc.sandbox.isolated
    )


def current_split(docs: Iterable[ResultDocument]) -> str | None:
    """The fingerprint of the task's current hidden split: the newest trusted grading's."""
    trusted = [d for d in docs if d.mode == "grade" and _trusted(d)]
    if not trusted:
        return None
    newest = max(trusted, key=graded_when)
    assert newest.hidden_split is not None
    return newest.hidden_split.fingerprint


def stale_reason(doc: ResultDocument, current: str | None) -> str | None:
    """Why a graded grading does not count for the board, or None when it counts."""
    if doc.status != "graded":
        return None
    split = doc.hidden_split
    if split is None:
        return (
            "graded before the harness recorded which hidden split it used; re-grade with --force"
        )
    if doc.sandbox is None or not doc.sandbox.isolated:
        backend = doc.sandbox.backend if doc.sandbox else "unknown"
        return f"graded without isolation (--sandbox {backend}); re-grade under docker or bwrap"
    if split.public_seed:
        return (
            "graded on a hidden split generated from the public fallback seed, which students "
            "can regenerate; re-grade with HARNESS_SECRET_SEED set"
        )
    if current is not None and split.fingerprint != current:
        return (
            f"graded on an earlier hidden split ({split.fingerprint[:8]}; the current one is "
            f"{current[:8]}); re-grade it"
        )
    return None


def policy_statement(count: str) -> str:
    """The policy in one paragraph, for the leaderboard page and the docs."""
    which = (
        "its best grading (by the primary metric)"
        if count == "best"
        else "its latest grading, even when an earlier one scored better"
    )
    return (
        f"Each team is ranked on {which}, among the gradings that count: those scored on the "
        "current hidden test split under an isolating sandbox (docker or bwrap). Gradings on "
        "an earlier split, on a split generated from the public fallback seed, or run "
        "without isolation are listed as stale, with the reason, and never ranked."
    )
