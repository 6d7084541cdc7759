"""The results store on real documents and a real SQLite file: rows agree with the
documents, a changed or truncated document is not served, orphans are recovered, and
several processes write and lock one store at once."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import sqlite3
import time
from pathlib import Path

import pytest

from harness.results import ResultDocument, read_result
from harness.store import STORE_NAME, ResultsStore


def _doc(team: str, key: str, mse: float = 0.1, **kw: object) -> ResultDocument:
    fields: dict[str, object] = {"task": "tiny", **kw}
    return ResultDocument(
        team=team,
        status="graded",
        metrics={"mse": mse},
        timing={"total_s": 1.5},
        submission_hash=f"{team}-sub".ljust(64, "0"),
        task_spec_hash="spec".ljust(64, "0"),
        harness_version="0.1.0",
        cache_key=key,
        **fields,  # type: ignore[arg-type]
    )


def test_a_recorded_grading_is_a_row_and_two_documents(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path)
    doc = _doc("team1", "k1", mse=0.25)
    row = store.record(doc, executor="ray")
    assert (tmp_path / STORE_NAME).is_file()
    assert row.doc_path.parent == tmp_path / "tiny" / "team1" / "history"
    assert read_result(row.doc_path) == doc
    assert read_result(tmp_path / "tiny" / "team1" / "result.json") == doc
    assert (row.status, row.metrics, row.timing, row.executor) == (
        "graded",
        {"mse": 0.25},
        {"total_s": 1.5},
        "ray",
    )
    assert (row.submission_hash, row.task_spec_hash, row.harness_version) == (
        doc.submission_hash,
        doc.task_spec_hash,
        "0.1.0",
    )
    assert store.lookup("k1") == doc
    assert store.lookup("other") is None
    with sqlite3.connect(tmp_path / STORE_NAME) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_history_lists_every_run_of_a_team_oldest_first(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path)
    store.record(_doc("team1", "k1", graded_at="2026-01-01T10:00:00+00:00"))
    store.record(_doc("team1", "k2", graded_at="2026-01-02T10:00:00+00:00"))
    store.record(_doc("team1", "k2", graded_at="2026-01-03T10:00:00+00:00"))  # --force
    store.record(_doc("team2", "k3"))
    store.record(_doc("team1", "k4", task="other"))
    rows = store.history("team1")
    assert [r.cache_key for r in rows] == ["k1", "k2", "k2", "k4"]
    assert [r.cache_key for r in store.history("team1", "tiny")] == ["k1", "k2", "k2"]
    assert len(list((tmp_path / "tiny" / "team1" / "history").glob("*.json"))) == 3
    # result.json is the latest; lookup gives the newest of equal keys
    assert read_result(tmp_path / "tiny" / "team1" / "result.json").cache_key == "k2"  # type: ignore[union-attr]
    assert store.lookup("k2").graded_at == "2026-01-03T10:00:00+00:00"  # type: ignore[union-attr]


@pytest.mark.parametrize("damage", ["truncate", "edit", "delete"])
def test_a_damaged_document_is_not_served(tmp_path: Path, damage: str) -> None:
    store = ResultsStore(tmp_path)
    row = store.record(_doc("team1", "k1", mse=0.25))
    text = row.doc_path.read_text()
    if damage == "truncate":
        row.doc_path.write_text(text[: len(text) // 2])
    elif damage == "edit":  # still valid JSON of the schema, but not what was recorded
        row.doc_path.write_text(text.replace("0.25", "0.01"))
        assert read_result(row.doc_path) is not None
    else:
        row.doc_path.unlink()
    assert store.lookup("k1") is None
    [again] = store.history("team1")
    assert again.summary()["document"] == "missing or changed"


def test_a_document_without_its_row_is_recovered_once(tmp_path: Path) -> None:
    """A crash between the document and the row leaves a complete document: recorded later,
    once, however often recovery runs, and a truncated one is left out."""
    store = ResultsStore(tmp_path)
    row = store.record(_doc("team1", "k1"))
    with sqlite3.connect(tmp_path / STORE_NAME) as db:
        db.execute("DELETE FROM gradings")
    broken = row.doc_path.with_name("2026-01-01T000000+0000-aaaa-bbbb.json")
    broken.write_text(row.doc_path.read_text()[:50])
    assert store.lookup("k1") is None
    assert store.recover("tiny", "team1", "grade") == 1
    assert store.recover("tiny", "team1", "grade") == 0
    assert store.lookup("k1") is not None
    [recovered] = store.history("team1")
    assert recovered.executor == "recovered" and recovered.doc_path == row.doc_path


def test_publish_restores_a_truncated_result_json(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path)
    doc = _doc("team1", "k1")
    store.record(doc)
    latest = tmp_path / "tiny" / "team1" / "result.json"
    latest.write_text(latest.read_text()[:40])
    assert read_result(latest) is None
    store.publish(store.lookup("k1"))  # type: ignore[arg-type]
    assert read_result(latest) == doc


def test_check_mode_documents_live_under_check(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path)
    row = store.record(_doc("team1", "k1", mode="check"))
    assert row.doc_path.is_relative_to(tmp_path / "check" / "tiny" / "team1")
    assert (tmp_path / "check" / "tiny" / "team1" / "result.json").is_file()
    assert not (tmp_path / "tiny").exists()


def _writer(results: str, worker: int, count: int) -> None:
    store = ResultsStore(Path(results))
    for i in range(count):
        store.record(_doc(f"team{worker}", f"k{worker}-{i}", mse=i / 100))


def test_processes_write_one_store_at_once(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), w, 15)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    store = ResultsStore(tmp_path)
    assert store.count() == 60
    for w in range(4):
        rows = store.history(f"team{w}")
        assert sorted(r.cache_key for r in rows) == sorted(f"k{w}-{i}" for i in range(15))
        assert all(r.document() is not None for r in rows)


def _holder(results: str, ready: str) -> None:
    claim = ResultsStore(Path(results)).claim("tiny", "team1", "grade")
    Path(ready).write_text(json.dumps(os.getpid()))
    time.sleep(120)
    claim.release()


def test_a_claim_excludes_others_and_dies_with_its_process(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path)
    ready = tmp_path / "ready"
    proc = multiprocessing.get_context("spawn").Process(
        target=_holder, args=(str(tmp_path), str(ready))
    )
    proc.start()
    deadline = time.monotonic() + 60
    while not ready.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert store.try_claim("tiny", "team1", "grade") is None
    other = store.try_claim("tiny", "team2", "grade")
    assert other is not None
    other.release()
    os.kill(proc.pid, signal.SIGKILL)  # no cleanup runs: the kernel drops the lock
    proc.join(30)
    claim = store.try_claim("tiny", "team1", "grade")
    assert claim is not None
    claim.release()
