"""The leaderboard: ranking rules, views, history and the rendered static site."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import report_docs as rd
from report_docs import Tables

from harness.report import build_board, leaderboard_frame, load_gradings, render_site
from harness.results import ResultDocument
from harness.tasks import LeaderboardSpec, TaskSpec


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, TaskSpec]]:
    folder = tmp_path_factory.mktemp("results")
    return folder, rd.populate(folder)


@pytest.fixture(scope="module")
def gradings(results: tuple[Path, dict[str, TaskSpec]]) -> dict[str, list[ResultDocument]]:
    return load_gradings(results[0])


def frame(gradings, specs, task: str, view: str = "public") -> pd.DataFrame:
    return leaderboard_frame(gradings[task], specs[task], view=view)  # type: ignore[arg-type]


def test_loader_reads_every_grading_once(results, gradings) -> None:
    folder, _ = results
    alpha = [d for d in gradings["cifar10"] if d.team == "alpha"]
    # result.json is also the newest history copy: two gradings, not three
    assert sorted(d.graded_at for d in alpha) == [
        "2026-03-02T09:00:00+00:00",
        "2026-03-05T09:00:00+00:00",
    ]
    assert len(list((folder / "cifar10" / "alpha" / "history").glob("*.json"))) == 2


def test_loader_skips_unreadable_documents(tmp_path: Path) -> None:
    good = rd.document(rd.task("correlation"), rd.Team("kappa", 0.05, seed=3))
    rd.write(tmp_path, good)
    broken = tmp_path / "correlation" / "lambda" / "result.json"
    broken.parent.mkdir(parents=True)
    broken.write_text('{"schema_version": 1, "task": "correlation", "team": "lam')
    other = tmp_path / "correlation" / "mu" / "result.json"
    other.parent.mkdir(parents=True)
    other.write_text(good.model_copy(update={"team": "mu", "schema_version": 99}).to_json())
    assert [d.team for d in load_gradings(tmp_path)["correlation"]] == ["kappa"]


def test_classification_ranking_best_grading_counts(gradings, results) -> None:
    _, specs = results
    df = frame(gradings, specs, "cifar10")
    ranked = df[df.kind == "ranked"]
    assert list(ranked.team) == ["alpha", "bravo", "charlie"]
    assert list(ranked["rank"]) == [1, 2, 3]
    # ranked by the primary metric on the public part, best first
    assert ranked.primary.is_monotonic_decreasing
    alpha_docs = {d.graded_at: d for d in gradings["cifar10"] if d.team == "alpha"}
    best = alpha_docs["2026-03-02T09:00:00+00:00"]
    assert ranked.iloc[0].primary == best.views["public"]["accuracy"]
    assert ranked.iloc[0].gradings == 2
    # every value on the page is the public view's, not the whole split's
    for row in ranked.itertuples():
        doc = next(
            d for d in gradings["cifar10"] if d.team == row.team and d.graded_at == row.graded_at
        )
        assert row.macro_f1 == doc.views["public"]["macro_f1"]


def test_statistical_ties_follow_interval_overlap(gradings, results) -> None:
    _, specs = results
    df = frame(gradings, specs, "cifar10")
    ranked = df[df.kind == "ranked"].reset_index()
    lead_lo, lead_hi = ranked.loc[0, "primary_low"], ranked.loc[0, "primary_high"]
    for row in ranked.iloc[1:].itertuples():
        overlaps = row.primary_low <= lead_hi and lead_lo <= row.primary_high
        assert row.tied_with_leader == overlaps
    assert not ranked.loc[0, "tied_with_leader"]
    assert list(ranked.tied_with_leader) == [False, True, False]  # bravo close, charlie far


def test_latest_grading_counts_when_the_task_says_so(gradings, results) -> None:
    _, specs = results
    latest = specs["cifar10"].model_copy(update={"leaderboard": LeaderboardSpec(count="latest")})
    df = leaderboard_frame(gradings["cifar10"], latest, view="public")
    alpha = df[df.team == "alpha"].iloc[0]
    assert alpha.graded_at == "2026-03-05T09:00:00+00:00"
    assert list(df[df.kind == "ranked"].team) == ["bravo", "charlie", "alpha"]


def test_reference_rows_sit_at_their_value_unranked(gradings, results) -> None:
    _, specs = results
    df = frame(gradings, specs, "cifar10")
    refs = df[df.kind == "reference"]
    assert list(refs.team) == ["seed-cnn"] and refs["rank"].isna().all()
    order = list(df.team)
    at = order.index("seed-cnn")
    before, after = df.iloc[at - 1], df.iloc[at + 1]
    assert before.primary >= refs.iloc[0].primary >= after.primary
    assert (before.team, after.team) == ("bravo", "charlie")


def test_failed_and_invalid_rows_are_listed_apart(gradings, results) -> None:
    _, specs = results
    df = frame(gradings, specs, "cifar10")
    rest = df[df.kind == "unranked"]
    assert dict(zip(rest.team, rest.status, strict=True)) == {"delta": "failed", "echo": "invalid"}
    assert rest["rank"].isna().all()
    assert list(df.kind[-2:]) == ["unranked", "unranked"]  # below every ranked row


def test_regression_ties_go_to_fewer_parameters_then_earlier(gradings, results) -> None:
    _, specs = results
    df = frame(gradings, specs, "correlation")
    ranked = df[df.kind == "ranked"]
    assert list(ranked.team) == ["rho", "upsilon", "sigma", "tau"]  # lower MSE first
    tied = ranked[ranked.team.isin(["upsilon", "sigma", "tau"])]
    assert tied.primary.nunique() == 1  # the same predictions: an exact tie on MSE
    assert list(tied.parameters) == sorted(tied.parameters)
    up, sig = tied.iloc[0], tied.iloc[1]
    assert up.parameters == sig.parameters and up.graded_at < sig.graded_at


def test_over_limit_is_not_ranked_even_with_the_best_score(gradings, results) -> None:
    _, specs = results
    df = frame(gradings, specs, "correlation")
    omega = df[df.team == "omega"].iloc[0]
    assert omega.kind == "unranked" and omega.status == "over_limit"
    assert omega.primary < df[df.kind == "ranked"].primary.min()  # it would have led
    assert omega.parameters > omega.parameter_limit


@pytest.mark.parametrize("view", ["public", "private", "all"])
def test_each_view_uses_its_own_numbers(gradings, results, view: str) -> None:
    _, specs = results
    board = build_board(gradings["correlation"], specs["correlation"], view=view)
    for row in board.ranked:
        expected = row.doc.metrics if view == "all" else row.doc.views[view]
        assert row.value == expected["mse"]
    public = [r.value for r in build_board(gradings["correlation"], specs["correlation"]).ranked]
    private = [
        r.value
        for r in build_board(gradings["correlation"], specs["correlation"], view="private").ranked
    ]
    assert public != private  # the halves of the hidden split really differ


def parse(path: Path) -> Tables:
    parser = Tables()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser


@pytest.fixture(scope="module")
def site(results, tmp_path_factory) -> tuple[Path, list[Path]]:
    folder, specs = results
    out = tmp_path_factory.mktemp("site")
    return out, render_site(folder, out, tasks=specs)


def test_site_files_and_links_are_relative(site) -> None:
    out, files = site
    names = {p.relative_to(out).as_posix() for p in files}
    assert {"index.html", "style.css", "task-cifar10.html", "task-correlation.html"} <= names
    assert {"leaderboard.csv", "leaderboard.json"} <= names
    assert all(p.is_file() and p.stat().st_size > 0 for p in files)
    for page in out.glob("*.html"):
        text = page.read_text()
        assert "http://" not in text and "https://" not in text and 'src="/' not in text
        for src in parse(page).images:
            assert (out / src).is_file()


def test_index_lists_every_task_with_leader(site, gradings) -> None:
    out, _ = site
    rows = parse(out / "index.html").tables["tasks"][1:]
    by_task = {r["cells"][0]: r["cells"] for r in rows}  # type: ignore[index]
    cifar = next(v for k, v in by_task.items() if "(cifar10)" in k)
    corr = next(v for k, v in by_task.items() if "(correlation)" in k)
    assert cifar[1] == "alpha" and corr[1] == "rho"
    assert cifar[3] == "5" and corr[3] == "5"  # teams, references not counted
    assert cifar[4] == "2026-03-05 09:00 UTC"  # the newest grading of the task


def test_task_page_table(site) -> None:
    out, _ = site
    tables = parse(out / "task-cifar10.html").tables
    rows = tables["ranking"][1:]
    kinds = [(r["attrs"]["data-team"], r["attrs"]["data-kind"]) for r in rows]  # type: ignore[index]
    assert kinds == [
        ("alpha", "ranked"),
        ("bravo", "ranked"),
        ("seed-cnn", "reference"),
        ("charlie", "ranked"),
    ]
    bravo = rows[1]
    assert bravo["attrs"].get("data-tied") == "true"  # type: ignore[union-attr]
    assert "statistically tied" in bravo["cells"][1]  # type: ignore[index]
    assert rows[0]["cells"][0] == "1" and rows[2]["cells"][0] == "reference"  # type: ignore[index]
    assert "%" in rows[0]["cells"][2] and "[" in rows[0]["cells"][2]  # type: ignore[index]
    unranked = {r["attrs"]["data-team"]: r["attrs"]["data-status"] for r in tables["unranked"][1:]}  # type: ignore[index]
    assert unranked == {"delta": "failed", "echo": "invalid"}
    assert len(tables["history-table"]) - 1 == 7  # every grading, kept


def test_site_never_shows_instructor_only_text(site) -> None:
    out, files = site
    for path in files:
        if path.suffix in (".html", ".csv", ".json"):
            text = path.read_text()
            assert "SECRET-STUDENT-OUTPUT" not in text
            assert "instructor-only flag text" not in text


def test_gradebook_tables_match_the_pages(site) -> None:
    out, _ = site
    csv = pd.read_csv(out / "leaderboard.csv")
    records = json.loads((out / "leaderboard.json").read_text())
    assert len(csv) == len(records) == 6 + 6  # cifar10: 6 rows, correlation: 6 rows
    cifar = csv[csv.task == "cifar10"]
    assert list(cifar.team) == ["alpha", "bravo", "seed-cnn", "charlie", "delta", "echo"]
    assert set(csv.view) == {"public"}
    assert {r["team"] for r in records if r["kind"] == "reference"} == {
        "seed-cnn",
        "seed-style-cnn",
    }


def test_reveal_private_ranks_on_the_private_part(results, gradings, tmp_path) -> None:
    folder, specs = results
    render_site(folder, tmp_path, tasks=specs, reveal_private=True)
    page = tmp_path / "task-correlation.html"
    assert "Final leaderboard" in page.read_text()
    tables = parse(page).tables
    header = tables["ranking"][0]["cells"]
    assert header[:2] == ["Rank", "Public rank"]  # type: ignore[index]
    board = build_board(gradings["correlation"], specs["correlation"], view="private")
    teams = [
        r["attrs"]["data-team"]
        for r in tables["ranking"][1:]
        if r["attrs"]["data-kind"] == "ranked"
    ]  # type: ignore[index]
    assert teams == [r.team for r in board.ranked]
    assert set(pd.read_csv(tmp_path / "leaderboard.csv").view) == {"private"}


def test_task_without_results_renders_an_empty_page(tmp_path: Path) -> None:
    spec = rd.task("mnist")
    files = render_site(tmp_path / "none", tmp_path / "out", tasks={"mnist": spec})
    assert "No graded submission yet." in (tmp_path / "out" / "task-mnist.html").read_text()
    assert (tmp_path / "out" / "leaderboard.csv") in files
