"""Ranking: a pure function from result documents and a task spec to a leaderboard.

Rules (the published contract of ``grade leaderboard``):

- Only ``grade``-mode documents of the task count; ``check`` runs never rank.
- Only gradings of the current hidden split under an isolating sandbox count
  (``harness.ranking``); a team with none is listed as stale, with the reason.
- Each team has one counted grading: the best graded one by the primary metric on the
  view, or the latest one when the task says ``leaderboard.count = "latest"``.
- Ranked by the primary metric in its direction; ties go to fewer counted parameters,
  then to the earlier grading.
- A team whose 95 % interval overlaps the leader's is marked statistically tied.
- Reference solutions are shown among the ranked rows at their value, without a rank.
- A team whose counted grading did not grade (or has no value on the view) is listed
  apart with its status.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pandas as pd

from ..points import points_for
from ..ranking import current_split, stale_reason
from ..results import ResultDocument, read_result
from ..tasks import TaskSpec
from . import facts

View = Literal["public", "private", "all"]
RowKind = Literal["ranked", "reference", "unranked", "stale"]


@dataclass(frozen=True)
class Row:
    kind: RowKind
    doc: ResultDocument  # the counted grading
    metrics: dict[str, float]  # values on the view
    value: float | None  # the primary metric on the view
    interval: tuple[float, float] | None
    rank: int | None = None
    tied: bool = False  # interval overlaps the leader's
    gradings: int = 1  # how many gradings the team has
    reason: str = ""  # why a stale row's grading does not count

    @property
    def team(self) -> str:
        return self.doc.team


@dataclass(frozen=True)
class Board:
    task: TaskSpec
    view: str
    ranked: list[Row]
    references: list[Row]
    unranked: list[Row]
    history: list[ResultDocument] = field(default_factory=list)  # every grading, newest first
    stale: list[Row] = field(default_factory=list)  # teams with no grading that counts
    current_split: str | None = None  # fingerprint of the hidden split that counts

    @property
    def primary(self) -> str:
        return self.task.metrics.primary

    @property
    def leader(self) -> Row | None:
        return self.ranked[0] if self.ranked else None

    @property
    def teams(self) -> int:
        return len(self.ranked) + len(self.unranked) + len(self.stale)

    def table(self) -> list[Row]:
        """Ranked rows with the reference rows placed at their value."""
        rows = list(self.ranked)
        for ref in self.references:
            if ref.value is None:
                rows.append(ref)
                continue
            at = len(rows)
            for i, row in enumerate(rows):
                if row.value is None or facts.better(self.primary, ref.value, row.value):
                    at = i
                    break
            rows.insert(at, ref)
        return rows

    def counted(self, doc: ResultDocument) -> bool:
        return any(row.doc is doc for row in (*self.ranked, *self.references, *self.unranked))

    def stale_reason(self, doc: ResultDocument) -> str | None:
        """Why ``doc`` does not count for this board (None when it may)."""
        return None if doc.reference else stale_reason(doc, self.current_split)


def load_gradings(results_dir: Path) -> dict[str, list[ResultDocument]]:
    """Every readable grading under ``results_dir``, by task.

    Reads ``<task>/<team>/result.json`` (the latest) and ``<task>/<team>/history/*.json``
    (every grading); the latest also sits in the history, so copies are dropped.
    Unreadable or other-schema files are skipped.
    """
    by_task: dict[str, list[ResultDocument]] = defaultdict(list)
    if not results_dir.is_dir():
        return {}
    seen: set[tuple[str, str, str, str, str]] = set()
    for team_dir in sorted(p for p in results_dir.glob("*/*") if p.is_dir()):
        paths = [team_dir / "result.json", *sorted((team_dir / "history").glob("*.json"))]
        for path in paths:
            doc = read_result(path) if path.is_file() else None
            if doc is None:
                continue
            key = (doc.task, doc.team, doc.graded_at, doc.submission_hash, doc.status)
            if key in seen:
                continue
            seen.add(key)
            by_task[doc.task].append(doc)
    return dict(by_task)


def build_board(docs: Iterable[ResultDocument], task: TaskSpec, *, view: str = "public") -> Board:
    """The leaderboard of ``task`` on one view of the hidden split."""
    if view not in facts.VIEWS:
        raise ValueError(f"view must be one of {facts.VIEWS}, not {view!r}")
    mine = [d for d in docs if d.task == task.id and d.mode == "grade"]
    teams: dict[str, list[ResultDocument]] = defaultdict(list)
    refs: dict[str, list[ResultDocument]] = defaultdict(list)
    for doc in mine:
        (refs if doc.reference else teams)[doc.team].append(doc)

    current = current_split(mine)
    candidates: list[Row] = []
    unranked: list[Row] = []
    stale: list[Row] = []
    for gradings in teams.values():
        counting = [d for d in gradings if stale_reason(d, current) is None]
        if not counting:
            latest = max(gradings, key=facts.when)
            reason = stale_reason(latest, current) or ""
            row = _row(latest, task, view)
            stale.append(_with(row, kind="stale", gradings=len(gradings), reason=reason))
            continue
        row = _row(_pick(counting, task, view, task.leaderboard.count), task, view)
        row = _with(row, gradings=len(gradings))
        (candidates if row.kind == "ranked" else unranked).append(row)
    references = [
        _with(_row(_pick(g, task, view, "latest"), task, view), kind="reference")
        for g in refs.values()
    ]
    ranked = _rank(candidates, task.metrics.primary)
    unranked.sort(key=lambda r: (r.doc.status, r.team))
    references.sort(key=lambda r: _order_key(r, task.metrics.primary))
    stale.sort(key=lambda r: r.team)
    history = sorted(mine, key=facts.when, reverse=True)
    return Board(task, view, ranked, references, unranked, history, stale, current)


def _pick(
    gradings: Sequence[ResultDocument], task: TaskSpec, view: str, count: str
) -> ResultDocument:
    latest = max(gradings, key=facts.when)
    if count == "latest":
        return latest
    primary = task.metrics.primary
    scored = [
        (value, d)
        for d in gradings
        if d.status == "graded"
        and (value := facts.view_metrics(d, task, view).get(primary)) is not None
        and math.isfinite(value)
    ]
    if not scored:
        return latest
    return min(scored, key=lambda vd: (facts.sort_value(primary, vd[0]), facts.when(vd[1])))[1]


def _row(doc: ResultDocument, task: TaskSpec, view: str) -> Row:
    primary = task.metrics.primary
    metrics = facts.view_metrics(doc, task, view)
    value = metrics.get(primary)
    if value is not None and not math.isfinite(value):
        value = None
    kind: RowKind = "ranked" if doc.status == "graded" and value is not None else "unranked"
    interval = facts.view_interval(doc, task, view, primary)
    return Row(kind, doc, metrics, value, interval)


def _with(row: Row, **changes: object) -> Row:
    from dataclasses import replace

    return replace(row, **changes)  # type: ignore[arg-type]


def _order_key(row: Row, primary: str) -> tuple[float, float, float]:
    value = facts.sort_value(primary, row.value) if row.value is not None else math.inf
    params = row.doc.params.counted
    return (value, params if params is not None else math.inf, facts.when(row.doc).timestamp())


def _rank(rows: list[Row], primary: str) -> list[Row]:
    rows = sorted(rows, key=lambda r: _order_key(r, primary))
    if not rows:
        return []
    lead = rows[0].interval
    out = []
    for i, row in enumerate(rows):
        tied = (
            i > 0 and lead is not None and row.interval is not None and _overlap(lead, row.interval)
        )
        out.append(_with(row, rank=i + 1, tied=tied))
    return out


def _overlap(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return a[0] <= b[1] and b[0] <= a[1]


def board_frame(board: Board) -> pd.DataFrame:
    """One row per team and reference, in the page's order, for gradebooks."""
    task = board.task
    records = []
    for row in (*board.table(), *board.unranked, *board.stale):
        doc = row.doc
        record: dict[str, object] = {
            "task": task.id,
            "view": board.view,
            "rank": row.rank,
            "team": doc.team,
            "members": "; ".join(doc.members),
            "kind": row.kind,
            "status": doc.status,
            "primary_metric": board.primary,
            "primary": row.value,
            "primary_low": row.interval[0] if row.interval else None,
            "primary_high": row.interval[1] if row.interval else None,
            "tied_with_leader": row.tied,
            "points": row_points(row, task),
            "max_points": task.grading.max_score,
        }
        for name in task.metrics.report:
            record[name] = row.metrics.get(name)
        record.update(
            {
                "parameters": doc.params.counted,
                "parameter_limit": task.parameter_limit,
                "inference_s": doc.timing.get("inference_s"),
                "images_per_s": doc.timing.get("images_per_s"),
                "gradings": row.gradings,
                "graded_at": doc.graded_at,
                "stale_reason": row.reason,
                "hidden_split": doc.hidden_split.fingerprint if doc.hidden_split else None,
                "sandbox": doc.sandbox.backend if doc.sandbox else None,
            }
        )
        records.append(record)
    frame = pd.DataFrame.from_records(records)
    if not frame.empty:
        frame["rank"] = frame["rank"].astype("Int64")
        frame["parameters"] = frame["parameters"].astype("Int64")
        frame["parameter_limit"] = frame["parameter_limit"].astype("Int64")
    return frame


def row_points(row: Row, task: TaskSpec) -> float:
    """The task's points for a row's value on its board's view: 0 unless ranked."""
    return points_for(task, row.value) if row.kind in ("ranked", "reference") else 0.0


def leaderboard_frame(
    docs: Iterable[ResultDocument], task: TaskSpec, *, view: View = "public"
) -> pd.DataFrame:
    """The leaderboard of ``task`` as a table: ranked teams and references, then the rest."""
    return board_frame(build_board(docs, task, view=view))
