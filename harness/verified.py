"""The verified evaluation, as stages of a grading (mixed into ``pipeline._Grading``):

1. phase A (sandbox, CPU, the submission's code, no test inputs): build, load strictly,
   one dry batch, ``torch.export`` with static shapes, ``program.pt2``;
2. check (here, JSON and raw bytes only): ``program.check``, then a clean archive;
3. count (``program.count``): checked against the task's limit, gaps named;
4. phase B (sandbox, GPU when present, no submission code mounted): the checked program
   predicts the test inputs, again in another batch composition, and the probe's inputs.

A model that cannot be exported, whose program the check refuses, or whose program phase B
cannot run fails, or, where the task allows, falls back to the eager run
(``_Grading._predict``), marked "unverified count".
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from . import canary, integrity, regenerate
from .canary import Mixed
from .counting import apart_flag, count_checked, source_values, verified_params
from .counting import over_limit as over_the_limit
from .data import PreparedSplit
from .jobs import (
    PROGRAM,
    export_batch,
    export_job_spec,
    job_with_files,
    predict_job_spec,
)
from .outputs import read_report
from .params import ParamCount, over_limit, to_params
from .program.check import CheckError, Expect, check_program
from .program.records import Program
from .results import Flag, Params
from .runner.contract import torch_mismatch
from .safefs import NotPlain, plain_file
from .tasks import TaskSpec
from .verdicts import (
    Failed,
    RunData,
    interpret_run,
    read_run,
    reported_count,
    verified_flags,
)

if TYPE_CHECKING:
    from .options import GradeOptions, Mode
    from .program import ExportCount
    from .sandbox import Backend, RunJob, RunOutcome
    from .staging import Workspace
    from .submission import Submission


class VerifiedStages:
    """Phase A, the host check and count, phase B and the probe, on a grading's state."""

    sub: Submission
    options: GradeOptions
    backend: Backend
    mode: Mode
    workspace: Workspace
    split: PreparedSplit | None
    params: Params
    flags: list[Flag]
    timing: dict[str, float]
    cache_key: str
    _count: ParamCount
    _evidence: dict[str, object]
    _reported: int | None = None
    _batch: int = 1
    _program: Path
    _mixed: Mixed | None = None
    _mixed_outputs: np.ndarray
    _fallback_why: str = "the model could not be exported"  # why the eager fallback ran

    if TYPE_CHECKING:

        def _job(
            self,
            task: TaskSpec,
            sub_dir: Path,
            job_dir: Path,
            out: Path,
            *,
            code: bool,
            inputs: Path | None = None,
            gpu: bool = True,
        ) -> RunJob: ...

        def _predict(self, task: TaskSpec, weights: tuple[Path, str]) -> np.ndarray: ...

        def _over_message(self, task: TaskSpec, count: ExportCount | None = None) -> str: ...

        def _stage(self, name: str) -> None: ...

    def _verified(self, task: TaskSpec, weights: tuple[Path, str]) -> np.ndarray:
        """Export the model (A), check and count the program here, run it without the
        submission's code (B); the eager fallback only where the task allows it."""
        program = self._export(task, weights)
        if program is None:
            return self._predict(task, weights)
        kept = len(self.flags)
        try:
            self._check_count(task, program)
            return self._run_program(task)
        except Failed as failed:
            if not self._falls_back(task, failed):
                raise
            # the eager run counts again, unverified: drop what the program's count said
            del self.flags[kept:]
            self.params = to_params(self._count, task.parameter_limit)
            self.flags.append(Flag(code=f"{failed.stage}_failed", message=failed.message))
            return self._predict(task, weights)

    def _falls_back(self, task: TaskSpec, failed: Failed) -> bool:
        """Whether a failure after export (the host check refused the program, or phase B
        could not run it) goes on to the eager fallback: only where the task allows it,
        and never for a count over the limit, a timeout or a killed run."""
        if not task.integrity.allow_eager_fallback or failed.status != "failed":
            return False
        self._fallback_why = (
            "the host check refused the exported program"
            if failed.stage == "check"
            else "the exported program could not be run"
        )
        return True

    def _export(self, task: TaskSpec, weights: tuple[Path, str]) -> Path | None:
        """Phase A: build, load, dry batch, torch.export; no test inputs, no GPU."""
        assert self.sub.manifest is not None and self.split is not None
        self._stage("export")
        path, declared = weights
        files = [f for f in self.sub.files if f != declared]
        name = declared if path.parent == self.sub.path else "weights.safetensors"
        sub_dir = self.workspace.stage("export-sub", self.sub.path, files, extra={name: path})
        self._batch = export_batch(task, self.split.count)
        spec = export_job_spec(task, self.sub.manifest, name, self._batch)
        job = self.workspace.job("export-job", spec)
        out = self.workspace.output("export-out")
        no_inputs = self.workspace.stage("export-inputs", self.sub.path, [])
        job_run = self._job(task, sub_dir, job, out, code=True, inputs=no_inputs, gpu=False)
        outcome = self.backend.run(job_run)
        self.timing["export_s"] = round(outcome.wall_seconds, 4)
        verdict = interpret_run(outcome, "export")
        if verdict is None:
            wrong_torch = torch_mismatch((read_report(outcome.output_dir) or {}).get("torch"))
            if wrong_torch is not None:  # the grader's setup, not the submission: re-graded
                raise Failed("failed", wrong_torch, "harness")
            self._reported = reported_count(outcome)
            try:
                return plain_file(out, out / PROGRAM)
            except NotPlain as exc:
                raise Failed("failed", f"the exported program: {exc}", "export") from None
        if over_limit(self._count, task.parameter_limit):
            self.params = self.params.model_copy(update={"model_reported": reported_count(outcome)})
            raise Failed("over_limit", self._over_message(task), "count", verdict.output)
        if verdict.stage == "export" and task.integrity.allow_eager_fallback:
            self.flags.append(Flag(code="export_failed", message=verdict.message))
            return None
        raise verdict.failed()

    def _check_count(self, task: TaskSpec, program: Path) -> None:
        """Check the exported archive (JSON and raw bytes, no torch) and count it."""
        assert self.split is not None
        self._stage("check")
        t = time.perf_counter()
        expect = Expect(
            input_shape=(self._batch, *task.input_shape),
            kind=task.kind,
            num_classes=task.num_classes,
            max_bytes=task.limits.output_mb * 2**20,
            extra_ops=task.integrity.operators,
        )
        self._program = self.workspace.root / "checked.pt2"
        try:
            checked, _ = check_program(program, self._program, expect)
        except CheckError as exc:
            if over_limit(self._count, task.parameter_limit):
                raise Failed("over_limit", self._over_message(task), "count") from None
            raise Failed(
                "failed", f"the exported program was refused: {exc.message}", "check"
            ) from None
        count = count_checked(checked, task, frozenset(), 0)
        self.timing["check_s"] = round(time.perf_counter() - t, 4)
        names = regenerate.candidates(count)
        if names:  # buffers that may be structural: does the code alone rebuild them?
            found = self._regenerated(task, checked, names)
            if found:
                values = source_values(self.sub.path, self.sub.files)
                count = count_checked(checked, task, found, values)
        file = self.params
        self.params = verified_params(file, count, self._reported, task.parameter_limit)
        self.flags.extend(verified_flags(count, file, self._reported, task.integrity.allowance))
        apart = apart_flag(count)
        self.flags.extend([apart] if apart else [])
        if over_the_limit(self.params.counted, self.params.limit):
            raise Failed("over_limit", self._over_message(task, count), "count")

    def _regenerated(self, task: TaskSpec, checked: Program, names: list[str]) -> frozenset[str]:
        """The rebuild run (the submission's code, no weights file, no inputs): which of
        ``names`` the code alone regenerates bit-identically. A failed run proves nothing."""
        assert self.sub.manifest is not None
        declared = self.sub.manifest.model.weights
        files = [f for f in self.sub.files if f != declared]
        sub_dir = self.workspace.stage("rebuild-sub", self.sub.path, files)
        spec = {
            "phase": "rebuild",
            "entrypoint": self.sub.manifest.model.entrypoint,
            "threads": max(1, int(task.limits.cpus)),
        }
        job = self.workspace.job("rebuild-job", spec)
        out = self.workspace.output("rebuild-out")
        no_inputs = self.workspace.stage("rebuild-inputs", self.sub.path, [])
        outcome = self.backend.run(
            self._job(task, sub_dir, job, out, code=True, inputs=no_inputs, gpu=False)
        )
        self.timing["rebuild_s"] = round(outcome.wall_seconds, 4)
        if interpret_run(outcome, "build") is not None:
            return frozenset()
        report = read_report(out) or {}
        return regenerate.regenerated(self._program, checked, names, report)

    def _run_program(self, task: TaskSpec) -> np.ndarray:
        """Phase B: the checked program predicts; no submission code is mounted."""
        assert self.sub.manifest is not None and self.split is not None
        self._stage("predict")
        probe, files = self._probe_job(task)
        files[PROGRAM] = self._program
        spec = predict_job_spec(task, self.sub.manifest, self._batch, probe)
        job = job_with_files(self.workspace, "predict-job", spec, files)
        empty = self.workspace.stage("predict-sub", self.sub.path, [])
        out = self.workspace.output("predict-out")
        job_run = self._job(task, empty, job, out, code=False, inputs=self._probe_inputs())
        outcome = self.backend.run(job_run)
        self.timing["sandbox_s"] = round(outcome.wall_seconds, 4)
        verdict = interpret_run(outcome, "predict")
        if verdict is not None:
            raise verdict.failed()
        run = self._read_run(outcome, task, probe)
        self.timing.update(run.timing)
        self.flags.extend(run.determinism_flags())
        self._probe(task, run)
        return run.outputs

    def _probe_job(self, task: TaskSpec) -> tuple[dict[str, object] | None, dict[str, Path]]:
        """The probe a hidden-set run carries; canaries drawn from the secret seed are mixed
        into its inputs (``harness.canary``), or a note says why they cannot be."""
        assert self.split is not None
        self._mixed = None
        if self.mode != "grade":
            return None, {}
        drawn = canary.draw(task, task.integrity.canaries, self.options.data_root)
        if drawn is not None:
            folder = self.workspace.root / "mixed-inputs"
            self._mixed = canary.mix(self.split, *drawn, folder, self.cache_key)
        else:
            note = canary.public_test_set_flag(task, self.options.data_root)
            self.flags.extend([note] if note else [])
        count = self._mixed.count if self._mixed is not None else self.split.count
        return integrity.probe_spec(task, count, self.cache_key), {}

    def _probe_inputs(self) -> Path | None:
        """The folder a prediction run reads: the mixed inputs, or None (the split's)."""
        return self._mixed.inputs_dir if self._mixed is not None else None

    def _probe_counts(self, probe: dict[str, object] | None) -> int:
        return 0 if probe is None else int(str(probe["count"]))

    def _read_run(
        self, outcome: RunOutcome, task: TaskSpec, probe: dict[str, object] | None
    ) -> RunData:
        """The run's data, with the canaries' outputs taken out of the hidden ones."""
        assert self.split is not None
        mixed = self._mixed
        run = read_run(
            outcome, task, mixed.count if mixed else self.split.count, self._probe_counts(probe)
        )
        if mixed is not None:
            self._mixed_outputs = run.outputs
            run.canary = run.outputs[mixed.canary_at]
            run.outputs = run.outputs[mixed.hidden_at]
            det = run.report.get("determinism")
            if isinstance(det, dict) and isinstance(det.get("images"), list):
                where = {int(p): i for i, p in enumerate(mixed.hidden_at)}
                det["images"] = sorted(where[p] for p in det["images"] if p in where)
        return run

    def _probe(self, task: TaskSpec, run: RunData) -> None:
        """Memorization flags from the probe's outputs; evidence for the duplicates report."""
        assert self.split is not None
        if self.mode != "grade":
            return
        labels = self.split.labels()
        pair = first = None
        if self._mixed is not None and run.canary is not None:
            pair = (self._mixed.canary_labels, run.canary)
            first = (self._mixed.labels(labels), self._mixed_outputs)
        flags, scores = integrity.probe_flags(task, labels, run.outputs, run.probe, pair, first)
        self.flags.extend(flags)
        self._evidence["probe"] = scores
        self._evidence["predictions"] = integrity.predictions_evidence(task, run.outputs)
