"""Who and what is graded: decided by the grader, never by the submission.

The team is the submission folder's name (a short safe slug), or the team a roster the
instructor gives maps the folder to (``--roster roster.csv``: ``folder,team,members``).
The manifest's ``team`` may only agree with it. The task is the one ``grade --task``
pins, or the manifest's ``task`` when it is the id of a task in the tasks folder.

Every name that becomes a path component (task ids, team names) passes ``path_component``
first: no path is built from submission data that has not been checked here.
"""

from __future__ import annotations

import csv
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from .errors import UserError

TEAM_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
TEAM_RULE = "1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
ROSTER_COLUMNS = ("folder", "team", "members")


@dataclass(frozen=True)
class RosterEntry:
    folder: str
    team: str
    members: tuple[str, ...] = ()


@dataclass(frozen=True)
class Identity:
    """What the grader decides for a whole batch: a pinned task, a roster."""

    task: str | None = None  # `grade --task T`: every submission is graded on T
    roster: dict[str, RosterEntry] | None = None  # by folder name
    source: str = ""  # the roster file, for messages

    def team_of(self, folder: Path) -> Team:
        """The team a folder grades as, and the rule it breaks when it has none."""
        name = folder.name
        if self.roster is not None:
            entry = self.roster.get(name)
            if entry is None:
                return Team(
                    _quarantine(name),
                    problem=(
                        "folder.roster",
                        f"the folder {name!r} is not in the roster {self.source}; "
                        "add a line `folder,team,members` for it",
                    ),
                )
            return Team(entry.team, members=entry.members, from_roster=True)
        if TEAM_RE.fullmatch(name):
            return Team(name)
        return Team(
            _quarantine(name),
            problem=(
                "folder.name",
                f"the folder name {name!r} is not a team name ({TEAM_RULE}); "
                "rename the folder or grade with --roster",
            ),
        )


@dataclass(frozen=True)
class Team:
    name: str
    members: tuple[str, ...] = ()
    from_roster: bool = False
    problem: tuple[str, str] | None = None  # (rule, message)


@dataclass
class _Seen:
    by_team: dict[str, Path] = field(default_factory=dict)


def _quarantine(name: str) -> str:
    """A team name for a folder that has none: never another folder's name."""
    digest = hashlib.sha256(name.encode("utf-8", "surrogateescape")).hexdigest()[:8]
    cleaned = re.sub(r"[^A-Za-z0-9_.-]", "_", name).lstrip("._-")[:40] or "unnamed"
    return f"{cleaned}-{digest}"


def path_component(value: str, what: str) -> str:
    """``value`` when it is safe as one path component (a task id or team name); else
    ValueError. The store and the results call it before joining any name to a path."""
    if not TEAM_RE.fullmatch(value):
        raise ValueError(f"{what} {value[:80]!r} cannot name a folder ({TEAM_RULE})")
    return value


def read_roster(path: Path) -> Identity:
    """Read ``folder,team,members`` (members separated by ';'); a UserError names the line."""
    hint = "roster.csv has a header `folder,team,members`, one line per submission folder"
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read the roster ({exc})", hint) from None
    reader = csv.DictReader(text.splitlines())
    columns = tuple(c.strip() for c in reader.fieldnames or ())
    if columns[:2] != ROSTER_COLUMNS[:2] or any(c not in ROSTER_COLUMNS for c in columns):
        raise UserError(f"{path}: the columns are {','.join(columns) or '(none)'}", hint)
    roster: dict[str, RosterEntry] = {}
    teams: dict[str, int] = {}
    for line, row in enumerate(reader, start=2):
        row = {k.strip(): (v or "").strip() for k, v in row.items() if k is not None}
        folder, team = row.get("folder", ""), row.get("team", "")
        if not folder or "/" in folder or folder in (".", ".."):
            raise UserError(f"{path}: line {line}: {folder!r} is not a folder name", hint)
        if not TEAM_RE.fullmatch(team):
            raise UserError(f"{path}: line {line}: team {team!r} must be {TEAM_RULE}", hint)
        if folder in roster:
            raise UserError(f"{path}: line {line}: folder {folder!r} is listed twice", hint)
        if team in teams:
            raise UserError(
                f"{path}: line {line}: team {team!r} is already the team of line {teams[team]}",
                "one team, one folder: a team's result is written by one submission only",
            )
        teams[team] = line
        members = tuple(m.strip() for m in row.get("members", "").split(";") if m.strip())
        roster[folder] = RosterEntry(folder, team, members)
    return Identity(roster=roster, source=str(path))


def check_unique(folders: Iterable[Path], identity: Identity) -> None:
    """Refuse a batch where two folders would write one team's result (an operator's
    mistake: two folders of one name given from different places)."""
    seen = _Seen()
    for folder in folders:
        team = identity.team_of(folder).name
        if team in seen.by_team:
            raise UserError(
                f"{seen.by_team[team]} and {folder} would both be graded as team {team!r}",
                "grade them in separate runs with separate --results folders, or use --roster",
            )
        seen.by_team[team] = folder


def batch_identity(task: str | None, roster: Path | None) -> Identity:
    """The identity of a batch from the grader's options (``--task``, ``--roster``)."""
    base = read_roster(roster) if roster is not None else Identity()
    return Identity(task=task, roster=base.roster, source=base.source)
