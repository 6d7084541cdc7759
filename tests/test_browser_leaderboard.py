"""The leaderboard pages (public and revealed) as a person sees them: rendered by headless
Chromium from ``file://``, screenshotted, and the screenshots read back with Tesseract OCR
for the text a reader needs (the ranking policy, points, stale rows and their reasons)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import report_docs as rd
from PIL import Image
from report_docs import Tables

from harness.report import render_site

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or "/usr/bin/chromium"
TESSERACT = shutil.which("tesseract") or "/usr/bin/tesseract"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--virtual-time-budget=5000",
]
TEAMS = [
    rd.Team("alpha", 0.87, seed=1, graded_at="2026-03-02T09:00:00+00:00"),
    rd.Team("bravo", 0.84, seed=2, graded_at="2026-03-03T09:00:00+00:00"),
    rd.Team("charlie", 0.016, seed=3, graded_at="2026-03-03T10:00:00+00:00"),  # the outlier
    rd.Team("delta", 0.95, seed=4, sandbox="process", graded_at="2026-03-03T11:00:00+00:00"),
    rd.Team(
        "echo",
        0.9,
        seed=5,
        split="fa11bac0",
        public_seed=True,
        graded_at="2026-03-01T09:00:00+00:00",
    ),
    rd.Team("seed-cnn", 0.80, seed=6, reference=True, graded_at="2026-02-20T08:00:00+00:00"),
]


def chromium(profile: Path, *args: str) -> str:
    return subprocess.run(
        [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout


def ocr(image: Path) -> str:
    """The words Tesseract reads in a screenshot, lower-cased, whitespace folded."""
    text = subprocess.run(
        [TESSERACT, str(image), "-", "--psm", "3"],
        env={**os.environ, "OMP_THREAD_LIMIT": "1"},  # one thread: CI machines are shared
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    return " ".join(text.lower().split())


@pytest.fixture(scope="module")
def sites(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("leaderboard-browser")
    spec = rd.task("cifar10")
    for team in TEAMS:
        rd.write(root / "results", rd.document(spec, team))
    render_site(root / "results", root / "public", tasks={"cifar10": spec})
    render_site(root / "results", root / "final", tasks={"cifar10": spec}, reveal_private=True)
    return {"root": root, "public": root / "public", "final": root / "final"}


@pytest.mark.parametrize("view", ["public", "final"])
def test_leaderboard_page_as_rendered(sites, view: str) -> None:
    profile = sites["root"] / f"profile-{view}"
    html = chromium(profile, "--dump-dom", (sites[view] / "task-cifar10.html").as_uri())
    parser = Tables()
    parser.feed(html)
    ranked = [r["attrs"]["data-team"] for r in parser.tables["ranking"][1:]]  # type: ignore[index]
    assert ranked[:2] == ["alpha", "bravo"] and "delta" not in ranked and "echo" not in ranked
    stale = {r["attrs"]["data-team"] for r in parser.tables["stale-table"][1:]}  # type: ignore[index]
    assert stale == {"delta", "echo"}
    assert ("Final leaderboard" in html) is (view == "final")
    assert re.search(r"<img[^>]+intervals\.png", html)


@pytest.mark.parametrize("view", ["public", "final"])
def test_screenshot_shows_policy_points_and_stale_rows(sites, view: str) -> None:
    shot = sites["root"] / f"leaderboard-{view}.png"
    chromium(
        sites["root"] / f"profile-shot-{view}",
        "--window-size=1280,1500",
        f"--screenshot={shot}",
        (sites[view] / "task-cifar10.html").as_uri(),
    )
    with Image.open(shot) as img:
        assert img.size == (1280, 1500)
    words = ocr(shot)
    for needed in (
        "ranking policy",
        "best grading",
        "points",
        "stale",
        "without isolation",
        "public fallback seed",
        "alpha",
    ):
        assert needed in words, f"{needed!r} not legible in {shot.name}: {words[:400]}"
    assert ("final leaderboard" in words) is (view == "final")


def test_interval_chart_notes_the_outlier(sites) -> None:
    chart = sites["public"] / "plots" / "task-cifar10-intervals.png"
    words = ocr(chart)
    assert "off the chart" in words and "charlie" in words
