"""The frozen records that pass between the stages of one grading (``harness.stages``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..devices import gpu_present, use_gpu
from ..results import Flag, Params, SandboxInfo
from ..sandbox import RunJob, RunOutcome, SandboxPolicy
from ..verdicts import Failed

if TYPE_CHECKING:
    from ..data import PreparedSplit
    from ..options import GradeOptions, Mode, OnStage
    from ..params import ParamCount
    from ..sandbox import Backend
    from ..scoring import Scores
    from ..staging import Workspace
    from ..submission import Submission
    from ..tasks import TaskSpec
    from ..warm import WarmSandboxes


@dataclass(frozen=True)
class Grading:
    """The facts of one grading that no stage changes: who, what, where, on which inputs."""

    sub: Submission
    task: TaskSpec
    options: GradeOptions
    backend: Backend
    mode: Mode
    workspace: Workspace
    split: PreparedSplit
    cache_key: str
    sandbox: SandboxInfo
    on_stage: OnStage | None = None
    warm: WarmSandboxes | None = None  # None: every job is one more ``backend.run``

    def stage(self, name: str) -> None:
        """Tell the progress display which stage this grading entered."""
        if self.on_stage is not None:
            self.on_stage(self.sub.task_id, self.sub.team, name)

    def predict(self, job: RunJob) -> RunOutcome:
        """Phase B: the batch's warm predictor, else a run of its own."""
        return self.warm.predict(job) if self.warm is not None else self.backend.run(job)

    def run_code(self, job: RunJob) -> RunOutcome:
        """The submission's own run (convert, export, rebuild; no GPU): the batch's warm
        runner, else a run of its own. Phase B's predictor starts meanwhile."""
        if self.warm is None:
            return self.backend.run(job)
        self.warm.prewarm(self.policy(gpu=True))
        return self.warm.run(job)

    def policy(self, *, gpu: bool) -> SandboxPolicy:
        """The task's limits, with the GPU where ``gpu`` and the grading uses one."""
        return SandboxPolicy.from_limits(self.task.limits, gpu=gpu and self.gpu())

    def gpu(self) -> bool:
        return use_gpu(self.task.device, self.options.gpu, gpu_present())

    def sandbox_job(
        self,
        sub_dir: Path,
        job_dir: Path,
        out: Path,
        *,
        code: bool,
        inputs: Path | None = None,  # default: the split's inputs
        gpu: bool = True,
    ) -> RunJob:
        """One sandbox run of this grading, under the task's limits."""
        policy = self.policy(gpu=gpu)
        return RunJob(
            submission_dir=sub_dir,
            inputs_dir=inputs or self.split.inputs_dir,
            job_dir=job_dir,
            output_dir=out,
            policy=policy,
            mount_submission=code,
            label=self.sub.team,
        )


@dataclass(frozen=True)
class Notes:
    """What the stages have learned so far: the count, flags, timings, integrity evidence."""

    params: Params
    flags: tuple[Flag, ...] = ()
    timing: tuple[tuple[str, float], ...] = ()
    evidence: tuple[tuple[str, Any], ...] = ()
    device: str | None = None  # where the test inputs were predicted ("cpu", "cuda:0")

    def add(
        self,
        *,
        params: Params | None = None,
        flags: tuple[Flag, ...] | list[Flag] = (),
        timing: dict[str, float] | None = None,
        evidence: dict[str, Any] | None = None,
        device: str | None = None,
    ) -> Notes:
        """A copy with ``params`` and ``device`` replaced and the rest appended."""
        return Notes(
            params=params if params is not None else self.params,
            flags=(*self.flags, *flags),
            timing=(*self.timing, *((timing or {}).items())),
            evidence=(*self.evidence, *((evidence or {}).items())),
            device=device if device is not None else self.device,
        )

    def timings(self) -> dict[str, float]:
        return dict(self.timing)

    def evidence_dict(self) -> dict[str, Any]:
        return dict(self.evidence)


@dataclass(frozen=True)
class Admitted:
    """A valid submission whose inputs are prepared and which the store did not settle."""

    grading: Grading
    notes: Notes


@dataclass(frozen=True)
class Counted:
    """The weights as safetensors (converted in a sandbox when .pt), counted from the header."""

    admitted: Admitted
    notes: Notes
    weights: Path  # a host path: the submission's own file, or the converted one
    declared: str  # the manifest's weights file name
    count: ParamCount

    @property
    def grading(self) -> Grading:
        return self.admitted.grading

    def staged_name(self) -> str:
        """The weights' file name inside a sandbox's /submission."""
        own = self.weights.parent == self.grading.sub.path
        return self.declared if own else "weights.safetensors"


@dataclass(frozen=True)
class Exported:
    """Phase A's program (not yet checked), the model's own parameter sum, the batch."""

    counted: Counted
    notes: Notes
    program: Path
    reported: int | None
    batch: int


@dataclass(frozen=True)
class Checked:
    """The checked, cleanly rewritten program and its verified count."""

    exported: Exported
    notes: Notes
    program: Path
    independent: bool = False  # proved: each image's output depends on that image alone

    @property
    def counted(self) -> Counted:
        return self.exported.counted


@dataclass(frozen=True)
class Predicted:
    """The hidden inputs' predictions (canaries taken out) and what the run reported."""

    grading: Grading
    notes: Notes
    outputs: np.ndarray


@dataclass(frozen=True)
class Scored:
    """The metrics of the predictions against the labels (read on the host only)."""

    grading: Grading
    notes: Notes
    scores: Scores


class Ended(Exception):
    """A stage ended the grading: the verdict, and the notes as they stood then."""

    def __init__(self, failed: Failed, notes: Notes) -> None:
        super().__init__(failed.message)
        self.failed, self.notes = failed, notes


def sandbox_info(backend: Backend) -> SandboxInfo:
    """What a result records about the sandbox it was graded in."""
    info = backend.describe()
    return SandboxInfo(
        backend=backend.name,
        isolated=backend.isolated,
        image=info.get("image"),
        image_id=info.get("image_id"),
    )
