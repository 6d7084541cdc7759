"""One grading, from a folder to its result document: the stages of ``harness.stages``
called in order (validate, count the weights, export, check, predict, score, document).

Every submission ends in exactly one result document; a failure is a result, not an
exception. The executors (``executors.py``) call ``grade_submission`` (or, distributed,
``settle`` then ``evaluate_submission``); the public API is ``api.py``.
"""

from __future__ import annotations

import dataclasses
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from .errors import UserError
from .guard import guarded_step, load_or_invalid
from .identity import Identity, batch_identity, check_unique
from .options import GradeOptions, Mode, OnStage
from .results import ResultDocument, read_result, result_path
from .sandbox import Backend, get_backend
from .sandbox.choose import choose_backend
from .settings import usable_cpus
from .stages import check, document, export, predict, score, validate, weights
from .stages.records import (
    Admitted,
    Counted,
    Ended,
    Exported,
    Predicted,
    sandbox_info,
)
from .stages.validate import Settled
from .store import ResultsStore
from .submission import Submission, is_declared_reference
from .tasks import TaskSpec, load_task
from .verdicts import Failed
from .warm import WarmSandboxes


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
    warm: WarmSandboxes | None = None,
) -> ResultDocument:
    """Grade one folder here; always returns a result document, recorded in the results
    store, or the stored one when an identical grading is there (unless ``force``).
    ``warm``: the batch's warm sandboxes (default: each job one more run).

    The team's folder is locked meanwhile, so concurrent runs never grade it twice."""
    t0 = time.perf_counter()
    store = store or ResultsStore(options.results_dir)
    sub = _cores_shared(load_guarded(path, options), options)
    with store.claim(sub.task_id, sub.team, mode):
        admitted = _admitted(
            sub,
            options,
            backend,
            mode,
            lambda: validate.admit(
                sub,
                options=options,
                backend=backend,
                mode=mode,
                store=store,
                on_stage=on_stage,
                warm=warm,
            ),
        )
        if isinstance(admitted, Settled):
            if admitted.new:
                save_result(admitted.doc, sub, options, store)
            return admitted.doc
        doc = _graded(admitted, sub, options, backend, mode)
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
    admitted = _admitted(
        sub,
        options,
        backend,
        mode,
        lambda: validate.admit(sub, options=options, backend=backend, mode=mode, store=store),
    )
    if isinstance(admitted, Settled):
        if admitted.new:
            save_result(admitted.doc, sub, options, store, executor=executor)
        return admitted.doc, admitted.cache_key
    admitted.grading.workspace.close()
    return None, admitted.grading.cache_key


def evaluate_submission(
    sub: Submission, *, options: GradeOptions, backend: Backend, mode: Mode
) -> ResultDocument:
    """A worker's half: prepare the inputs on this machine and grade; writes nothing."""
    t0 = time.perf_counter()
    sub = _cores_shared(sub, options)
    admitted = _admitted(
        sub,
        options,
        backend,
        mode,
        lambda: validate.admit(sub, options=options, backend=backend, mode=mode, store=None),
    )
    doc = (
        admitted.doc
        if isinstance(admitted, Settled)
        else _graded(admitted, sub, options, backend, mode)
    )
    doc.timing["total_s"] = round(time.perf_counter() - t0, 4)
    return doc


def relocated(doc: ResultDocument, sub: Submission) -> ResultDocument:
    """A document graded from a copy of the folder, pointed back at the folder itself."""
    doc.submission_path = str(sub.path)
    doc.reference = is_declared_reference(sub)
    return doc


def harness_failure(
    sub: Submission, message: str, *, options: GradeOptions, backend: Backend, mode: Mode
) -> ResultDocument:
    """A failed result for a grading the harness could not finish (re-graded next time)."""
    return document.build(
        sub,
        mode,
        sandbox_info(backend),
        document.no_notes(sub),
        status="failed",
        message=f"internal harness error: {message}",
        stage="harness",
    )


def run_stages(admitted: Admitted) -> ResultDocument:
    """The stages after ``validate``, in order; a stage that ends the grading is its result."""
    try:
        counted = weights.count_weights(admitted)
        exported = export.export(counted)
        if isinstance(exported, Counted):  # not exportable; the task allows the fallback
            predicted = predict.eager(exported, "the model could not be exported")
        else:
            predicted = _verified(exported)
        return document.graded(score.score(predicted))
    except Ended as end:
        return document.ended(admitted.grading, end.notes, end.failed)


def _verified(exported: Exported) -> Predicted:
    """Check and count the program, then phase B; the eager fallback where the task allows
    it for a failure there (never for a count over the limit, a timeout or a killed run)."""
    try:
        return predict.predict(check.check(exported))
    except Ended as end:
        why = _fallback_why(exported.counted.grading.task, end.failed)
        if why is None:
            raise
        counted = predict.unverified(exported.counted, exported.notes, end.failed)
        return predict.eager(counted, why)


def _fallback_why(task: TaskSpec, failed: Failed) -> str | None:
    if not task.integrity.allow_eager_fallback or failed.status != "failed":
        return None
    if failed.stage == "check":
        return "the host check refused the exported program"
    return "the exported program could not be run"


def _graded(
    admitted: Admitted, sub: Submission, options: GradeOptions, backend: Backend, mode: Mode
) -> ResultDocument:
    """The stages after ``validate``; a harness bug becomes a failed result."""
    try:
        return run_stages(admitted)
    except UserError:
        raise
    except Exception as exc:
        g = admitted.grading
        message = f"internal harness error: {type(exc).__name__}: {exc}"
        doc = document.of_grading(g, admitted.notes, "failed", message, stage="harness")
        doc.student_output = traceback.format_exc()[-4000:]
        return doc
    finally:
        admitted.grading.workspace.close()


def _admitted(
    sub: Submission,
    options: GradeOptions,
    backend: Backend,
    mode: Mode,
    admit: Callable[[], Admitted | Settled],
) -> Admitted | Settled:
    """The validate stage; a harness bug becomes a failed result and the batch goes on."""
    try:
        return admit()
    except UserError:
        raise
    except Exception as exc:
        message = f"{type(exc).__name__}: {exc}"
        doc = harness_failure(sub, message, options=options, backend=backend, mode=mode)
        doc.student_output = traceback.format_exc()[-4000:]
        return Settled(doc, new=True)


def _cores_shared(sub: Submission, options: GradeOptions) -> Submission:
    """The submission with its task's CPUs capped at its share of the usable cores, shared
    between ``options.jobs`` runs at once (one grading when it is not set): a task asking
    for more cores than this process may use gets what there is."""
    if sub.task is None:
        return sub
    return dataclasses.replace(sub, task=share_cores(sub.task, max(1, options.jobs)))


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


def share_cores(task: TaskSpec, jobs: int) -> TaskSpec:
    """With ``--jobs N`` the usable cores are split between the N runs at once: each gets
    at most cores/N threads, so runs do not oversubscribe the CPU (measured in
    benchmarks/: 2 jobs of 1 thread beat 2 jobs of 2 threads by 1.3x on 2 cores)."""
    share = max(1, usable_cpus() // jobs)
    if task.limits.cpus <= share:  # a fraction of a core stays as the task gives it
        return task
    return task.model_copy(update={"limits": task.limits.model_copy(update={"cpus": share})})


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
