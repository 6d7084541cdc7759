"""The leaderboard and the reports, opened from file:// in headless Chromium."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import report_docs as rd
from PIL import Image
from report_docs import Tables

from harness.report import load_gradings, render_site, write_submission_report

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--virtual-time-budget=5000",
]


def chromium(profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )


def dom(page: Path, profile: Path) -> str:
    """The page's DOM after load, as Chromium rendered it (scripts run)."""
    return chromium(profile, "--dump-dom", page.as_uri()).stdout


def body_attrs(html: str) -> dict[str, str]:
    tag = re.search(r"<body([^>]*)>", html)
    assert tag, "no <body> in the rendered page"
    return dict(re.findall(r'([\w-]+)="([^"]*)"', tag.group(1)))


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("browser")
    results = root / "results"
    specs = rd.populate(results)
    render_site(results, root / "site", tasks=specs)
    gradings = load_gradings(results)
    for task, team in (("cifar10", "bravo"), ("correlation", "rho"), ("cifar10", "delta")):
        doc = next(d for d in gradings[task] if d.team == team)
        refs = [d for d in gradings[task] if d.reference]
        write_submission_report(doc, specs[task], root / "reports" / team, references=refs)
    return {
        "root": root,
        "site": root / "site",
        "reports": root / "reports",
        "profile": root / "profile",
    }


@pytest.mark.parametrize(
    ("page", "images"),
    [
        ("site/index.html", 0),
        ("site/task-cifar10.html", 1),
        ("site/task-correlation.html", 1),
        ("reports/bravo/report.html", 3),
        ("reports/rho/report.html", 3),
        ("reports/delta/report.html", 1),
    ],
)
def test_every_image_loads(built, page: str, images: int) -> None:
    attrs = body_attrs(dom(built["root"] / page, built["profile"]))
    assert attrs.get("data-images") == str(images)
    assert attrs.get("data-images-ok") == "true"


def test_a_missing_image_is_caught(built, tmp_path: Path) -> None:
    copy = tmp_path / "bravo"
    shutil.copytree(built["reports"] / "bravo", copy)
    (copy / "plots" / "confusion.png").unlink()
    attrs = body_attrs(dom(copy / "report.html", built["profile"]))
    assert attrs.get("data-images-ok") == "false"


def test_rendered_ranking_table(built) -> None:
    parser = Tables()
    parser.feed(dom(built["site"] / "task-cifar10.html", built["profile"]))
    rows = parser.tables["ranking"]
    header = rows[0]["cells"]
    assert header[:3] == ["Rank", "Team", "Accuracy 95 % interval"]  # type: ignore[index]
    body = [(r["cells"][0], r["attrs"]["data-team"]) for r in rows[1:]]  # type: ignore[index]
    assert body == [("1", "alpha"), ("2", "bravo"), ("reference", "seed-cnn"), ("3", "charlie")]
    assert "statistically tied" in rows[2]["cells"][1]  # type: ignore[index]
    failed = {r["attrs"]["data-team"]: r["cells"][1] for r in parser.tables["unranked"][1:]}  # type: ignore[index]
    assert failed == {"delta": "failed", "echo": "invalid"}


def test_screenshots_render(built) -> None:
    """The pages draw at a laptop's width (the screenshots are what a reviewer looks at)."""
    for page in ("site/task-correlation.html", "reports/bravo/report.html"):
        shot = built["root"] / (page.replace("/", "_") + ".png")
        chromium(
            built["profile"],
            "--window-size=1280,2000",
            f"--screenshot={shot}",
            (built["root"] / page).as_uri(),
        )
        with Image.open(shot) as img:
            assert img.size == (1280, 2000)
            assert len(img.convert("RGB").getcolors(maxcolors=1_000_000) or []) > 50
