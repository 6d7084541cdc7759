"""Result documents for the leaderboard and report tests, scored by the real metrics
(and a small HTML table reader for checking the rendered pages).

Each team's predictions are drawn (seeded) around the true labels, then scored with
``harness.scoring.score`` exactly as the pipeline does, including the seeded public and
private halves of the hidden split; the public and private parts' bootstrap intervals
go to ``details["view_intervals"]``. The documents are written where the pipeline
writes them: ``RESULTS/<task>/<team>/result.json`` plus a copy per grading in
``history/``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np

from harness.metrics import METRICS, bootstrap_interval
from harness.results import (
    Flag,
    HiddenSplit,
    LayerCount,
    Params,
    ResultDocument,
    SandboxInfo,
    write_result,
)
from harness.scoring import predicted, score, view_masks
from harness.tasks import TaskSpec, load_task

ROOT = Path(__file__).resolve().parent.parent
N_TEST = 2000
CURRENT_SPLIT = "5e1ec7ed5p117000"


def task(task_id: str) -> TaskSpec:
    return load_task(task_id, ROOT / "tasks")


def labels(spec: TaskSpec) -> np.ndarray:
    rng = np.random.default_rng(7)
    if spec.kind == "classification":
        return rng.integers(0, spec.num_classes, N_TEST)
    return rng.uniform(-1, 1, N_TEST).astype(np.float32)


def outputs(spec: TaskSpec, y: np.ndarray, quality: float, seed: int) -> np.ndarray:
    """Classification: logits right with probability ``quality``; regression: y + noise sd."""
    rng = np.random.default_rng(seed)
    if spec.kind == "regression":
        return np.clip(y + rng.normal(0, quality, y.shape), -1, 1).astype(np.float32)
    k = spec.num_classes
    right = rng.random(y.shape) < quality
    # wrong answers favour the "next" class, so the confusion matrix has structure
    wrong = np.where(rng.random(y.shape) < 0.6, (y + 1) % k, rng.integers(0, k, y.shape))
    guess = np.where(right, y, wrong)
    logits = rng.normal(0, 0.1, (len(y), k)).astype(np.float32)
    logits[np.arange(len(y)), guess] += 5
    return logits


def history(kind: str, epochs: int = 10) -> list[dict[str, float]]:
    """history.csv rows: ``good`` converges, ``overfit`` turns after epoch 6, ``high_lr`` rises."""
    rows = []
    for e in range(1, epochs + 1):
        if kind == "overfit":
            train = 0.9 * 0.7**e
            val = 0.9 * 0.7 ** min(e, 6) + 0.02 * max(0, e - 6) ** 1.5
        elif kind == "high_lr":
            train = 1.2 - 0.25 * e if e <= 3 else 0.45 + 0.18 * (e - 3)
            val = train + 0.05
        else:
            train = 1.6 * 0.8**e + 0.2
            val = train + 0.06
        row = {"epoch": float(e), "train_loss": round(train, 5), "val_loss": round(val, 5)}
        if kind != "high_lr":
            row["train_acc"] = round(min(0.99, 0.45 + 0.05 * e), 4)
            peak = min(e, 6) if kind == "overfit" else e
            row["val_acc"] = round(0.42 + 0.045 * peak - 0.01 * (e - peak), 4)
        rows.append(row)
    return rows


def per_layer(spec: TaskSpec, width: int, extra: int = 0) -> list[LayerCount]:
    c = spec.input_shape[0]
    out = spec.num_classes or 1
    layers = [
        LayerCount(name="features.0.weight", shape=[width, c, 3, 3], numel=width * c * 9),
        LayerCount(name="features.0.bias", shape=[width], numel=width),
        LayerCount(name="features.1.weight", shape=[width], numel=width),
        LayerCount(name="features.1.bias", shape=[width], numel=width),
        LayerCount(
            name="features.3.weight", shape=[2 * width, width, 3, 3], numel=18 * width * width
        ),
        LayerCount(name="features.3.bias", shape=[2 * width], numel=2 * width),
        LayerCount(name="head.weight", shape=[out, 2 * width * 16], numel=out * 32 * width),
        LayerCount(name="head.bias", shape=[out], numel=out),
        LayerCount(name="features.1.running_mean", shape=[width], numel=width, kind="norm_stat"),
        LayerCount(name="features.1.running_var", shape=[width], numel=width, kind="norm_stat"),
    ]
    if extra:
        layers.insert(6, LayerCount(name="features.5.weight", shape=[extra], numel=extra))
    return layers


def params_for(spec: TaskSpec, width: int, extra: int = 0) -> Params:
    layers = per_layer(spec, width, extra)
    counted = sum(x.numel for x in layers if x.kind == "parameter")
    buffers = sum(x.numel for x in layers if x.kind != "parameter")
    return Params(
        counted=counted,
        limit=spec.parameter_limit,
        weights_file=counted,
        buffers=buffers,
        model_reported=counted,
        verified=True,
        per_layer=layers,
    )


@dataclass
class Team:
    team: str
    quality: float = 0.8
    seed: int = 0
    status: str = "graded"
    width: int = 32
    extra_params: int = 0
    graded_at: str = "2026-03-01T10:00:00+00:00"
    reference: bool = False
    curve: str = "good"
    training: dict[str, Any] = field(
        default_factory=lambda: {
            "optimizer": "Adam",
            "learning_rate": 0.001,
            "batch_size": 100,
            "epochs": 10,
            "loss": "MSELoss",
            "history": "history.csv",
        }
    )
    message: str = ""  # "{counted}" and "{limit}" are filled in
    stage: str | None = None
    student_output: str = ""
    sandbox: str = "docker"  # "process" is not isolated: such gradings are stale
    device: str | None = "cpu"  # where phase B predicted (None: not recorded)
    split: str = CURRENT_SPLIT  # the hidden split's fingerprint
    public_seed: bool = False


def document(spec: TaskSpec, t: Team) -> ResultDocument:
    params = params_for(spec, t.width, t.extra_params)
    doc = ResultDocument(
        task=spec.id,
        team=t.team,
        members=[f"{t.team.title()} Student"] if not t.reference else [],
        status=t.status,  # type: ignore[arg-type]
        message=t.message.format(
            counted=f"{params.counted:,}", limit=f"{spec.parameter_limit or 0:,}"
        ),
        stage=t.stage,
        params=params,
        training=t.training,
        history=history(t.curve),
        graded_at=t.graded_at,
        reference=t.reference,
        submission_hash=hashlib.sha256(f"{t.team}{t.graded_at}".encode()).hexdigest(),
        student_output=t.student_output,
        sandbox=SandboxInfo(backend=t.sandbox, isolated=t.sandbox != "process", device=t.device),
        hidden_split=HiddenSplit(fingerprint=t.split, public_seed=t.public_seed),
        flags=[
            Flag(code="secret_probe", message="instructor-only flag text"),
            Flag(
                code="ignored_files", message="not read (undeclared): notes.txt", audience="student"
            ),
        ],
        timing={
            "inference_s": 0.8 + t.width / 100,
            "images_per_s": N_TEST / (0.8 + t.width / 100),
            "total_s": 14.2,
        },
    )
    if t.status not in ("graded", "over_limit"):
        return doc
    y = labels(spec)
    out = outputs(spec, y, t.quality, t.seed)
    scores = score(spec, y, out, views=True)
    doc.metrics, doc.intervals, doc.views = scores.metrics, scores.intervals, scores.views
    doc.details = {**scores.details, "view_intervals": _view_intervals(spec, y, out)}
    return doc


def _view_intervals(spec: TaskSpec, y: np.ndarray, out: np.ndarray) -> dict[str, Any]:
    primary = METRICS.get(spec.metrics.primary)
    preds = predicted(spec, out)
    return {
        view: {primary.name: list(bootstrap_interval(primary, y[mask], preds[mask], samples=500))}
        for view, mask in view_masks(spec, len(y)).items()
    }


def write(results: Path, doc: ResultDocument) -> None:
    """Store ``doc`` as the pipeline does: the latest as result.json, every one in history/."""
    folder = results / doc.task / doc.team
    history_path = (
        folder / "history" / f"{doc.graded_at.replace(':', '')}-{doc.submission_hash[:8]}.json"
    )
    history_path.parent.mkdir(parents=True, exist_ok=True)
    history_path.write_text(doc.to_json())
    latest = folder / "result.json"
    if (
        not latest.exists()
        or ResultDocument.model_validate_json(latest.read_text()).graded_at < doc.graded_at
    ):
        write_result(results, doc)


CIFAR_TEAMS = [
    Team("alpha", 0.87, seed=1, width=32, graded_at="2026-03-02T09:00:00+00:00"),
    # alpha's later, worse grading: "best" keeps the earlier one, "latest" this one
    Team("alpha", 0.70, seed=11, width=32, graded_at="2026-03-05T09:00:00+00:00"),
    Team("bravo", 0.855, seed=2, width=24, graded_at="2026-03-03T12:00:00+00:00", curve="overfit"),
    Team("charlie", 0.72, seed=3, width=16, graded_at="2026-03-01T08:00:00+00:00", curve="high_lr"),
    Team(
        "delta",
        status="failed",
        stage="export",
        message="the model could not be exported with torch.export: stage export",
        student_output="Traceback: SECRET-STUDENT-OUTPUT",
    ),
    Team(
        "echo",
        status="invalid",
        stage="manifest",
        message="submission.toml: field `model.entrypoint`: missing",
    ),
    Team("seed-cnn", 0.80, seed=4, width=40, reference=True, graded_at="2026-02-20T08:00:00+00:00"),
]

CORRELATION_TEAMS = [
    Team("rho", 0.03, seed=5, width=16, graded_at="2026-03-02T10:00:00+00:00", curve="overfit"),
    Team("sigma", 0.09, seed=6, width=8, graded_at="2026-03-02T11:00:00+00:00"),
    # identical predictions to sigma's, more parameters: ranked after sigma
    Team("tau", 0.09, seed=6, width=12, graded_at="2026-03-01T11:00:00+00:00"),
    # identical predictions and parameters to sigma's, graded earlier: ranked before sigma
    Team("upsilon", 0.09, seed=6, width=8, graded_at="2026-03-01T09:00:00+00:00"),
    Team(
        "omega",
        0.02,
        seed=8,
        width=32,
        extra_params=2_000_000,
        status="over_limit",
        message="{counted} parameters; the limit is {limit}",
    ),
    Team("seed-style-cnn", 0.05, seed=9, width=24, reference=True),
]


def populate(results: Path) -> dict[str, TaskSpec]:
    specs = {"cifar10": task("cifar10"), "correlation": task("correlation")}
    for t in CIFAR_TEAMS:
        write(results, document(specs["cifar10"], t))
    for t in CORRELATION_TEAMS:
        write(results, document(specs["correlation"], t))
    return specs


class Tables(HTMLParser):
    """Rows of every <table> by id: each row's attributes and its cells' text."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[dict[str, object]]] = {}
        self.images: list[str] = []
        self._table: str | None = None
        self._row: dict[str, object] | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "table":
            self._table = a.get("id") or f"table{len(self.tables)}"
            self.tables[self._table] = []
        elif tag == "tr" and self._table:
            self._row = {"attrs": a, "cells": []}
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []
        elif tag == "img":
            self.images.append(a.get("src") or "")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._row is not None and self._cell is not None:
            self._row["cells"].append(" ".join("".join(self._cell).split()))  # type: ignore[union-attr]
            self._cell = None
        elif tag == "tr" and self._row is not None and self._table:
            self.tables[self._table].append(self._row)
            self._row = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)
