"""The results store: one SQLite row per grading run, beside the result documents.

The documents stay what everything downstream reads; the store indexes them: which
submission, task spec and harness version, the status, metrics and timings, when, and
which document (path and SHA-256) holds the whole result. Every grading run keeps its own
document, ``RESULTS/<task>/<team>/history/<when>-<hash>-<doc>.json``; ``result.json``
beside it is the team's latest. Writes go document first (atomically), row second (one
transaction), so a row never points at a missing file; ``lookup`` re-hashes the document
and ignores a row whose file is gone, truncated or edited, so that grading is re-run.
A document written just before a crash, without its row, is found and recorded by
``recover``.

Several ``grade`` processes may share one results folder: SQLite runs in WAL mode with a
busy timeout, and ``claim`` takes a per-team lock file (``harness.locks``) that the kernel
drops when its process dies, even by SIGKILL. Keep the folder on a local disk: SQLite's
WAL mode does not work on network file systems.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import locks
from .locks import Lock
from .results import ResultDocument, read_result, result_path, write_atomic

STORE_NAME = "grades.sqlite"
SCHEMA_VERSION = 2  # 2: the hidden split's fingerprint and the sandbox of each grading
BUSY_TIMEOUT_MS = 60_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS gradings (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    task TEXT NOT NULL,
    team TEXT NOT NULL,
    mode TEXT NOT NULL,
    status TEXT NOT NULL,
    stage TEXT,
    message TEXT NOT NULL,
    submission_hash TEXT NOT NULL,
    task_spec_hash TEXT NOT NULL,
    harness_version TEXT NOT NULL,
    cache_key TEXT NOT NULL,
    metrics TEXT NOT NULL,
    timing TEXT NOT NULL,
    graded_at TEXT NOT NULL,
    recorded_at TEXT NOT NULL,
    executor TEXT NOT NULL,
    doc_path TEXT NOT NULL UNIQUE,
    doc_sha256 TEXT NOT NULL,
    hidden_split TEXT NOT NULL DEFAULT '',
    public_seed INTEGER NOT NULL DEFAULT 0,
    sandbox TEXT NOT NULL DEFAULT '',
    isolated INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS gradings_by_key ON gradings (cache_key);
CREATE INDEX IF NOT EXISTS gradings_by_team ON gradings (team, task);
"""
_COLUMNS = (
    "id, task, team, mode, status, stage, message, submission_hash, task_spec_hash, "
    "harness_version, cache_key, metrics, timing, graded_at, recorded_at, executor, "
    "doc_path, doc_sha256, hidden_split, public_seed, sandbox, isolated"
)
# columns added after version 1, with their definitions (for stores created before them)
_ADDED = {
    "hidden_split": "TEXT NOT NULL DEFAULT ''",
    "public_seed": "INTEGER NOT NULL DEFAULT 0",
    "sandbox": "TEXT NOT NULL DEFAULT ''",
    "isolated": "INTEGER NOT NULL DEFAULT 0",
}


@dataclass(frozen=True)
class GradingRow:
    """One grading run as the store records it."""

    id: int
    task: str
    team: str
    mode: str
    status: str
    stage: str | None
    message: str
    submission_hash: str
    task_spec_hash: str
    harness_version: str
    cache_key: str
    metrics: dict[str, float]
    timing: dict[str, float]
    graded_at: str
    recorded_at: str
    executor: str
    doc_path: Path  # absolute
    doc_sha256: str
    hidden_split: str = ""  # the fingerprint, "" when not recorded (a check, or before v2)
    public_seed: bool = False
    sandbox: str = ""
    isolated: bool = False

    def summary(self) -> dict[str, Any]:
        """The row for people: short hashes, metrics as text, whether the document is intact."""
        metrics = ", ".join(f"{k} {v:.4g}" for k, v in self.metrics.items())
        intact = self.document() is not None
        return {
            **{k: v for k, v in vars(self).items() if k != "metrics"},
            "doc_path": str(self.doc_path),
            "metrics": metrics or self.message[:60],
            "submission": self.submission_hash[:8],
            "document": "intact" if intact else "missing or changed",
            "split": (self.hidden_split[:8] + (" (public seed)" if self.public_seed else ""))
            if self.hidden_split
            else "not recorded",
            "sandbox": (self.sandbox + ("" if self.isolated else " (not isolated)"))
            if self.sandbox
            else "not recorded",
        }

    def document(self) -> ResultDocument | None:
        """The row's document, or None when the file is missing or not the one recorded."""
        try:
            data = self.doc_path.read_bytes()
        except OSError:
            return None
        if hashlib.sha256(data).hexdigest() != self.doc_sha256:
            return None
        doc = read_result(self.doc_path)
        return doc if doc is not None and doc.cache_key == self.cache_key else None


Claim = Lock  # an exclusive lock on one team's result folder, held until ``release``


class ResultsStore:
    """The store of one results folder (``RESULTS/grades.sqlite``)."""

    def __init__(self, results_dir: Path) -> None:
        self.results_dir = results_dir
        self.path = results_dir / STORE_NAME
        results_dir.mkdir(parents=True, exist_ok=True)
        # creating the store (and switching it to WAL) is serialized between processes:
        # SQLite answers "database is locked" at once, not after the busy timeout, when two
        # connections change the journal mode together
        with locks.held(results_dir / f".{STORE_NAME}.init.lock"), self._connect() as db:
            if db.execute("PRAGMA user_version").fetchone()[0] < SCHEMA_VERSION:
                db.execute("PRAGMA journal_mode=WAL")
                with _transaction(db):
                    _create(db)
                    db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    # -- where documents live ------------------------------------------------------------
    def documents_root(self, mode: str) -> Path:
        return self.results_dir if mode == "grade" else self.results_dir / "check"

    def team_folder(self, task: str, team: str, mode: str) -> Path:
        return result_path(self.documents_root(mode), task, team).parent

    # -- writing -------------------------------------------------------------------------
    def claim(self, task: str, team: str, mode: str) -> Claim:
        """Lock the team's folder against other gradings (threads and processes), waiting."""
        claim = self._lock(task, team, mode, wait=True)
        assert claim is not None
        return claim

    def try_claim(self, task: str, team: str, mode: str) -> Claim | None:
        """``claim`` without waiting: None while someone else holds the team."""
        return self._lock(task, team, mode, wait=False)

    def _lock(self, task: str, team: str, mode: str, *, wait: bool) -> Claim | None:
        return locks.acquire(self.team_folder(task, team, mode) / ".lock", wait=wait)

    def record(self, doc: ResultDocument, *, executor: str = "local") -> GradingRow:
        """Write the grading's document and ``result.json`` atomically, then its row."""
        text = doc.to_json()
        sha = hashlib.sha256(text.encode("utf-8")).hexdigest()
        folder = self.team_folder(doc.task, doc.team, doc.mode)
        stamp = doc.graded_at.replace(":", "")
        path = folder / "history" / f"{stamp}-{doc.submission_hash[:8]}-{sha[:8]}.json"
        write_atomic(path, text)
        write_atomic(folder / "result.json", text)
        return self._insert(doc, path, sha, executor)

    def publish(self, doc: ResultDocument) -> None:
        """Make ``doc`` the team's ``result.json`` (a stored grading reused as the latest)."""
        path = self.team_folder(doc.task, doc.team, doc.mode) / "result.json"
        text = doc.to_json()
        with contextlib.suppress(OSError):
            if path.read_text(encoding="utf-8") == text:
                return
        write_atomic(path, text)

    def recover(self, task: str, team: str, mode: str) -> int:
        """Record the team's complete documents that have no row (a crash came between
        the two writes, or the folder predates the store); returns how many."""
        folder = self.team_folder(task, team, mode) / "history"
        if not folder.is_dir():
            return 0
        with self._connect() as db:
            rows = db.execute("SELECT doc_path FROM gradings WHERE team = ?", (team,))
            known = {r[0] for r in rows}
        added = 0
        for path in sorted(folder.glob("*.json")):
            if self._relative(path) in known:
                continue
            doc = read_result(path)
            if doc is None or (doc.task, doc.team, doc.mode) != (task, team, mode):
                continue
            sha = hashlib.sha256(path.read_bytes()).hexdigest()
            self._insert(doc, path, sha, "recovered")
            added += 1
        return added

    def _insert(self, doc: ResultDocument, path: Path, sha: str, executor: str) -> GradingRow:
        values: dict[str, Any] = {
            "task": doc.task,
            "team": doc.team,
            "mode": doc.mode,
            "status": doc.status,
            "stage": doc.stage,
            "message": doc.message,
            "submission_hash": doc.submission_hash,
            "task_spec_hash": doc.task_spec_hash,
            "harness_version": doc.harness_version,
            "cache_key": doc.cache_key,
            "metrics": json.dumps(doc.metrics, sort_keys=True),
            "timing": json.dumps(doc.timing, sort_keys=True),
            "graded_at": doc.graded_at,
            "recorded_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "executor": executor,
            "doc_path": self._relative(path),
            "doc_sha256": sha,
            "hidden_split": doc.hidden_split.fingerprint if doc.hidden_split else "",
            "public_seed": int(bool(doc.hidden_split and doc.hidden_split.public_seed)),
            "sandbox": doc.sandbox.backend if doc.sandbox else "",
            "isolated": int(bool(doc.sandbox and doc.sandbox.isolated)),
        }
        names = ", ".join(values)
        marks = ", ".join(f":{k}" for k in values)
        with self._connect() as db, _transaction(db):
            # the same document twice (two processes recovering it) is one row
            db.execute(f"INSERT OR IGNORE INTO gradings ({names}) VALUES ({marks})", values)
            row = db.execute(
                f"SELECT {_COLUMNS} FROM gradings WHERE doc_path = ?", (values["doc_path"],)
            ).fetchone()
        return self._row(row)

    # -- reading -------------------------------------------------------------------------
    def lookup(self, cache_key: str) -> ResultDocument | None:
        """The newest stored grading with this cache key whose document is intact."""
        with self._connect() as db:
            rows = db.execute(
                f"SELECT {_COLUMNS} FROM gradings WHERE cache_key = ? ORDER BY id DESC",
                (cache_key,),
            ).fetchall()
        for row in rows:
            doc = self._row(row).document()
            if doc is not None:
                return doc
        return None

    def history(self, team: str, task: str | None = None) -> list[GradingRow]:
        """Every grading run of a team (of one task, if given), oldest first."""
        query = f"SELECT {_COLUMNS} FROM gradings WHERE team = ?"
        args: tuple[str, ...] = (team,)
        if task is not None:
            query += " AND task = ?"
            args = (team, task)
        with self._connect() as db:
            rows = db.execute(query + " ORDER BY graded_at, id", args).fetchall()
        return [self._row(r) for r in rows]

    def count(self) -> int:
        with self._connect() as db:
            return int(db.execute("SELECT COUNT(*) FROM gradings").fetchone()[0])

    # -- plumbing ------------------------------------------------------------------------
    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """A fresh connection per operation: safe from any thread, closed at once."""
        db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
        try:
            db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            db.execute("PRAGMA synchronous=FULL")
            yield db
        finally:
            db.close()

    def _relative(self, path: Path) -> str:
        return path.relative_to(self.results_dir).as_posix()

    def _row(self, row: tuple[Any, ...]) -> GradingRow:
        values = list(row)
        values[11], values[12] = json.loads(values[11]), json.loads(values[12])
        values[16] = self.results_dir / values[16]
        values[19], values[21] = bool(values[19]), bool(values[21])
        return GradingRow(*values)


def _create(db: sqlite3.Connection) -> None:
    for statement in _SCHEMA.split(";"):
        if statement.strip():
            db.execute(statement)
    have = {row[1] for row in db.execute("PRAGMA table_info(gradings)")}
    for name, definition in _ADDED.items():  # a version 1 store gains the new columns
        if name not in have:
            db.execute(f"ALTER TABLE gradings ADD COLUMN {name} {definition}")


@contextlib.contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[None]:
    """BEGIN IMMEDIATE (take the write lock now, waiting up to the busy timeout)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
