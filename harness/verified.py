"""The verified evaluation, as stages of a grading (mixed into ``pipeline._Grading``):

1. phase A (sandbox, CPU, the submission's code, no test inputs): build, load strictly,
   one dry batch, ``torch.export`` with static shapes, ``program.pt2``;
2. check (here, JSON and raw bytes only): ``export_check``, then a clean archive;
3. count (``export_count``): checked against the task's limit, gaps named;
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

from . import integrity
from .data import PreparedSplit, prepare_split
from .eager import (
    CANARY,
    PROGRAM,
    export_batch,
    export_job_spec,
    job_with_files,
    predict_job_spec,
)
from .export_check import CheckError, Expect, check_program
from .export_count import count_program
from .interpret import (
    Failed,
    RunData,
    interpret_run,
    read_run,
    reported_count,
    verified_flags,
    verified_params,
)
from .params import ParamCount, over_limit, to_params
from .results import Flag, Params
from .tasks import TaskSpec

if TYPE_CHECKING:
    from .export_count import ExportCount
    from .pipeline import GradeOptions, Mode
    from .sandbox import Backend, RunJob
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
    _canary_split: PreparedSplit | None = None
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
            self._reported = reported_count(outcome)
            return out / PROGRAM
        if over_limit(self._count, task.parameter_limit):
            self.params = self.params.model_copy(update={"model_reported": reported_count(outcome)})
            raise Failed("over_limit", self._over_message(task), "count", verdict.output)
        if verdict.stage == "export" and task.integrity.allow_eager_fallback:
            self.flags.append(Flag(code="export_failed", message=verdict.message))
            return None
        raise Failed(verdict.status, verdict.message, verdict.stage, verdict.output)

    def _check_count(self, task: TaskSpec, program: Path) -> None:
        """Check the exported archive (JSON and raw bytes, no torch) and count it."""
        assert self.split is not None
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
            checked, literals = check_program(program, self._program, expect)
        except CheckError as exc:
            if over_limit(self._count, task.parameter_limit):
                raise Failed("over_limit", self._over_message(task), "count") from None
            raise Failed(
                "failed", f"the exported program was refused: {exc.message}", "check"
            ) from None
        count = count_program(checked, literals, task.integrity.allowance)
        file = self.params
        self.params = verified_params(file, count, self._reported, task.parameter_limit)
        self.flags.extend(verified_flags(count, file, self._reported, task.integrity.allowance))
        self.timing["check_s"] = round(time.perf_counter() - t, 4)
        limit = self.params.limit
        if limit is not None and (self.params.counted or 0) > limit:
            raise Failed("over_limit", self._over_message(task, count), "count")

    def _run_program(self, task: TaskSpec) -> np.ndarray:
        """Phase B: the checked program predicts; no submission code is mounted."""
        assert self.sub.manifest is not None and self.split is not None
        probe, files = self._probe_job(task)
        files[PROGRAM] = self._program
        spec = predict_job_spec(task, self.sub.manifest, self._batch, probe)
        job = job_with_files(self.workspace, "predict-job", spec, files)
        empty = self.workspace.stage("predict-sub", self.sub.path, [])
        out = self.workspace.output("predict-out")
        outcome = self.backend.run(self._job(task, empty, job, out, code=False))
        self.timing["sandbox_s"] = round(outcome.wall_seconds, 4)
        verdict = interpret_run(outcome, "predict")
        if verdict is not None:
            raise Failed(verdict.status, verdict.message, verdict.stage, verdict.output)
        run = read_run(outcome, task, self.split.count, self._probe_counts(probe))
        self.timing.update(run.timing)
        self.flags.extend(run.determinism_flags())
        self._probe(task, run, self._canary_split)
        return run.outputs

    def _probe_job(self, task: TaskSpec) -> tuple[dict[str, object] | None, dict[str, Path]]:
        """The probe a hidden-set run carries, and the files it needs in the job folder."""
        assert self.split is not None
        self._canary_split = None
        if self.mode != "grade":
            return None, {}
        canary = None
        if task.integrity.canary is not None:
            canary = prepare_split(task, task.integrity.canary, data_root=self.options.data_root)
        self._canary_split = canary
        probe = integrity.probe_spec(task, self.split.count, self.cache_key, canary is not None)
        files = {CANARY: canary.inputs_path} if probe and canary else {}
        return probe, files

    def _probe_counts(self, probe: dict[str, object] | None) -> tuple[int, int]:
        if probe is None:
            return 0, 0
        canary = self._canary_split.count if self._canary_split is not None else 0
        return int(str(probe["count"])), canary

    def _probe(self, task: TaskSpec, run: RunData, canary: PreparedSplit | None = None) -> None:
        """Memorization flags from the probe's outputs; evidence for the duplicates report."""
        assert self.split is not None
        if self.mode != "grade":
            return
        labels = self.split.labels()
        pair = None
        if canary is not None and run.canary is not None:
            pair = (canary.labels(), run.canary)
        flags, scores = integrity.probe_flags(task, labels, run.outputs, run.probe, pair)
        self.flags.extend(flags)
        self._evidence["probe"] = scores
        self._evidence["predictions"] = integrity.predictions_evidence(task, run.outputs)
