"""The grading pipeline as named stages: validate the submission, count its weights,
prepare the inputs, run it in a sandbox, read its predictions, score, write the result.

Every submission ends in exactly one result document; a failure is a result, not an
exception. The executors (``executors.py``) call ``grade_submission`` (or, distributed,
``settle`` then ``evaluate_submission``); the public API is ``api.py``.
"""

from __future__ import annotations

import hashlib
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import numpy as np

from . import __version__, integrity
from .counting import over_message
from .counting import params_over_limit as over_limit_params
from .data import PreparedSplit, prepare_split
from .devices import gpu_present, use_gpu
from .errors import UserError
from .guard import guarded_step, load_or_invalid
from .hints import explain
from .identity import Identity, batch_identity, check_unique
from .jobs import eager_job_spec, job_with_files
from .options import GradeOptions, Mode, OnStage
from .params import count_from_header, to_params
from .program import ExportCount
from .ranking import hidden_split_of
from .redact import redact
from .results import Flag, Params, ResultDocument, SandboxInfo, read_result, result_path
from .safefs import NotPlain, plain_file
from .safetensors_header import read_header
from .sandbox import Backend, RunJob, SandboxPolicy, get_backend
from .sandbox.choose import choose_backend
from .scoring import score
from .staging import Workspace
from .store import ResultsStore
from .submission import Submission, is_declared_reference
from .tasks import TaskSpec, load_task
from .verdicts import Failed as _Failed
from .verdicts import interpret_run
from .verified import VerifiedStages


def identity_of(options: GradeOptions) -> Identity:
    """Who and what the batch grades, from the grader's options (never the manifests)."""
    return batch_identity(options.task, options.roster)


def check_batch(folders: list[Path], options: GradeOptions) -> None:
    """Operator mistakes that stop a batch before it starts: an unknown pinned task, a
    roster that does not read, two folders that would write one team's result."""
    if options.task is not None:
        load_task(options.task, options.tasks_dir)
    check_unique(folders, identity_of(options))


def load_guarded(path: Path, options: GradeOptions) -> Submission:
    """The submission at ``path`` as the grader identifies it; never raises."""
    return load_or_invalid(path, tasks_dir=options.tasks_dir, identity=identity_of(options))


def results_root(options: GradeOptions, mode: Mode) -> Path:
    return options.results_dir if mode == "grade" else options.results_dir / "check"


def resolve_backend(options: GradeOptions, mode: Mode) -> Backend:
    return get_backend(options.sandbox) if options.sandbox else choose_backend(mode)


def grade_submission(
    path: Path,
    *,
    options: GradeOptions,
    backend: Backend,
    mode: Mode = "grade",
    store: ResultsStore | None = None,
    on_stage: OnStage | None = None,
) -> ResultDocument:
    """Grade one folder here; always returns a result document, recorded in the results
    store, or the stored one when an identical grading is there (unless ``force``).

    The team's folder is locked meanwhile, so concurrent runs never grade it twice."""
    t0 = time.perf_counter()
    store = store or ResultsStore(options.results_dir)
    sub = load_guarded(path, options)
    with store.claim(sub.task_id, sub.team, mode):
        grading = _Grading(sub, options, backend, mode)
        grading.store = store
        grading.on_stage = on_stage
        doc = _guarded(grading, grading.run)
        assert doc is not None
        if not grading.cached:
            doc.timing["total_s"] = round(time.perf_counter() - t0, 4)
            save_result(doc, sub, options, store)
    return doc


def settle(
    sub: Submission,
    *,
    options: GradeOptions,
    backend: Backend,
    mode: Mode,
    store: ResultsStore,
    executor: str = "local",
) -> tuple[ResultDocument | None, str]:
    """A distributed driver's half (the team claimed): validate, prepare the inputs and
    look in the store. Returns a document when that settles the submission (invalid, or
    graded before; recorded if new), else None, and the cache key its grading must carry."""
    grading = _Grading(sub, options, backend, mode)
    grading.store = store
    doc = _guarded(grading, grading.prepare)
    if doc is not None and not grading.cached:
        save_result(doc, sub, options, store, executor=executor)
    return doc, grading.cache_key


def evaluate_submission(
    sub: Submission, *, options: GradeOptions, backend: Backend, mode: Mode
) -> ResultDocument:
    """A worker's half: prepare the inputs on this machine and grade; writes nothing."""
    t0 = time.perf_counter()
    grading = _Grading(sub, options, backend, mode)
    doc = _guarded(grading, grading.run)
    assert doc is not None
    doc.timing["total_s"] = round(time.perf_counter() - t0, 4)
    return doc


def relocated(doc: ResultDocument, sub: Submission) -> ResultDocument:
    """A document graded from a copy of the folder, pointed back at the folder itself."""
    doc.submission_path = str(sub.path)
    doc.reference = _is_reference(sub)
    return doc


def harness_failure(
    sub: Submission, message: str, *, options: GradeOptions, backend: Backend, mode: Mode
) -> ResultDocument:
    """A failed result for a grading the harness could not finish (re-graded next time)."""
    grading = _Grading(sub, options, backend, mode)
    grading.workspace.close()
    return grading.document("failed", f"internal harness error: {message}", stage="harness")


def _guarded(grading: _Grading, step: Callable[[], ResultDocument | None]) -> ResultDocument | None:
    """Run a stage; a harness bug becomes a failed result and the batch goes on."""
    try:
        doc = step()
    except UserError:
        raise
    except Exception as exc:
        doc = grading.document(
            "failed", f"internal harness error: {type(exc).__name__}: {exc}", stage="harness"
        )
        doc.student_output = traceback.format_exc()[-4000:]
    finally:
        grading.workspace.close()
    return doc


def save_result(
    doc: ResultDocument,
    sub: Submission,
    options: GradeOptions,
    store: ResultsStore,
    *,
    executor: str = "local",
) -> None:
    """Write the grading's report, then record it (document, then row). A report that
    cannot be written is a note in the document, never an exception; so is a store that
    cannot record it (the batch goes on, the document is still returned)."""
    if options.reports and sub.task is not None:
        guarded_step(doc, "report", lambda: _report(doc, sub, options, store))
    guarded_step(doc, "store", lambda: store.record(doc, executor=executor))


def _report(
    doc: ResultDocument, sub: Submission, options: GradeOptions, store: ResultsStore
) -> None:
    from .report import write_submission_report

    assert sub.task is not None
    folder = store.team_folder(doc.task, doc.team, doc.mode)
    refs = [r for r in reference_documents(sub.task, options.results_dir) if r.team != doc.team]
    write_submission_report(doc, sub.task, folder, references=refs, instructor=False)


class _Grading(VerifiedStages):
    """One submission's pass through the stages."""

    store: ResultsStore | None = None  # where ``_stored`` looks; None: always grade
    on_stage: OnStage | None = None  # told of each stage entered (progress display)

    def __init__(self, sub: Submission, options: GradeOptions, backend: Backend, mode: Mode):
        if sub.task is not None and options.jobs > 1:
            sub.task = share_cores(sub.task, options.jobs)
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
        settled = self.prepare()
        return settled if settled is not None else self.evaluate()

    def prepare(self) -> ResultDocument | None:
        """Validate, prepare the inputs, look for a stored grading: a document if that ends it."""
        sub = self.sub
        self._stage("validate")
        if sub.violations or sub.task is None:
            return self._invalid()
        self.split = self._inputs(sub.task)
        stored = self._stored(sub.task)
        if stored is None and self.mode == "grade" and self.store is not None:
            rows = self.store.history(sub.team, sub.task.id)
            try:
                integrity.check_quota(sub.task, sub.team, rows)
            except integrity.QuotaExceeded as exc:  # not graded: the last result stands
                last = read_result(result_path(self.options.results_dir, sub.task.id, sub.team))
                if last is None:
                    return self._over_quota(exc)
                self.cached = True
                note = Flag(
                    code="quota",
                    audience="student",
                    message=f"{exc.message}: not graded again; this is your last result",
                )
                return last.model_copy(update={"flags": [*last.flags, note]})
        return stored

    def evaluate(self) -> ResultDocument:
        """Count, run in the sandbox and score (after ``prepare``)."""
        task = self.sub.task
        assert task is not None
        try:
            weights = self._weights(task)
            outputs = self._verified(task, weights)
        except _Failed as f:
            error = explain(f.error, f.stage, self.sub)
            doc = self.document(f.status, f.message, stage=f.stage)
            doc.student_output = f.output
            doc.error = error
            return doc
        doc = self._scored(task, outputs)
        doc.details["integrity"] = self._evidence
        return doc

    def _over_quota(self, exc: UserError) -> ResultDocument:
        """Over the daily quota with no earlier result: a document that says so (never
        reused as a grading, never counted against the quota), and the batch goes on."""
        self.cache_key = ""
        self.sub.broke("quota.daily", f"{exc.message}: not graded ({exc.hint})")
        doc = self._invalid()
        doc.stage = "quota"
        return doc

    def _invalid(self) -> ResultDocument:
        if self.sub.task is not None:  # the task is known: its limit is too
            self.params = Params(limit=self.sub.task.parameter_limit)
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
        store = self.store
        if self.options.force or store is None:
            return None
        old = store.lookup(self.cache_key)
        if old is None and store.recover(task.id, self.sub.team, self.mode):
            old = store.lookup(self.cache_key)  # written just before a crash, now recorded
        if old is None or old.stage == "harness":
            return None
        store.publish(old)  # the team's result.json shows it again
        self.cached = True
        return old

    def _weights(self, task: TaskSpec) -> tuple[Path, str]:
        """The staged weights as safetensors (converted in a sandbox when .pt), counted."""
        assert self.sub.manifest is not None
        self._stage("count")
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
        self._evidence: dict[str, object] = integrity.weights_evidence(header)
        return path, name

    def _convert(self, task: TaskSpec, name: str) -> Path:
        """Convert .pt weights in the sandbox (weights-only load), never on the host."""
        sub_dir = self.workspace.stage("convert-sub", self.sub.path, [name])
        job = self.workspace.job("convert-job", {"phase": "convert", "weights": name})
        out = self.workspace.output("convert-out")
        outcome = self.backend.run(self._job(task, sub_dir, job, out, code=True))  # weights only
        self.timing["convert_s"] = round(outcome.wall_seconds, 4)
        verdict = interpret_run(outcome, "convert")
        if verdict is not None:
            raise verdict.failed()
        try:
            return plain_file(out, out / "weights.safetensors")
        except NotPlain as exc:
            raise _Failed("failed", f"the converted weights: {exc}", "weights") from None

    def _job(
        self,
        task: TaskSpec,
        sub_dir: Path,
        job_dir: Path,
        out: Path,
        *,
        code: bool,
        inputs: Path | None = None,  # default: the split's inputs
        gpu: bool = True,
    ) -> RunJob:
        assert self.split is not None
        policy = SandboxPolicy.from_limits(task.limits, gpu=gpu and self._gpu(task))
        return RunJob(
            submission_dir=sub_dir,
            inputs_dir=inputs or self.split.inputs_dir,
            job_dir=job_dir,
            output_dir=out,
            policy=policy,
            mount_submission=code,
            label=f"{self.sub.team}",
        )

    def _gpu(self, task: TaskSpec) -> bool:
        return use_gpu(task.device, self.options.gpu, gpu_present())

    def _predict(self, task: TaskSpec, weights: tuple[Path, str]) -> np.ndarray:
        """The eager fallback (tasks that allow it): the submission's code predicts the test
        inputs itself; the count is unverified."""
        assert self.sub.manifest is not None and self.split is not None
        self._stage("predict")
        path, declared = weights
        files = [f for f in self.sub.files if f != declared]
        name = declared if path.parent == self.sub.path else "weights.safetensors"
        sub_dir = self.workspace.stage("eager-sub", self.sub.path, files, extra={name: path})
        probe, job_files = self._probe_job(task)
        spec = eager_job_spec(task, self.sub.manifest, name, probe)
        job = job_with_files(self.workspace, "eager-job", spec, job_files)
        out = self.workspace.output("eager-out")
        job_run = self._job(task, sub_dir, job, out, code=True, inputs=self._probe_inputs())
        outcome = self.backend.run(job_run)
        self.timing["sandbox_s"] = round(outcome.wall_seconds, 4)
        verdict = interpret_run(outcome, "eager", show_text=self.mode != "grade")
        if verdict is not None:
            raise verdict.failed()
        run = self._read_run(outcome, task, probe)
        self.timing.update(run.timing)
        self.params = run.params(self.params, task)
        self.flags.extend(run.flags(self.params, task, self._fallback_why))
        if over_limit_params(self.params):
            raise _Failed("over_limit", self._over_message(task), "count")
        self._probe(task, run)
        return run.outputs

    def _scored(self, task: TaskSpec, outputs: np.ndarray) -> ResultDocument:
        assert self.split is not None
        self._stage("score")
        labels = self.split.labels()
        t = time.perf_counter()
        scores = score(task, labels, outputs, views=self.mode == "grade")
        self.timing["scoring_s"] = round(time.perf_counter() - t, 4)
        doc = self.document("graded", "", stage=None)
        doc.metrics, doc.intervals, doc.views = scores.metrics, scores.intervals, scores.views
        doc.details.update(scores.details)
        return doc

    # -- helpers ------------------------------------------------------------------
    def _stage(self, name: str) -> None:
        if self.on_stage is not None:
            self.on_stage(self.sub.task_id, self.sub.team, name)

    def _over_message(self, task: TaskSpec, count: ExportCount | None = None) -> str:
        return over_message(self.params, task, count, self._count.counted)

    def document(self, status: str, message: str, *, stage: str | None) -> ResultDocument:
        sub = self.sub
        return ResultDocument(
            task=sub.task_id,
            team=sub.team,
            status=status,
            members=list(sub.members),
            mode=self.mode,
            split=self.split.split if self.split else "",
            message=redact(message),
            stage=stage,
            violations=list(sub.violations),
            params=self.params,
            training=dict(sub.manifest.training) if sub.manifest else {},
            history=sub.history,
            flags=self._all_flags(),
            timing=dict(self.timing),
            sandbox=self.sandbox,
            hidden_split=hidden_split_of(self.split, self.mode),
            submission_path=str(sub.path),
            submission_hash=sub.hash,
            task_spec_hash=sub.task.spec_hash if sub.task else "",
            harness_version=__version__,
            cache_key=self.cache_key,
            reference=_is_reference(sub),
            details=_write_up(sub),
        )

    def _all_flags(self) -> list[Flag]:
        flags = [f.model_copy(update={"message": redact(f.message)}) for f in self.flags]
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


def share_cores(task: TaskSpec, jobs: int) -> TaskSpec:
    """With ``--jobs N`` the machine's cores are split between the N runs at once: each
    gets at most cores/N threads, so runs do not oversubscribe the CPU (measured in
    benchmarks/: 2 jobs of 1 thread beat 2 jobs of 2 threads by 1.3x on 2 cores)."""
    import os

    cpus = max(1, min(int(task.limits.cpus), (os.cpu_count() or 1) // jobs))
    if cpus == task.limits.cpus:
        return task
    return task.model_copy(update={"limits": task.limits.model_copy(update={"cpus": cpus})})


def reference_documents(task: TaskSpec, results_dir: Path) -> list[ResultDocument]:
    """The stored gradings of the task's reference solutions (reads only their files)."""
    import tomllib

    docs = []
    for ref in task.references:
        manifest = task.reference_folder(ref) / "submission.toml"
        try:
            team = tomllib.loads(manifest.read_text()).get("team") or manifest.parent.name
        except (OSError, ValueError):
            continue
        doc = read_result(result_path(results_dir, task.id, str(team)))
        if doc is not None and doc.reference:
            docs.append(doc)
    return docs


def _write_up(sub: Submission) -> dict[str, str]:
    """The student's REPORT.md (shown, escaped, in the report), capped."""
    if "REPORT.md" not in sub.files:
        return {}
    text = (sub.path / "REPORT.md").read_text(encoding="utf-8", errors="replace")
    return {"write_up": text[:20_000]}


def _is_reference(sub: Submission) -> bool:
    return is_declared_reference(sub)


def _describe(backend: Backend) -> dict[str, str | None]:
    info = backend.describe()
    return {"image": info.get("image"), "image_id": info.get("image_id")}
