"""Each report page a person reads, opened from file:// in headless Chromium and
screenshotted at a laptop's width; the screenshot is read back with OCR (tesseract) and
must show the text that person needs: the score, or the student's own error and its hint.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import report_docs as rd
from PIL import Image

from harness.report import write_submission_report
from harness.results import Frame, ResultDocument, StudentError

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
    "--virtual-time-budget=3000",
    "--force-device-scale-factor=1",
]
WIDTH, HEIGHT = 1280, 800  # the top of the page: status, error, score, metrics

SHAPE_ERROR = StudentError(
    type="RuntimeError",
    message="mat1 and mat2 shapes cannot be multiplied (2x3072 and 784x32)",
    frames=[Frame(file="model.py", line=14, function="forward", code="x = self.fc1(x.flatten(1))")],
    input_shape=[2, 3, 32, 32],
    hint=(
        "a layer is sized for other inputs than this task's (32x32 images, see the task's "
        "input_shape): compute the size the first Linear layer receives from the input, or "
        "use nn.AdaptiveAvgPool2d before it"
    ),
)
PREFIX_ERROR = StudentError(
    type="ContractError",
    message=(
        "the weights do not load strictly into the network: missing 4 key(s): fc1.bias, "
        "fc1.weight, fc2.bias, fc2.weight; unexpected 4 key(s): module.fc1.bias, "
        "module.fc1.weight, module.fc2.bias, module.fc2.weight"
    ),
    hint=(
        "the weights were saved from nn.DataParallel or DistributedDataParallel (every name "
        "starts with `module.`): save model.module.state_dict() instead"
    ),
)


def _failed(doc: ResultDocument, stage: str, error: StudentError, what: str) -> ResultDocument:
    return doc.model_copy(
        update={
            "status": "failed",
            "stage": stage,
            "message": f"the model failed while {what}: {error.type}: {error.message}",
            "error": error,
            "metrics": {},
            "intervals": {},
            "views": {},
            "details": {},
        }
    )


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("report-pages")
    cifar, corr = rd.task("cifar10"), rd.task("correlation")
    bravo = rd.document(cifar, next(t for t in rd.CIFAR_TEAMS if t.team == "bravo"))
    rho = rd.document(corr, next(t for t in rd.CORRELATION_TEAMS if t.team == "rho"))
    docs = {
        "classification-graded": (bravo, cifar),
        "regression-graded": (rho, corr),
        "classification-failed": (
            _failed(bravo, "dry_run", SHAPE_ERROR, "running one batch of noise through the model"),
            cifar,
        ),
        "regression-failed": (
            _failed(rho, "load", PREFIX_ERROR, "loading the weights strictly into the network"),
            corr,
        ),
    }
    out = {}
    for name, (doc, spec) in docs.items():
        write_submission_report(doc, spec, root / name)
        out[name] = root / name / "report.html"
    return out


def _screenshot(page: Path, profile: Path) -> Path:
    shot = page.with_suffix(".png")
    subprocess.run(
        [
            CHROMIUM,
            *FLAGS,
            f"--user-data-dir={profile}",
            f"--window-size={WIDTH},{HEIGHT}",
            f"--screenshot={shot}",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return shot


def _ocr(shot: Path) -> str:
    """The words tesseract reads in the screenshot, lower-cased, one space apart."""
    out = subprocess.run(
        [TESSERACT, str(shot), "-", "--psm", "3"],
        env={**os.environ, "OMP_THREAD_LIMIT": "1"},  # its threads only contend on 2 cores
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    return " ".join(out.lower().split())


def _seen(text: str, phrase: str) -> bool:
    """``phrase`` in the OCR text, ignoring spacing and punctuation OCR tends to blur."""
    squash = re.compile(r"[^a-z0-9]")
    return squash.sub("", phrase.lower()) in squash.sub("", text)


EXPECTED = {
    "classification-graded": ["report for bravo", "graded", "accuracy", "95 % interval"],
    "regression-graded": ["report for rho", "graded", "mse", "pearson"],
    "classification-failed": [
        "report for bravo",
        "failed",
        "your code's error",
        "mat1 and mat2 shapes cannot be multiplied",
        "2x3072 and 784x32",
        "model.py, line 14, in forward",
        "batch of shape (2, 3, 32, 32)",
        "hint",
        "adaptiveavgpool2d",
    ],
    "regression-failed": [
        "report for rho",
        "failed",
        "your code's error",
        "unexpected 4 key(s)",
        "module.fc2.bias",
        "dataparallel",
        "model.module.state_dict()",
    ],
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_the_screenshot_shows_what_the_reader_needs(pages, name: str, tmp_path: Path) -> None:
    shot = _screenshot(pages[name], tmp_path / "profile")
    with Image.open(shot) as img:
        assert img.size == (WIDTH, HEIGHT)
    text = _ocr(shot)
    missing = [p for p in EXPECTED[name] if not _seen(text, p)]
    assert not missing, f"not visible in {shot}: {missing}\nOCR read: {text[:1500]}"
    if name.endswith("graded"):
        assert not _seen(text, "your code's error")
