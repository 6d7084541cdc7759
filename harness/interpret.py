"""Turn a sandbox run (its outcome, report and files) into a status and a message.

Messages here are written by the harness, for students; the submission's own output
and traceback go to ``student_output`` (the instructor's view) only.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .outputs import BadOutput, read_predictions, read_report
from .results import Flag, LayerCount, Params
from .sandbox import RunOutcome
from .tasks import TaskSpec

STAGES = {
    "start": "starting",
    "convert": "converting the .pt weights (weights-only load)",
    "import": "importing the model's module",
    "build": "building the model (calling the entrypoint)",
    "load": "loading the weights strictly into the network",
    "predict": "running the model on the test inputs",
    "determinism": "re-running a slice of the inputs to check determinism",
    "done": "finishing",
}
# exceptions raised by the runner itself: their text is the harness's, safe to show
HARNESS_TEXT = {"ContractError", "OutputError"}
MEMORY_TEXT = ("can't allocate memory", "out of memory", "cannot allocate memory")


@dataclass
class Verdict:
    status: str
    message: str
    stage: str
    output: str = ""


def _stage_text(stage: str) -> str:
    return STAGES.get(stage, stage)


def _signal_of(code: int | None) -> str | None:
    if code is None:
        return None
    number = -code if code < 0 else code - 128 if 128 < code <= 192 else None
    if number is None:
        return None
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def interpret_run(outcome: RunOutcome, phase: str) -> Verdict | None:
    """None when the phase finished; otherwise the status and message it ends with."""
    report = read_report(outcome.output_dir)
    stage = str(report.get("stage", "start")) if report else "start"
    log = outcome.log
    if outcome.status == "timeout":
        return Verdict(
            "timeout",
            f"the run passed the task's time limit ({outcome.reason}) while {_stage_text(stage)}",
            stage,
            log,
        )
    if outcome.status == "killed":
        return Verdict(
            "killed",
            f"the run was stopped: it passed the task's {outcome.reason} "
            f"while {_stage_text(stage)}",
            stage,
            log,
        )
    if report is None:
        return Verdict("failed", _no_report(outcome), "start", log)
    if report.get("ok") and outcome.status == "ok":
        return None
    error = report.get("error") if isinstance(report.get("error"), dict) else None
    if error is None:
        sig = _signal_of(outcome.exit_code)
        how = f"crashed with {sig}" if sig else f"ended (exit code {outcome.exit_code})"
        return Verdict(
            "failed",
            f"the process {how} while {_stage_text(stage)}, without reporting an error",
            stage,
            log,
        )
    return _from_error(error, log)


def _no_report(outcome: RunOutcome) -> str:
    sig = _signal_of(outcome.exit_code)
    how = f"crashed with {sig}" if sig else f"exited with code {outcome.exit_code}"
    return f"the runner {how} before writing its report"


def _from_error(error: dict[str, Any], log: str) -> Verdict:
    stage = str(error.get("stage", "start"))
    etype = str(error.get("type", "Exception"))[:80]
    text = str(error.get("message", ""))[:600]
    output = f"{error.get('traceback', '')}\n--- output ---\n{log}"
    if etype == "MemoryError" or any(t in text.lower() for t in MEMORY_TEXT):
        return Verdict(
            "killed",
            f"the run was stopped: it passed the task's memory limit while {_stage_text(stage)}",
            stage,
            output,
        )
    detail = f": {text}" if etype in HARNESS_TEXT else f" ({etype} raised by the submission)"
    return Verdict("failed", f"the model failed while {_stage_text(stage)}{detail}", stage, output)


@dataclass
class RunData:
    """A successful eager run: predictions, timings and the model's own inventory."""

    outputs: np.ndarray
    report: dict[str, Any]
    timing: dict[str, float] = field(default_factory=dict)

    def params(self, params: Params, task: TaskSpec) -> Params:
        """Add the tensors the model holds outside its weights file (they count too)."""
        model = self.report.get("model") or {}
        extra = [
            LayerCount(name=b["name"], shape=b["shape"], numel=b["numel"], kind="buffer")
            for b in model.get("buffers", [])
            if not b.get("persistent", True) and not b.get("norm") and b.get("numel", 0) > 0
        ] + [
            LayerCount(name=a["name"], shape=a["shape"], numel=a["numel"], kind="created")
            for a in model.get("attributes", [])
            if a.get("numel", 0) > 0
        ]
        counted = (params.counted or 0) + sum(e.numel for e in extra)
        reported = model.get("parameters_sum")
        return params.model_copy(
            update={
                "counted": counted,
                "per_layer": [*params.per_layer, *extra],
                "model_reported": int(reported) if isinstance(reported, int) else None,
            }
        )

    def flags(self, params: Params, task: TaskSpec) -> list[Flag]:
        flags = []
        extra = [p for p in params.per_layer if p.kind in ("buffer", "created")]
        if extra:
            total = sum(p.numel for p in extra)
            names = ", ".join(p.name for p in extra[:5])
            flags.append(
                Flag(
                    code="tensors_outside_weights",
                    audience="student",
                    message=(
                        f"{total:,} values in tensors outside the weights file count too ({names})"
                    ),
                )
            )
        weights = (params.weights_file or 0) - params.buffers
        if params.model_reported is not None and abs(params.model_reported - weights) > (
            task.integrity.allowance
        ):
            flags.append(
                Flag(
                    code="count_mismatch",
                    message=(
                        f"the model reports {params.model_reported:,} parameters but its "
                        f"weights file holds {weights:,}"
                    ),
                )
            )
        det = self.report.get("determinism") or {}
        scale = 1.0 + float(np.abs(self.outputs).max()) if self.outputs.size else 1.0
        if float(det.get("max_abs_diff", 0.0)) > 1e-4 * scale:
            flags.append(
                Flag(
                    code="nondeterministic",
                    message=(
                        f"outputs changed by up to {det['max_abs_diff']:.3g} when a slice of "
                        "the inputs was predicted again in another order and batch size"
                    ),
                )
            )
        return flags


def read_run(outcome: RunOutcome, task: TaskSpec, count: int) -> RunData:
    from .pipeline import _Failed

    report = read_report(outcome.output_dir) or {}
    try:
        outputs = read_predictions(outcome.output_dir, count, task.kind, task.num_classes)
    except BadOutput as exc:
        raise _Failed(
            "failed", f"the model's output broke the contract: {exc}", "predict", outcome.log
        ) from None
    t = report.get("timings") or {}
    inference = float(t.get("predict_s", 0.0) or 0.0)
    timing = {
        "load_s": round(sum(float(t.get(k, 0) or 0) for k in ("import_s", "build_s", "load_s")), 4),
        "inference_s": round(inference, 4),
        "images_per_s": round(count / inference, 1) if inference > 0 else 0.0,
    }
    return RunData(outputs=outputs, report=report, timing=timing)
