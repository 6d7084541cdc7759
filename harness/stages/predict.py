"""Predict the test inputs: phase B (sandbox, GPU when present, no submission code: the
checked program predicts, again in another batch composition, and the probe's inputs), or
the task's eager fallback (the submission's code predicts; the count is unverified).

In a hidden-set grading, canaries drawn from the secret seed are mixed into the inputs
(``harness.canary``) and taken out of the outputs again here; the memorization probe's
flags and evidence come from both."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import canary, integrity
from ..canary import Mixed
from ..counting import over_message, params_over_limit
from ..jobs import PROGRAM, eager_job_spec, job_with_files, predict_job_spec
from ..params import to_params
from ..results import Flag
from ..runner.contract import Probe
from ..sandbox import RunOutcome
from ..verdicts import Failed, RunData, interpret_run, read_run
from .records import Checked, Counted, Ended, Grading, Notes, Predicted


def predict(checked: Checked) -> Predicted:
    """Phase B: the checked program predicts; no submission code is mounted."""
    g = checked.counted.grading
    assert g.sub.manifest is not None
    g.stage("predict")
    ws = g.workspace
    probe = _Probe.of(g, shared=True)
    batch, recheck = checked.exported.batch, not checked.independent
    spec = predict_job_spec(g.task, g.sub.manifest, batch, probe.spec, recheck)
    job = job_with_files(ws, "predict-job", spec, {PROGRAM: checked.program})
    empty = ws.stage("predict-sub", g.sub.path, [])
    out = ws.output("predict-out")
    run_job = g.sandbox_job(empty, job, out, code=False, inputs=probe.inputs())
    outcome = g.predict(run_job)
    notes = checked.notes.add(
        flags=probe.notes, timing={"sandbox_s": round(outcome.wall_seconds, 4)}
    )
    verdict = interpret_run(outcome, "predict")
    if verdict is not None:
        raise Ended(verdict.failed(), notes)
    run, every = probe.read(outcome, g)
    notes = notes.add(timing=run.timing, flags=run.determinism_flags(), device=run.device())
    return Predicted(g, probe.flags(g, run, every, notes), run.outputs)


def eager(counted: Counted, why: str) -> Predicted:
    """The eager fallback (tasks that allow it): the submission's code predicts the test
    inputs itself, after ``why`` ended the verified path; the count is unverified."""
    g = counted.grading
    assert g.sub.manifest is not None
    g.stage("predict")
    ws = g.workspace
    files = [f for f in g.sub.files if f != counted.declared]
    name = counted.staged_name()
    sub_dir = ws.stage("eager-sub", g.sub.path, files, extra={name: counted.weights})
    probe = _Probe.of(g)
    spec = eager_job_spec(g.task, g.sub.manifest, name, probe.spec)
    job = job_with_files(ws, "eager-job", spec, {})
    out = ws.output("eager-out")
    outcome = g.backend.run(g.sandbox_job(sub_dir, job, out, code=True, inputs=probe.inputs()))
    notes = counted.notes.add(
        flags=probe.notes, timing={"sandbox_s": round(outcome.wall_seconds, 4)}
    )
    verdict = interpret_run(outcome, "eager", show_text=g.mode != "grade")
    if verdict is not None:
        raise Ended(verdict.failed(), notes)
    run, every = probe.read(outcome, g)
    params = run.params(notes.params, g.task)
    # no device noted: the submission's code wrote this run's report, it could say anything
    notes = notes.add(params=params, timing=run.timing, flags=run.flags(params, g.task, why))
    if params_over_limit(params):
        message = over_message(params, g.task, None, counted.count.counted)
        raise Ended(Failed("over_limit", message, "count"), notes)
    return Predicted(g, probe.flags(g, run, every, notes), run.outputs)


def unverified(counted: Counted, since: Notes, failure: Failed) -> Counted:
    """``counted`` ready for the eager fallback after ``failure`` (at check or phase B):
    the notes as they stood after export (``since``), the file's count, and why."""
    params = to_params(counted.count, counted.grading.task.parameter_limit)
    flag = Flag(code=f"{failure.stage}_failed", message=failure.message)
    return dataclasses.replace(counted, notes=since.add(params=params, flags=[flag]))


@dataclass(frozen=True)
class _Probe:
    """The probe a hidden-set run carries, and the canaries mixed into its inputs."""

    spec: Probe | None
    mixed: Mixed | None
    notes: tuple[Flag, ...]  # why canaries could not be mixed in

    @classmethod
    def of(cls, g: Grading, *, shared: bool = False) -> _Probe:
        """``shared``: phase B's mix, one per split (``canary.shared_mix``); else the
        grading's own, in its workspace (the eager fallback)."""
        if g.mode != "grade":
            return cls(None, None, ())
        task = g.task
        drawn = canary.draw(task, task.integrity.canaries, g.options.data_root)
        mixed = None
        notes: tuple[Flag, ...] = ()
        if drawn is not None and shared:
            mixed = canary.shared_mix(g.split, *drawn)
        elif drawn is not None:
            folder = g.workspace.root / "mixed-inputs"
            mixed = canary.mix(g.split, *drawn, folder, g.cache_key)
        else:
            note = canary.public_test_set_flag(task, g.options.data_root)
            notes = (note,) if note else ()
        count = mixed.count if mixed is not None else g.split.count
        return cls(integrity.probe_spec(task, count, g.cache_key), mixed, notes)

    def inputs(self) -> Path | None:
        """The folder a prediction run reads: the mixed inputs, or None (the split's)."""
        return self.mixed.inputs_dir if self.mixed is not None else None

    def read(self, outcome: RunOutcome, g: Grading) -> tuple[RunData, np.ndarray | None]:
        """The run's data, with the canaries' outputs taken out of the hidden ones (and,
        when canaries were mixed in, every output before separating them)."""
        mixed = self.mixed
        run = read_run(outcome, g.task, mixed.count if mixed else g.split.count, self.spec)
        if mixed is None:
            return run, None
        every = run.outputs
        run.canary = every[mixed.canary_at]
        run.outputs = every[mixed.hidden_at]
        det = run.report.get("determinism")
        if isinstance(det, dict) and isinstance(det.get("images"), list):
            where = {int(p): i for i, p in enumerate(mixed.hidden_at)}
            det["images"] = sorted(where[p] for p in det["images"] if p in where)
        return run, every

    def flags(self, g: Grading, run: RunData, every: np.ndarray | None, notes: Notes) -> Notes:
        """Memorization flags from the probe's outputs; evidence for the duplicates report."""
        if g.mode != "grade":
            return notes
        labels = g.split.labels()
        pair = first = None
        if self.mixed is not None and run.canary is not None and every is not None:
            pair = (self.mixed.canary_labels, run.canary)
            first = (self.mixed.labels(labels), every)
        flags, scores = integrity.probe_flags(g.task, labels, run.outputs, run.probe, pair, first)
        evidence = {
            "probe": scores,
            "predictions": integrity.predictions_evidence(g.task, run.outputs),
        }
        return notes.add(flags=flags, evidence=evidence)
