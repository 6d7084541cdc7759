"""The ranking policy (only current-split, isolated gradings rank; the rest are stale, with
the reason), the gradebook, the store's history columns, and readable plots."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import report_docs as rd
from click.testing import CliRunner
from report_docs import Tables

from harness.cli import cli
from harness.gradebook import gradebook_rows, write_gradebook
from harness.points import points_for
from harness.ranking import current_split, stale_reason
from harness.report import build_board, load_gradings, render_site
from harness.report.curves import analyse
from harness.report.plots import zoom_range
from harness.results import ResultDocument, read_result
from harness.store import ResultsStore
from harness.tasks import LeaderboardSpec

OLD_SPLIT = "0ld5p1170000aaaa"
FALLBACK = "fa11bac05eed0000"

# the scenario: graded with the public fallback seed, then HARNESS_SECRET_SEED was
# set and most teams were graded again; kilo's fallback grading scored best
DAY1, DAY4 = "2026-03-01T09:00:00+00:00", "2026-03-04T09:00:00+00:00"
SCENARIO = [
    rd.Team("kilo", 0.95, seed=21, split=FALLBACK, public_seed=True, graded_at=DAY1),
    rd.Team("kilo", 0.80, seed=22, graded_at=DAY4),
    rd.Team("lima", 0.90, seed=23, graded_at="2026-03-04T10:00:00+00:00"),
    # graded on the current split, but without isolation
    rd.Team("mike", 0.97, seed=24, sandbox="process", graded_at="2026-03-04T11:00:00+00:00"),
    # only ever graded on the fallback seed
    rd.Team("oscar", 0.96, seed=25, split=FALLBACK, public_seed=True, graded_at=DAY1),
    # graded on an earlier private split, before the instructor replaced it
    rd.Team("papa", 0.93, seed=26, split=OLD_SPLIT, graded_at="2026-02-20T10:00:00+00:00"),
    rd.Team(
        "quebec", status="failed", stage="predict", message="raised in forward", graded_at=DAY4
    ),
]


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    results = tmp_path_factory.mktemp("policy")
    spec = rd.task("cifar10")
    for team in SCENARIO:
        rd.write(results, rd.document(spec, team))
    # a document written before the hidden split was recorded (schema version 1)
    old = rd.document(spec, rd.Team("romeo", 0.99, seed=27, graded_at="2026-03-02T09:00:00+00:00"))
    data = json.loads(old.to_json())
    data["schema_version"] = 1
    del data["hidden_split"]
    path = results / "cifar10" / "romeo" / "result.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(data))
    return results, spec


def test_version_1_documents_are_still_read(scenario) -> None:
    results, _ = scenario
    doc = read_result(results / "cifar10" / "romeo" / "result.json")
    assert doc is not None and doc.schema_version == 1 and doc.hidden_split is None


def test_only_current_isolated_gradings_rank(scenario) -> None:
    results, spec = scenario
    docs = load_gradings(results)["cifar10"]
    assert current_split(docs) == rd.CURRENT_SPLIT
    board = build_board(docs, spec, view="public")
    assert [r.team for r in board.ranked] == ["lima", "kilo"]
    kilo = next(r for r in board.ranked if r.team == "kilo")
    # its better fallback-seed grading does not count: the secret-seed one does
    assert kilo.doc.hidden_split and not kilo.doc.hidden_split.public_seed
    assert kilo.gradings == 2
    stale = {r.team: r.reason for r in board.stale}
    assert set(stale) == {"mike", "oscar", "papa", "romeo"}
    assert "without isolation (--sandbox process)" in stale["mike"]
    assert "public fallback seed" in stale["oscar"]
    assert "earlier hidden split" in stale["papa"] and OLD_SPLIT[:8] in stale["papa"]
    assert "re-grade" in stale["romeo"]
    assert [r.team for r in board.unranked] == ["quebec"]  # a failure is a status, not stale
    assert board.teams == 7


def test_latest_policy_counts_the_latest_current_grading(scenario) -> None:
    results, spec = scenario
    latest = spec.model_copy(update={"leaderboard": LeaderboardSpec(count="latest")})
    docs = load_gradings(results)["cifar10"]
    kilo = next(r for r in build_board(docs, latest).ranked if r.team == "kilo")
    assert kilo.doc.graded_at == "2026-03-04T09:00:00+00:00"


def test_current_split_follows_the_newest_trusted_grading(scenario) -> None:
    results, _ = scenario
    docs = load_gradings(results)["cifar10"]
    papa = next(d for d in docs if d.team == "papa")
    newer = papa.model_copy(update={"graded_at": "2026-03-09T00:00:00+00:00"})
    assert current_split([*docs, newer]) == OLD_SPLIT
    mike = next(d for d in docs if d.team == "mike")  # unisolated: never decides the split
    assert current_split([mike]) is None
    assert stale_reason(mike, None) is not None


def test_page_states_the_policy_and_lists_stale_rows(scenario, tmp_path: Path) -> None:
    results, spec = scenario
    render_site(results, tmp_path, tasks={"cifar10": spec})
    html = (tmp_path / "task-cifar10.html").read_text()
    assert "Ranking policy:" in html and "best grading" in html and "isolating sandbox" in html
    parser = Tables()
    parser.feed(html)
    stale = {r["attrs"]["data-team"]: r["cells"] for r in parser.tables["stale-table"][1:]}  # type: ignore[index]
    assert set(stale) == {"mike", "oscar", "papa", "romeo"}
    assert stale["mike"][2] == "process" and "without isolation" in stale["mike"][3]  # type: ignore[index]
    header = parser.tables["ranking"][0]["cells"]
    assert "Points of 100" in header  # type: ignore[operator]
    frame = pd.read_csv(tmp_path / "leaderboard.csv")
    assert {"points", "stale_reason", "hidden_split", "sandbox"} <= set(frame.columns)
    lima = frame[frame.team == "lima"].iloc[0]
    assert lima.points == points_for(spec, lima.primary) and 0 < lima.points <= 100
    assert set(frame[frame.kind == "stale"].team) == {"mike", "oscar", "papa", "romeo"}
    assert (frame[frame.kind == "stale"].points == 0).all()


def test_gradebook_csv_uses_the_points_rule(scenario, tmp_path: Path) -> None:
    results, spec = scenario
    docs = load_gradings(results)["cifar10"]
    rows = gradebook_rows(docs, spec)
    by_team = {r["team"]: r for r in rows}
    assert set(by_team) == {"kilo", "lima", "mike", "oscar", "papa", "quebec", "romeo"}
    kilo = next(d for d in docs if d.team == "kilo" and not d.hidden_split.public_seed)  # type: ignore[union-attr]
    expected = points_for(spec, kilo.metrics["accuracy"])  # the whole hidden split
    assert float(by_team["kilo"]["points"]) == pytest.approx(expected)
    assert by_team["kilo"]["members"] == "Kilo Student" and by_team["kilo"]["status"] == "graded"
    assert by_team["mike"]["status"] == "stale" and by_team["mike"]["points"] == "0"
    assert by_team["quebec"]["status"] == "failed" and by_team["quebec"]["points"] == "0"
    runner = CliRunner()
    out = tmp_path / "book"
    result = runner.invoke(
        cli, ["gradebook", "cifar10", "--results", str(results), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    with (out / "gradebook-cifar10.csv").open() as fh:
        table = list(csv.DictReader(fh))
    assert list(table[0])[:6] == ["team", "members", "status", "metric", "value", "points"]
    assert {r["team"]: r["points"] for r in table} == {r["team"]: r["points"] for r in rows}


def test_gradebook_in_gradescope_format(scenario, tmp_path: Path) -> None:
    results, spec = scenario
    docs = load_gradings(results)["cifar10"]
    files = write_gradebook(docs, spec, tmp_path, fmt="gradescope")
    assert {p.parent.name for p in files} == {
        "kilo",
        "lima",
        "mike",
        "oscar",
        "papa",
        "quebec",
        "romeo",
    }
    lima = json.loads((tmp_path / "lima" / "results.json").read_text())
    assert lima["visibility"] == "visible"  # after the deadline: everything shown
    mike = json.loads((tmp_path / "mike" / "results.json").read_text())
    assert mike["score"] == 0 and "without isolation" in mike["output"]


def test_history_shows_split_sandbox_and_status(tmp_path: Path) -> None:
    spec = rd.task("correlation")
    store = ResultsStore(tmp_path)
    fallback = rd.document(spec, rd.Team("sierra", 0.05, split=FALLBACK, public_seed=True))
    isolated = rd.document(spec, rd.Team("sierra", 0.04, graded_at="2026-03-02T10:00:00+00:00"))
    unisolated = rd.document(
        spec, rd.Team("sierra", 0.04, sandbox="process", graded_at="2026-03-03T10:00:00+00:00")
    )
    for doc in (fallback, isolated, unisolated):
        store.record(doc)
    rows = [r.summary() for r in store.history("sierra")]
    assert [r["split"] for r in rows] == [
        f"{FALLBACK[:8]} (public seed)",
        rd.CURRENT_SPLIT[:8],
        rd.CURRENT_SPLIT[:8],
    ]
    assert [r["sandbox"] for r in rows] == ["docker", "docker", "process (not isolated)"]
    result = CliRunner().invoke(cli, ["history", "sierra", "--results", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.output)
    assert [r["status"] for r in printed] == ["graded"] * 3
    assert printed[0]["hidden_split"] == FALLBACK and printed[0]["public_seed"] is True


def test_a_version_1_store_gains_the_new_columns(tmp_path: Path) -> None:
    import sqlite3

    from harness import store as store_module

    db = sqlite3.connect(tmp_path / store_module.STORE_NAME)
    old_schema = store_module._SCHEMA.split("hidden_split TEXT")[0].rstrip().rstrip(",") + "\n);"
    db.executescript(old_schema + "PRAGMA user_version=1;")
    db.close()
    store = ResultsStore(tmp_path)
    row = store.record(rd.document(rd.task("correlation"), rd.Team("tango", 0.05)))
    assert row.sandbox == "docker" and row.isolated and row.hidden_split == rd.CURRENT_SPLIT


# -- diagnoses and plots ---------------------------------------------------------------


def test_overfitting_in_the_last_epoch_is_flagged() -> None:
    """The issue's team: validation loss 0.0054 -> 0.0199 in its last epoch."""
    rows = [
        {"epoch": 1, "train_loss": 0.0400, "val_loss": 0.0210},
        {"epoch": 2, "train_loss": 0.0120, "val_loss": 0.0090},
        {"epoch": 3, "train_loss": 0.0070, "val_loss": 0.0061},
        {"epoch": 4, "train_loss": 0.0051, "val_loss": 0.0054},
        {"epoch": 5, "train_loss": 0.0042, "val_loss": 0.0199},
    ]
    found = analyse(rows)
    assert found.overfit_after == 4
    text = " ".join(found.statements)
    assert "no sign of overfitting" not in text
    assert "Overfitting: after epoch 4" in text and "0.0199" in text


@pytest.mark.parametrize(
    ("val", "flagged", "words"),
    [
        ([0.5, 0.3, 0.2, 0.15, 0.12], False, "still at its lowest in the last epoch"),
        ([0.5, 0.3, 0.2, 0.15, 0.151], False, "within 2 % of its lowest"),
        ([0.5, 0.3, 0.2, 0.15, 0.16], False, "a slight rise"),
        ([0.5, 0.3, 0.2, 0.15, 0.30], True, "Overfitting: after epoch 4"),
        ([0.5, 0.3, 0.15, 0.40, 0.152], False, "within 2 % of its lowest"),  # came back down
    ],
)
def test_overfitting_rule_on_the_whole_curve(val, flagged, words) -> None:
    train = [0.6, 0.35, 0.2, 0.12, 0.08]
    rows = [
        {"epoch": i + 1, "train_loss": t, "val_loss": v}
        for i, (t, v) in enumerate(zip(train, val, strict=True))
    ]
    found = analyse(rows)
    assert (found.overfit_after is not None) is flagged
    assert any(words in s for s in found.statements)


def test_interval_chart_zooms_to_the_ranked_teams() -> None:
    rows = [
        ("1. a", 0.92, (0.90, 0.94), False),
        ("2. b", 0.90, (0.88, 0.92), False),
        ("ref", 0.86, None, True),
        ("3. c", 0.88, (0.86, 0.90), False),
        ("4. d", 0.016, (0.01, 0.02), False),
        ("far ref", 0.30, None, True),
    ]
    (lo, hi), outside = zoom_range(rows)
    assert outside == [4, 5]  # the 1.6 % team and the far reference are noted, not plotted
    assert 0.80 < lo < 0.86 and 0.94 < hi < 1.0
    assert (hi - lo) < 0.2  # not a 0-100 % axis
    # no outlier when the teams spread evenly
    even = [(f"{i}", v, (v - 0.01, v + 0.01), False) for i, v in enumerate([0.9, 0.6, 0.3])]
    assert zoom_range(even)[1] == []


def test_legends_are_clear_of_the_data(tmp_path: Path) -> None:
    from matplotlib.figure import Figure

    from harness.report import plots
    from harness.report.curves import curves

    history = rd.history("overfit")
    captured: list[Figure] = []
    real_save = plots._save

    def keep(fig: Figure, path: Path) -> Path:
        captured.append(fig)
        return real_save(fig, path)

    plots._save = keep  # type: ignore[assignment]
    try:
        plots.training(curves(history), analyse(history), tmp_path / "curves.png")
    finally:
        plots._save = real_save  # type: ignore[assignment]
    fig = captured[0]
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    for ax in fig.axes:
        legend = ax.get_legend()
        assert legend is not None
        box = legend.get_window_extent(renderer)
        points = np.concatenate([line.get_xydata() for line in ax.get_lines()])
        shown = ax.transData.transform(points)
        inside = (
            (shown[:, 0] >= box.x0)
            & (shown[:, 0] <= box.x1)
            & (shown[:, 1] >= box.y0)
            & (shown[:, 1] <= box.y1)
        )
        assert not inside.any(), f"the legend of {ax.get_title()!r} covers a data point"


def test_team_documents_keep_their_fields(scenario) -> None:
    results, _ = scenario
    doc = ResultDocument.model_validate_json(
        (results / "cifar10" / "lima" / "result.json").read_text()
    )
    assert doc.sandbox is not None and doc.sandbox.isolated
    assert doc.hidden_split is not None and doc.hidden_split.fingerprint == rd.CURRENT_SPLIT


# -- the hidden split's identity ------------------------------------------------------


def _small_correlation():
    import tomllib

    from harness.tasks import TaskSpec

    path = rd.ROOT / "tasks" / "correlation" / "task.toml"
    data = tomllib.loads(path.read_text())
    data["dataset"]["options"].update(train_size=8, validation_size=8, test_size=12)
    return TaskSpec.model_validate({**data, "source": str(path), "spec_hash": "x"})


@pytest.fixture
def seeded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from harness.settings import settings

    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HARNESS_CONFIG", str(tmp_path / "no-config.toml"))

    def use(seed: int | None) -> None:
        if seed is None:
            monkeypatch.delenv("HARNESS_SECRET_SEED", raising=False)
        else:
            monkeypatch.setenv("HARNESS_SECRET_SEED", str(seed))
        settings.cache_clear()

    yield use
    settings.cache_clear()


def test_fingerprint_names_the_split_not_the_seed(seeded) -> None:
    from harness.data import prepare_split
    from harness.ranking import hidden_split_of

    task = _small_correlation()
    seeded(None)
    fallback = hidden_split_of(prepare_split(task, "test"), "grade")
    seeded(31337)
    first = hidden_split_of(prepare_split(task, "test"), "grade")
    again = hidden_split_of(prepare_split(task, "test"), "grade")
    seeded(31338)
    other = hidden_split_of(prepare_split(task, "test"), "grade")
    assert fallback and first and again and other
    assert fallback.public_seed and not first.public_seed
    assert first == again  # the same split, the same identity
    assert len({fallback.fingerprint, first.fingerprint, other.fingerprint}) == 3
    assert "31337" not in first.fingerprint and len(first.fingerprint) == 16
    assert hidden_split_of(prepare_split(task, "validation"), "check") is None


def test_a_split_from_files_is_not_on_the_fallback_seed(seeded, tmp_path: Path) -> None:
    """Only a split generated from the seed is on the public fallback seed."""
    from harness.data import SplitSource, providers

    seeded(None)
    task = _small_correlation()
    source = SplitSource(task, "test", 424242, None)
    assert providers.get("correlation").fixed_split(source) is None
    cifar = rd.task("cifar10")
    hidden = SplitSource(cifar, "test", 424242, tmp_path)
    assert providers.get("cifar10").fixed_split(hidden)  # the official or a private test set
    assert (
        providers.get("cifar10").fixed_split(SplitSource(cifar, "validation", 0, tmp_path)) is None
    )
