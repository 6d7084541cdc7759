"""The grading pipeline as named stages: validate the submission, count its weights,
prepare the inputs, run it in a sandbox, read its predictions, score, write the result.

Every submission ends in exactly one result document; a failure is a result, not an
exception. ``grade`` and ``check`` are the keyword-only API the CLI calls.
"""

from __future__ import annotations

import hashlib
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from . import __version__
from .data import PreparedSplit, prepare_split
from .eager import eager_job_spec
from .errors import UserError
from .interpret import interpret_run, read_run
from .params import count_from_header, over_limit, to_params
from .results import (
    Flag,
    Params,
    ResultDocument,
    SandboxInfo,
    read_result,
    result_path,
    write_result,
)
from .safetensors_header import read_header
from .sandbox import Backend, RunJob, SandboxPolicy, get_backend
from .sandbox.choose import choose_backend
from .scoring import score
from .staging import Workspace
from .submission import Submission, find_submissions, load_submission
from .tasks import TaskSpec

Mode = Literal["grade", "check"]


@dataclass(frozen=True)
class GradeOptions:
    sandbox: str | None = None  # None: docker when it answers, else bwrap, else refuse
    data_root: Path | None = None
    results_dir: Path = Path("results")
    tasks_dir: Path | None = None
    force: bool = False  # re-grade even when an identical grading is stored
    jobs: int = 1
    reports: bool = True
    gpu: bool | None = None  # None: use a GPU when the task allows and one is present


class _Failed(Exception):
    """Ends a grading early with the given status and message (already a result)."""

    def __init__(self, status: str, message: str, stage: str, output: str = "") -> None:
        super().__init__(message)
        self.status, self.message, self.stage, self.output = status, message, stage, output


def grade(
    paths: list[Path],
    *,
    options: GradeOptions = GradeOptions(),
    on_done: Callable[[ResultDocument], None] | None = None,
) -> list[ResultDocument]:
    """Grade every submission under ``paths`` on its task's hidden split."""
    return _batch(paths, options, "grade", on_done)


def check(
    paths: list[Path],
    *,
    options: GradeOptions = GradeOptions(),
    on_done: Callable[[ResultDocument], None] | None = None,
) -> list[ResultDocument]:
    """The same pipeline on each task's public validation split (for students)."""
    return _batch(paths, options, "check", on_done)


def _batch(
    paths: list[Path],
    options: GradeOptions,
    mode: Mode,
    on_done: Callable[[ResultDocument], None] | None,
) -> list[ResultDocument]:
    folders = find_submissions(paths)
    backend = get_backend(options.sandbox) if options.sandbox else choose_backend(mode)

    def one(folder: Path) -> ResultDocument:
        doc = grade_submission(folder, options=options, backend=backend, mode=mode)
        if on_done:
            on_done(doc)
        return doc

    if options.jobs <= 1 or len(folders) <= 1:
        return [one(f) for f in folders]
    with ThreadPoolExecutor(max_workers=options.jobs) as pool:
        return list(pool.map(one, folders))


def results_root(options: GradeOptions, mode: Mode) -> Path:
    return options.results_dir if mode == "grade" else options.results_dir / "check"


def grade_submission(
    path: Path, *, options: GradeOptions, backend: Backend, mode: Mode = "grade"
) -> ResultDocument:
    """Grade one folder; always returns (and writes) a result document."""
    t0 = time.perf_counter()
    sub = load_submission(path, tasks_dir=options.tasks_dir)
    grading = _Grading(sub, options, backend, mode)
    try:
        doc = grading.run()
    except UserError:
        raise
    except Exception as exc:  # a harness bug: still a result, and the batch goes on
        doc = grading.document(
            "failed", f"internal harness error: {type(exc).__name__}: {exc}", stage="harness"
        )
        doc.student_output = traceback.format_exc()[-4000:]
    finally:
        grading.workspace.close()
    if not grading.cached:
        doc.timing["total_s"] = round(time.perf_counter() - t0, 4)
        write_result(results_root(options, mode), doc)
        _write_extras(doc, grading, options, mode)
    return doc


def _write_extras(doc: ResultDocument, g: _Grading, options: GradeOptions, mode: Mode) -> None:
    folder = result_path(results_root(options, mode), doc.task, doc.team).parent
    history = (
        folder / "history" / f"{doc.graded_at.replace(':', '')}-{doc.submission_hash[:8]}.json"
    )
    history.parent.mkdir(exist_ok=True)
    history.write_text(doc.to_json())
    if options.reports and g.sub.task is not None:
        from .report import write_submission_report

        write_submission_report(doc, g.sub.task, folder, instructor=False)


class _Grading:
    """One submission's pass through the stages."""

    def __init__(self, sub: Submission, options: GradeOptions, backend: Backend, mode: Mode):
        self.sub, self.options, self.backend, self.mode = sub, options, backend, mode
        self.workspace = Workspace.create()
        self.cached = False
        self.params = Params()
        self.flags: list[Flag] = []
        self.timing: dict[str, float] = {}
        self.sandbox = SandboxInfo(
            backend=backend.name, isolated=backend.isolated, **_describe(backend)
        )
        self.split: PreparedSplit | None = None
        self.cache_key = ""

    # -- stages -----------------------------------------------------------------
    def run(self) -> ResultDocument:
        sub = self.sub
        if sub.violations or sub.task is None:
            return self._invalid()
        task = sub.task
        self.split = self._inputs(task)
        stored = self._stored(task)
        if stored is not None:
            return stored
        try:
            weights = self._weights(task)
            if over_limit(self._count, task.parameter_limit):
                return self.document("over_limit", self._over_message(task), stage="count")
            outputs = self._predict(task, weights)
        except _Failed as f:
            doc = self.document(f.status, f.message, stage=f.stage)
            doc.student_output = f.output
            return doc
        return self._scored(task, outputs)

    def _invalid(self) -> ResultDocument:
        rules = sorted({v.rule for v in self.sub.violations})
        first = self.sub.violations[0].message
        more = f" (and {len(self.sub.violations) - 1} more)" if len(self.sub.violations) > 1 else ""
        doc = self.document("invalid", f"{first}{more}", stage="validate")
        doc.details["rules"] = rules
        return doc

    def _inputs(self, task: TaskSpec) -> PreparedSplit:
        split = task.splits.hidden if self.mode == "grade" else task.splits.check
        prepared = prepare_split(task, split, data_root=self.options.data_root)
        if prepared.public_fallback_seed and self.mode == "grade":
            self.flags.append(
                Flag(
                    code="public_seed",
                    message=(
                        "the hidden split was generated with the public fallback seed: students "
                        "can regenerate it; set HARNESS_SECRET_SEED for real grading"
                    ),
                )
            )
        return prepared

    def _stored(self, task: TaskSpec) -> ResultDocument | None:
        assert self.split is not None
        parts = [
            self.sub.hash,
            task.spec_hash,
            __version__,
            self.split.key,
            self.mode,
            self.backend.name,
        ]
        self.cache_key = hashlib.sha256("|".join(parts).encode()).hexdigest()
        if self.options.force:
            return None
        old = read_result(
            result_path(results_root(self.options, self.mode), task.id, self.sub.team)
        )
        if old is not None and old.cache_key == self.cache_key and old.stage != "harness":
            self.cached = True
            return old
        return None

    def _weights(self, task: TaskSpec) -> tuple[Path, str]:
        """The staged weights as safetensors (converted in a sandbox when .pt), counted."""
        assert self.sub.manifest is not None
        name = self.sub.manifest.model.weights
        converted = not name.endswith(".safetensors")
        path = self._convert(task, name) if converted else self.sub.path / name
        try:
            header = read_header(path)
        except UserError as exc:
            raise _Failed(
                "failed", f"the weights file is not valid safetensors: {exc.message}", "weights"
            ) from None
        self._count = count_from_header(header)
        self.params = to_params(self._count, task.parameter_limit)
        return path, name

    def _convert(self, task: TaskSpec, name: str) -> Path:
        """Convert .pt weights in the sandbox (weights-only load), never on the host."""
        sub_dir = self.workspace.stage("convert-sub", self.sub.path, [name])
        job = self.workspace.job("convert-job", {"phase": "convert", "weights": name})
        out = self.workspace.output("convert-out")
        outcome = self.backend.run(self._job(task, sub_dir, job, out, code=False))
        self.timing["convert_s"] = round(outcome.wall_seconds, 4)
        verdict = interpret_run(outcome, "convert")
        if verdict is not None:
            raise _Failed(verdict.status, verdict.message, verdict.stage, verdict.output)
        return out / "weights.safetensors"

    def _job(
        self, task: TaskSpec, sub_dir: Path, job_dir: Path, out: Path, *, code: bool
    ) -> RunJob:
        assert self.split is not None
        policy = SandboxPolicy.from_limits(task.limits, gpu=self._gpu(task))
        return RunJob(
            submission_dir=sub_dir,
            inputs_dir=self.split.inputs_dir,
            job_dir=job_dir,
            output_dir=out,
            policy=policy,
            mount_submission=code,
            label=f"{self.sub.team}",
        )

    def _gpu(self, task: TaskSpec) -> bool:
        if task.device == "cpu" or self.options.gpu is False:
            return False
        from .sandbox.choose import gpu_present

        return gpu_present()

    def _predict(self, task: TaskSpec, weights: tuple[Path, str]) -> np.ndarray:
        assert self.sub.manifest is not None and self.split is not None
        path, declared = weights
        files = [f for f in self.sub.files if f != declared]
        name = declared if path.parent == self.sub.path else "weights.safetensors"
        sub_dir = self.workspace.stage("eager-sub", self.sub.path, files, extra={name: path})
        spec = eager_job_spec(task, self.sub.manifest, name)
        job = self.workspace.job("eager-job", spec)
        out = self.workspace.output("eager-out")
        outcome = self.backend.run(self._job(task, sub_dir, job, out, code=True))
        self.timing["sandbox_s"] = round(outcome.wall_seconds, 4)
        verdict = interpret_run(outcome, "eager")
        if verdict is not None:
            raise _Failed(verdict.status, verdict.message, verdict.stage, verdict.output)
        run = read_run(outcome, task, self.split.count)
        self.timing.update(run.timing)
        self.params = run.params(self.params, task)
        self.flags.extend(run.flags(self.params, task))
        if over_limit_params(self.params):
            raise _Failed("over_limit", self._over_message(task), "count")
        return run.outputs

    def _scored(self, task: TaskSpec, outputs: np.ndarray) -> ResultDocument:
        assert self.split is not None
        labels = self.split.labels()
        t = time.perf_counter()
        scores = score(task, labels, outputs, views=self.mode == "grade")
        self.timing["scoring_s"] = round(time.perf_counter() - t, 4)
        doc = self.document("graded", "", stage=None)
        doc.metrics, doc.intervals, doc.views = scores.metrics, scores.intervals, scores.views
        doc.details.update(scores.details)
        return doc

    # -- helpers ------------------------------------------------------------------
    def _over_message(self, task: TaskSpec) -> str:
        return (
            f"{self.params.counted:,} parameters counted; task {task.id} allows at most "
            f"{task.parameter_limit:,} (see the per-layer table)"
        )

    def document(self, status: str, message: str, *, stage: str | None) -> ResultDocument:
        sub = self.sub
        return ResultDocument(
            task=sub.task_id,
            team=sub.team,
            status=status,  # type: ignore[arg-type]
            members=list(sub.manifest.members) if sub.manifest else [],
            mode=self.mode,
            split=self.split.split if self.split else "",
            message=message,
            stage=stage,
            violations=list(sub.violations),
            params=self.params,
            training=dict(sub.manifest.training) if sub.manifest else {},
            history=sub.history,
            flags=self._all_flags(),
            timing=dict(self.timing),
            sandbox=self.sandbox,
            submission_path=str(sub.path),
            submission_hash=sub.hash,
            task_spec_hash=sub.task.spec_hash if sub.task else "",
            harness_version=__version__,
            cache_key=self.cache_key,
        )

    def _all_flags(self) -> list[Flag]:
        flags = list(self.flags)
        if self.sub.ignored:
            flags.append(
                Flag(
                    code="ignored_files",
                    audience="student",
                    message=(f"not read (undeclared): {', '.join(self.sub.ignored[:10])}"),
                )
            )
        if not self.backend.isolated:
            flags.append(
                Flag(
                    code="not_isolated",
                    audience="student",
                    message=(
                        "graded with --sandbox process: the submission's code ran without isolation"
                    ),
                )
            )
        return flags


def over_limit_params(params: Params) -> bool:
    return params.counted is not None and params.limit is not None and params.counted > params.limit


def _describe(backend: Backend) -> dict[str, str | None]:
    info = backend.describe()
    return {"image": info.get("image"), "image_id": info.get("image_id")}
