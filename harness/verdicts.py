"""Turn a sandbox run (its outcome, report and files) into a status and a message.

Messages here are written by the harness, for students; the submission's own output
and traceback go to ``student_output`` (the instructor's view) only.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .counting import over_message, verified_params  # noqa: F401  (their home: counting)
from .outputs import BadOutput, read_predictions, read_report
from .program.count import ExportCount, describe, largest, named_groups
from .results import Flag, LayerCount, Params, StudentError
from .runner.contract import Probe
from .sandbox import RunOutcome
from .student_error import clean, from_report, with_error
from .tasks import TaskSpec

STAGES = {
    "start": "starting",
    "convert": "converting the .pt weights (weights-only load)",
    "import": "importing the model's module",
    "build": "building the model (calling the entrypoint)",
    "load": "loading the weights strictly into the network",
    "dry_run": "running one batch of noise through the model",
    "export": "exporting the model with torch.export",
    "program": "loading the checked exported program",
    "predict": "running the model on the test inputs",
    "determinism": "re-running a slice of the inputs to check determinism",
    "probe": "running the memorization probe",
    "done": "finishing",
}
# exceptions raised by the runner itself: their text is the harness's, safe to show
HARNESS_TEXT = {"ContractError", "OutputError"}
EXPORT_HINT = (
    "hint: a model must be a pure tensor computation that torch.export can capture: "
    "ordinary modules, no Python-side lookups (hashing inputs, tables of answers), no "
    ".item()/.tolist()/.numpy() and no branches on tensor values"
)
MEMORY_TEXT = ("can't allocate memory", "out of memory", "cannot allocate memory")


class Failed(Exception):
    """Ends a grading early with the given status and message (already a result)."""

    def __init__(
        self,
        status: str,
        message: str,
        stage: str,
        output: str = "",
        error: StudentError | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.stage, self.output = status, message, stage, output
        self.error = error  # the submission's own error, for the student


@dataclass
class Verdict:
    status: str
    message: str
    stage: str
    output: str = ""
    error: StudentError | None = None

    def failed(self) -> Failed:
        """This verdict as the exception that ends a grading."""
        return Failed(self.status, self.message, self.stage, self.output, self.error)


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


def interpret_run(outcome: RunOutcome, phase: str, *, show_text: bool = True) -> Verdict | None:
    """None when the phase finished; otherwise the status and message it ends with.

    ``show_text=False`` for a run where submission code saw hidden inputs: its report could
    be forged, so no text from it reaches the message, only harness-written words."""
    report = read_report(outcome.output_dir)
    stage = _known(report.get("stage") if report else None)
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
    if phase == "predict":  # no submission code runs there, on hidden inputs: no text
        return _phase_b_error(error, log)
    verdict = _from_error(error, log, show_text)
    if verdict.status == "failed":
        verdict.error = from_report(error, report, log, show_text=show_text)
        verdict.message = with_error(verdict.message, verdict.error)
    return verdict


def _no_report(outcome: RunOutcome) -> str:
    sig = _signal_of(outcome.exit_code)
    how = f"crashed with {sig}" if sig else f"exited with code {outcome.exit_code}"
    return f"the runner {how} before writing its report"


def _known(stage: Any) -> str:
    """A stage name from a report (written where submission code ran): known names only."""
    return stage if isinstance(stage, str) and stage in STAGES else "start"


GENERIC = {
    "OutputError": ": its output broke the contract (shape, dtype or values)",
    "ContractError": ": it broke the submission contract",
}


def _from_error(error: dict[str, Any], log: str, show_text: bool = True) -> Verdict:
    stage = _known(error.get("stage"))
    etype = str(error.get("type", "Exception"))[:80]
    text = clean(error.get("message", ""), 600)  # untrusted: no host paths, env values
    trace = str(error.get("traceback", "")) or f"{etype}: {text}"
    output = f"{trace}\n--- output ---\n{log}"
    if etype == "MemoryError" or any(t in text.lower() for t in MEMORY_TEXT):
        return Verdict(
            "killed",
            f"the run was stopped: it passed the task's memory limit while {_stage_text(stage)}",
            stage,
            output,
        )
    if etype == "ExportError" and stage == "export" and show_text:
        return Verdict(
            "failed",
            f"the model could not be exported with torch.export: {text[:250]}; {EXPORT_HINT}",
            stage,
            output,
        )
    detail = "" if show_text else " (an exception)"  # shown: the error's own line follows
    if etype in HARNESS_TEXT:
        detail = f": {text}" if show_text else GENERIC[etype]
    return Verdict("failed", f"the model failed while {_stage_text(stage)}{detail}", stage, output)


def _phase_b_error(error: dict[str, Any], log: str) -> Verdict:
    """An error in phase B, where no submission code runs: the checked exported program's
    operators or the harness's interpreter raised it, never "the submission"."""
    verdict = _from_error(error, log, show_text=True)
    etype = str(error.get("type", "Exception"))[:80]
    if verdict.status != "failed" or etype in HARNESS_TEXT:
        return verdict
    if etype == "ProgramError":  # the interpreter met what the host check let through
        return Verdict(
            "failed",
            "internal harness error: phase B could not run the checked program "
            f"({str(error.get('message', ''))[:200]})",
            "harness",
            verdict.output,
        )
    return Verdict(
        "failed",
        f"the exported program failed while {_stage_text(verdict.stage)} ({etype} in phase B, "
        "which runs the checked program without the submission's code: an operator of the "
        "exported program or the harness's interpreter raised it)",
        verdict.stage,
        verdict.output,
    )


def _values(tensor: dict[str, Any]) -> int:
    """What one tensor of the runner's inventory counts: per 32 bits."""
    words = tensor.get("words", 1)
    return int(tensor["numel"]) * (words if isinstance(words, int) and 1 <= words <= 2 else 1)


@dataclass
class RunData:
    """A successful prediction run: predictions, timings and what the runner reported."""

    outputs: np.ndarray
    report: dict[str, Any]
    timing: dict[str, float] = field(default_factory=dict)
    probe: np.ndarray | None = None  # the probe's inputs again, with imperceptible noise
    canary: np.ndarray | None = None  # predictions on the canaries mixed into the inputs

    def params(self, params: Params, task: TaskSpec) -> Params:
        """Eager fallback: add the tensors the model showed outside its weights file (a
        64-bit value per 32 bits, as ``harness.counting`` counts)."""
        model = self.report.get("model") or {}
        extra = [
            LayerCount(name=b["name"], shape=b["shape"], numel=_values(b), kind="buffer")
            for b in model.get("buffers", [])
            if not b.get("persistent", True) and not b.get("norm") and b.get("numel", 0) > 0
        ] + [
            LayerCount(name=a["name"], shape=a["shape"], numel=_values(a), kind="created")
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
                "verified": False,
            }
        )

    def flags(
        self, params: Params, task: TaskSpec, why: str = "the model could not be exported"
    ) -> list[Flag]:
        """Eager fallback: the unverified-count flag, tensors outside the file, determinism."""
        flags = [
            Flag(
                code="unverified_count",
                audience="student",
                message=(
                    f"unverified count: {why}, so the task's eager fallback ran the model's "
                    "code; the count covers the weights file and the tensors the model itself "
                    "showed"
                ),
            )
        ]
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
        return [*flags, *self.determinism_flags()]

    def device(self) -> str | None:
        """The device the runner predicted on, as it reported it ("cpu", "cuda:0")."""
        device = self.report.get("device")
        return device if isinstance(device, str) and len(device) < 40 else None

    def determinism_flags(self) -> list[Flag]:
        det = self.report.get("determinism") or {}
        diff = det.get("max_abs_diff", 0.0)
        diff = float(diff) if isinstance(diff, (int, float)) else float("inf")
        scale = 1.0 + float(np.abs(self.outputs).max()) if self.outputs.size else 1.0
        if not diff > 1e-4 * scale:
            return []
        return [
            Flag(
                code="nondeterministic",
                audience="student",
                message=(
                    f"nondeterministic output: predictions changed by up to {diff:.3g} when "
                    f"{det.get('checked', 0)} inputs were predicted again in another order and "
                    "batch composition; outputs must not depend on randomness, on earlier "
                    f"calls or on the other inputs in a batch{_which(det)}"
                ),
            )
        ]


def _which(det: dict[str, Any]) -> str:
    """`` (12 images differ: 64, 65, ...)`` from the runner's determinism report."""
    images = det.get("images")
    if not isinstance(images, list) or not images:
        return ""
    shown = ", ".join(str(int(i)) for i in images[:10] if isinstance(i, int))
    more = ", ..." if int(det.get("differ", 0) or 0) > 10 else ""
    return f" ({det.get('differ', len(images))} images differ: {shown}{more})"


def read_run(outcome: RunOutcome, task: TaskSpec, count: int, probe: Probe | None) -> RunData:
    """Predictions (and, when the run carried a ``probe``, the noisy inputs') as data."""
    report = read_report(outcome.output_dir) or {}
    out = outcome.output_dir
    try:
        outputs = read_predictions(out, count, task.kind, task.num_classes)
        noisy = (
            read_predictions(out / "probe", probe.count, task.kind, task.num_classes)
            if probe
            else None
        )
    except BadOutput as exc:
        raise Failed(
            "failed", f"the model's output broke the contract: {exc}", "predict", outcome.log
        ) from None
    t = report.get("timings") or {}
    inference = float(t.get("predict_s", 0.0) or 0.0)
    loading = ("import_s", "build_s", "load_s", "program_s")
    timing = {
        "load_s": round(sum(float(t.get(k, 0) or 0) for k in loading), 4),
        "inference_s": round(inference, 4),
        "images_per_s": round(count / inference, 1) if inference > 0 else 0.0,
    }
    if "determinism_s" in t:  # the whole split again (not when proved batch-independent)
        timing["determinism_s"] = round(float(t["determinism_s"] or 0.0), 4)
    return RunData(outputs=outputs, report=report, timing=timing, probe=noisy)


def verified_flags(
    count: ExportCount, file: Params, reported: int | None, allowance: int
) -> list[Flag]:
    """Values outside the weights file (named), and a model whose own count disagrees."""
    flags = []
    gap = count.counted - (file.counted or 0)
    if gap > allowance:
        named = describe(named_groups(count)) or f"parameters: {largest(count)}"
        flags.append(
            Flag(
                code="tensors_outside_weights",
                audience="student",
                message=f"{gap:,} values beyond the weights file count too: {named}",
            )
        )
    if reported != count.parameters:
        said = f"says {reported:,}" if reported is not None else "could not be computed"
        flags.append(
            Flag(
                code="count_mismatch",
                message=(
                    f"the model's own parameter count {said}, but its exported program holds "
                    f"{count.parameters:,} values in parameters: counting functions were "
                    "patched, or parameters hidden from model.parameters()"
                ),
            )
        )
    return flags


def reported_count(outcome: RunOutcome) -> int | None:
    """Phase A's report of the model's own ``sum(p.numel())``: only compared, never used."""
    model = (read_report(outcome.output_dir) or {}).get("model")
    value = model.get("parameters_sum") if isinstance(model, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None
