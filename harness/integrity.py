"""Honest scores: the memorization probe, evidence for the duplicates report, the quota.

- Probe: phase B predicts the first inputs again with imperceptible noise (a gray level
  or so), and the hidden inputs carry canaries (``harness.canary``: fresh images from the
  secret seed, mixed in at secret positions); a score that collapses under the noise, or
  is far better on the hidden images than on the canaries, is flagged for the
  instructor. Gaps are measured on the task's grading scale (``full_marks_at`` to
  ``zero_marks_at``), so one threshold fits every metric and direction.
- Evidence: each grading stores a digest of its weights, a small fixed-position sample
  of every weight tensor, and its hidden-set predictions (compactly) in
  ``details["integrity"]``; ``duplicates`` compares every pair of teams from those:
  identical weights, near-identical weights (cosine of the samples), and predictions that
  agree far beyond chance (the same wrong answers, or correlated residuals).
- Quota: hidden-set gradings per team per day (``grading.daily_quota``).
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np

from .errors import UserError
from .metrics import METRICS
from .results import Flag, ResultDocument, read_results, write_atomic
from .runner.contract import Probe
from .safetensors_header import FLOAT_DTYPES, SafetensorsHeader, read_tensor
from .scoring import predicted
from .tasks import TaskSpec

SKETCH_VALUES = 64  # sampled values per weight tensor
SKETCH_MIN = 256  # tensors smaller than this are not sampled
NEAR_COSINE = 0.99
AGREEMENT = 0.8  # share of common wrong answers that are the same wrong answer
MIN_COMMON_ERRORS = 20
RESIDUAL_CORRELATION = 0.98


# -- the probe ------------------------------------------------------------------------
def probe_spec(task: TaskSpec, count: int, seed_text: str) -> Probe | None:
    """What phase B's probe runs, or None when the task turns it off."""
    n = probe_size(count, min(count, task.integrity.probe_count), task.batch_size)
    if n <= 0:
        return None
    seed = int.from_bytes(hashlib.sha256(f"probe|{seed_text}".encode()).digest()[:4], "little")
    return Probe(count=n, seed=seed, amplitude=task.integrity.probe_amplitude)


def probe_size(count: int, wanted: int, batch: int) -> int:
    """How many probe inputs phase B predicts for ``wanted``: the program's batches are
    static, so its probe inputs follow the ``count`` inputs in the same pass and first
    fill the last batch's padding (``phase_b.with_extra``). The fill plus whole batches,
    when that keeps at least half of ``wanted``; else whole batches (a partial one costs
    a full batch). Never more batches than a separate pass of ``wanted`` inputs."""
    fill = -count % batch  # the zeros that pad the last batch of the hidden inputs
    if wanted <= fill:
        return wanted  # the probe rides in the padding
    filled = fill + (wanted - fill) // batch * batch
    if 2 * filled >= wanted:
        return filled
    return wanted - wanted % batch if wanted > batch else wanted


def fraction(task: TaskSpec, value: float) -> float:
    """Where ``value`` of the primary metric sits on the grading scale, 0 to 1."""
    g = task.grading
    if g.full_marks_at == g.zero_marks_at:
        return 1.0 if value == g.full_marks_at else 0.0
    return float(np.clip((value - g.zero_marks_at) / (g.full_marks_at - g.zero_marks_at), 0, 1))


def primary(task: TaskSpec, labels: np.ndarray, outputs: np.ndarray) -> float:
    return METRICS.get(task.metrics.primary)(labels, predicted(task, outputs))


def probe_flags(
    task: TaskSpec,
    labels: np.ndarray,
    outputs: np.ndarray,
    noisy: np.ndarray | None,
    canary: tuple[np.ndarray, np.ndarray] | None = None,
    first: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[list[Flag], dict[str, float]]:
    """Flags for a large gap, and the probe's scores for ``details``. ``canary``: the
    canaries' (labels, outputs); ``first``: (labels, outputs) of the inputs the noisy
    probe repeats, when they are not the hidden split's (canaries mixed in)."""
    flags: list[Flag] = []
    scores: dict[str, float] = {}
    name = task.metrics.primary
    limit = task.integrity.probe_gap
    if noisy is not None and len(noisy):
        m = len(noisy)
        ref_labels, ref_outputs = first if first is not None else (labels, outputs)
        clean = primary(task, ref_labels[:m], ref_outputs[:m])
        shaken = primary(task, ref_labels[:m], noisy)
        scores |= {"clean": clean, "noisy": shaken, "count": float(m)}
        if fraction(task, clean) - fraction(task, shaken) > limit:
            flags.append(
                _memorized(
                    f"{name} {clean:.4g} on {m} hidden inputs but {shaken:.4g} on the same inputs "
                    f"with noise of {task.integrity.probe_amplitude} gray level(s): the model may "
                    "recognize the test inputs rather than read them (a lookup of memorized "
                    "answers)"
                )
            )
    if canary is not None:
        hidden, canary_score = primary(task, labels, outputs), primary(task, *canary)
        scores |= {"hidden": hidden, "canary": canary_score}
        if fraction(task, hidden) - fraction(task, canary_score) > limit:
            flags.append(
                _memorized(
                    f"{name} {hidden:.4g} on the hidden images but {canary_score:.4g} on "
                    f"{len(canary[0])} canary images drawn from the secret seed and mixed into "
                    "them: the model recognizes the hidden images (memorized answers, e.g. a "
                    "nearest-neighbour lookup) rather than reading them"
                )
            )
    return flags, scores


def _memorized(message: str) -> Flag:
    return Flag(code="memorization", message=f"memorization probe: {message}")


# -- evidence for the duplicates report -----------------------------------------------
def weights_evidence(header: SafetensorsHeader) -> dict[str, Any]:
    """A digest of the weights' values (names, dtypes, shapes, bytes) and a sample of each
    large float tensor at positions fixed by its shape (so equal shapes are comparable).
    One tensor at a time, hashed and sampled where it lies: no copy of it is made."""
    digest = hashlib.sha256()
    sketch: dict[str, list[float]] = {}
    for entry in sorted(header.tensors, key=lambda t: t.name):
        values = np.ascontiguousarray(read_tensor(header.path, entry))
        digest.update(f"{entry.name}|{entry.dtype}|{entry.shape}|".encode())
        digest.update(values.data.cast("B"))  # the bytes ``tobytes`` would copy
        if entry.dtype in FLOAT_DTYPES and entry.numel >= SKETCH_MIN:
            rng = np.random.default_rng(_shape_seed(entry.shape))
            picks = rng.choice(entry.numel, size=SKETCH_VALUES, replace=False)
            picked = values.reshape(-1)[picks].astype(np.float64)
            sketch[entry.name] = [round(float(v), 6) for v in picked]
    shapes = {t.name: list(t.shape) for t in header.tensors if t.name in sketch}
    return {"weights_sha256": digest.hexdigest(), "sketch": sketch, "shapes": shapes}


def _shape_seed(shape: tuple[int, ...]) -> int:
    return int.from_bytes(hashlib.sha256(str(shape).encode()).digest()[:4], "little")


def predictions_evidence(task: TaskSpec, outputs: np.ndarray) -> str:
    """The hidden-set predictions, compact: class indices, or float16 values, base64."""
    if task.kind == "classification":
        array = predicted(task, outputs).astype(np.uint16)
    else:
        array = outputs.astype(np.float16)
    return base64.b64encode(array.tobytes()).decode("ascii")


def _decode_predictions(task: TaskSpec, text: str) -> np.ndarray:
    dtype = np.uint16 if task.kind == "classification" else np.float16
    return np.frombuffer(base64.b64decode(text), dtype=dtype).astype(np.float64)


# -- the duplicates report (instructor only) ------------------------------------------
@dataclass(frozen=True)
class Finding:
    kind: str  # identical_weights | near_identical_weights | prediction_agreement
    teams: tuple[str, str]
    value: float
    detail: str


def _weights_pair(a: dict[str, Any], b: dict[str, Any]) -> Finding | None:
    teams = (a["team"], b["team"])
    if a["weights_sha256"] == b["weights_sha256"]:
        return Finding("identical_weights", teams, 1.0, "the weights files hold the same values")
    cosines = []
    for name, values in a["sketch"].items():
        shape = a["shapes"][name]
        same = [b["sketch"][n] for n, s in b["shapes"].items() if s == shape]
        if same:
            cosines.append(max(_cosine(values, other) for other in same))
    close = [c for c in cosines if c >= NEAR_COSINE]
    if cosines and len(close) * 2 >= len(a["sketch"]) and len(close) > 0:
        low = min(close)
        return Finding(
            "near_identical_weights",
            teams,
            low,
            f"{len(close)} of {len(a['sketch'])} weight tensors match one of the other team's "
            f"with cosine >= {low:.4f}",
        )
    return None


def _cosine(a: list[float], b: list[float]) -> float:
    x, y = np.asarray(a), np.asarray(b)
    norm = float(np.linalg.norm(x) * np.linalg.norm(y))
    return float(x @ y / norm) if norm > 0 else 0.0


def _agreement(task: TaskSpec, labels: np.ndarray, a: np.ndarray, b: np.ndarray) -> float | None:
    """Classification: how often two teams' common mistakes are the same wrong class.
    Regression: the correlation of their residuals. None when there is too little to say."""
    if task.kind == "classification":
        both = (a != labels) & (b != labels)
        if both.sum() < MIN_COMMON_ERRORS:
            return None
        return float((a[both] == b[both]).mean())
    ra, rb = a - labels, b - labels
    if ra.std() == 0 or rb.std() == 0:
        return None
    return float(np.corrcoef(ra, rb)[0, 1])


def duplicates(
    task: TaskSpec, docs: list[ResultDocument], labels: np.ndarray | None
) -> list[Finding]:
    """Every suspicious pair of teams among ``docs`` (graded on the hidden split)."""
    found: list[Finding] = []
    evidence = [
        {"team": d.team, **d.details["integrity"]}
        for d in docs
        if isinstance(d.details.get("integrity"), dict) and d.task == task.id and d.mode == "grade"
    ]
    for a, b in combinations(evidence, 2):
        if "weights_sha256" in a and "weights_sha256" in b:
            pair = _weights_pair(a, b) or _weights_pair(b, a)
            if pair is not None:
                found.append(pair)
        if labels is None or "predictions" not in a or "predictions" not in b:
            continue
        pa, pb = (_decode_predictions(task, e["predictions"]) for e in (a, b))
        if len(pa) != len(labels) or len(pb) != len(labels):
            continue
        value = _agreement(task, labels.astype(np.float64), pa, pb)
        limit = AGREEMENT if task.kind == "classification" else RESIDUAL_CORRELATION
        if value is not None and value >= limit:
            what = (
                "of their common mistakes are the same wrong class"
                if task.kind == "classification"
                else "correlation of their residuals"
            )
            found.append(
                Finding(
                    "prediction_agreement",
                    (a["team"], b["team"]),
                    value,
                    f"{value:.1%} {what}"
                    if task.kind == "classification"
                    else f"{value:.4f} {what}",
                )
            )
    return found


def write_report(task: TaskSpec, results_dir: Path, labels: np.ndarray | None) -> Path:
    """``RESULTS/<task>/integrity.json``: the duplicates report, for the instructor only."""
    docs = [d for d in read_results(results_dir) if d.task == task.id]
    findings = duplicates(task, docs, labels)
    path = results_dir / task.id / "integrity.json"
    body = {
        "task": task.id,
        "audience": "instructor",
        "teams": sorted(d.team for d in docs),
        "findings": [asdict(f) for f in findings],
        "flags": {
            d.team: [f.model_dump() for f in d.flags if f.audience == "instructor"]
            for d in docs
            if any(f.audience == "instructor" for f in d.flags)
        },
    }
    write_atomic(path, json.dumps(body, indent=2))
    return path


# -- the feedback quota -----------------------------------------------------------------
class QuotaExceeded(UserError):
    """The team has used today's hidden-set gradings: its last result stands."""


def check_quota(task: TaskSpec, team: str, rows: list[Any], now: datetime | None = None) -> None:
    """Raise ``QuotaExceeded`` when ``team`` has used today's hidden-set gradings of ``task``.

    ``rows`` are the store's rows of the team (``ResultsStore.history``): gradings in grade
    mode that evaluated the model (not invalid, not a harness failure) count."""
    quota = task.grading.daily_quota
    if quota <= 0:
        return
    today = (now or datetime.now(UTC)).date().isoformat()
    used = sum(
        1
        for r in rows
        if r.task == task.id
        and r.mode == "grade"
        and r.status != "invalid"
        and r.stage != "harness"
        and str(r.graded_at)[:10] == today
    )
    if used >= quota:
        raise QuotaExceeded(
            f"team {team} has used its {quota} hidden-set grading(s) of task {task.id} today",
            "`grade check` on the public validation split is unlimited; the quota resets at "
            "00:00 UTC",
        )
