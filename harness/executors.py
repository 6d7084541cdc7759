"""Where gradings run: ``local`` (this machine, one by one or in a thread pool) or ``ray``
(each submission a task on a Ray cluster). Either way the driver, the ``grade``
process, owns the results folder: it claims each team, looks in the store, and records
every document; a Ray worker only grades and sends its document back as JSON.

Ray is an optional extra (``pip install 'harness[ray]'``), imported only when asked for.
"""

from __future__ import annotations

import contextlib
import dataclasses
import tempfile
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

from . import locks
from .devices import use_gpu
from .errors import UserError
from .options import GradeOptions, Mode
from .pipeline import (
    OnStage,
    evaluate_submission,
    grade_submission,
    harness_failure,
    load_guarded,
    relocated,
    resolve_backend,
    save_result,
    settle,
)
from .preloads import batch_preloads
from .registry import Registry
from .results import ResultDocument
from .sandbox import Backend, get_backend
from .served_sandboxes import warm_sandboxes
from .settings import usable_cpus
from .store import Claim, ResultsStore
from .submission import Submission, content_hash
from .tasks import TaskSpec

OnDone = Callable[[ResultDocument], None]


class Executor(Protocol):
    name: str

    def run(
        self,
        folders: list[Path],
        *,
        options: GradeOptions,
        mode: Mode,
        on_done: OnDone | None,
        on_stage: OnStage | None = None,
    ) -> list[ResultDocument]:
        """Grade every folder; the documents in the folders' order, each recorded."""


executors: Registry[Callable[[], Executor]] = Registry("executor")


def get_executor(name: str) -> Executor:
    return executors.get(name)()


class LocalExecutor:
    """Gradings on this machine: one by one, or ``options.jobs`` at a time."""

    name = "local"

    def run(
        self,
        folders: list[Path],
        *,
        options: GradeOptions,
        mode: Mode,
        on_done: OnDone | None,
        on_stage: OnStage | None = None,
    ) -> list[ResultDocument]:
        backend = resolve_backend(options, mode)
        store = ResultsStore(options.results_dir)
        options = dataclasses.replace(options, jobs=jobs_for(options, len(folders)))

        preload = batch_preloads(folders)
        with warm_sandboxes(backend, options.jobs, preload) as warm:

            def one(folder: Path) -> ResultDocument:
                doc = grade_submission(
                    folder,
                    options=options,
                    backend=backend,
                    mode=mode,
                    store=store,
                    on_stage=on_stage,
                    warm=warm,
                )
                if on_done:
                    on_done(doc)
                return doc

            if options.jobs <= 1:
                return [one(f) for f in folders]
            # N gradings at once, each on cores/N threads: one's phase A (export, check)
            # overlaps another's phase B in the batch's warm predictor
            with ThreadPoolExecutor(max_workers=options.jobs) as pool:
                return list(pool.map(one, folders))


def jobs_for(options: GradeOptions, folders: int) -> int:
    """How many gradings run at once: ``--jobs``, or (0, the default) one per usable core."""
    cores = usable_cpus()  # read, and checked, for every batch: --jobs N too
    wanted = options.jobs if options.jobs > 0 else cores
    return max(1, min(wanted, folders))


class RayExecutor:
    """Each submission a Ray task asking for its task's CPUs, memory and (where the task
    may use one and the cluster has one) a GPU. ``options.address`` names the cluster;
    without it a local Ray instance is started for the batch."""

    name = "ray"

    def __init__(self) -> None:
        self.prepared: dict[str, int] = {}  # node id -> splits that node prepared itself

    def run(
        self,
        folders: list[Path],
        *,
        options: GradeOptions,
        mode: Mode,
        on_done: OnDone | None,
        on_stage: OnStage | None = None,
    ) -> list[ResultDocument]:
        ray = _import_ray()
        started = _connect(ray, options.address)
        try:
            batch = _RayBatch(ray, options, mode, on_done)
            docs = batch.run(folders)
            for node, count in batch.prepared.items():
                self.prepared[node] = self.prepared.get(node, 0) + count
            return docs
        finally:
            if started:
                ray.shutdown()


executors.add("local", LocalExecutor)
executors.add("ray", RayExecutor)


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise UserError(
            "--executor ray needs Ray, which is not installed here",
            "pip install 'harness[ray]' (on the driver and on every node of the cluster)",
        ) from None
    return ray


def _connect(ray: Any, address: str | None) -> bool:
    """Join the cluster at ``address`` (or start a local instance); True if started here."""
    if ray.is_initialized():
        return False
    try:
        if address:  # "HOST:6379", "ray://HOST:10001" or "auto" (this node's cluster)
            ray.init(address=address, log_to_driver=False)
        else:  # a fresh instance, never some other cluster found on this machine
            ray.init(address="local", include_dashboard=False, log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = f"at {address}" if address else "locally"
        raise UserError(
            f"cannot start or reach a Ray cluster {where}: {exc}",
            "start the head with `ray start --head` and pass --address HOST:6379, "
            "or leave out --address to start a local instance",
        ) from None
    return True


@dataclasses.dataclass
class _Pending:
    index: int
    sub: Submission
    claim: Claim
    cache_key: str


class _RayBatch:
    """The driver's loop: claim, settle, submit, gather, record; a bounded window in flight."""

    def __init__(self, ray: Any, options: GradeOptions, mode: Mode, on_done: OnDone | None):
        self.ray, self.options, self.mode, self.on_done = ray, options, mode, on_done
        self.backend = resolve_backend(options, mode)
        self.store = ResultsStore(options.results_dir)
        self.remote = ray.remote(_grade_on_worker)
        resources = ray.cluster_resources()
        self.cluster_gpus = float(resources.get("GPU", 0))
        self.window = min(512, max(8, 2 * int(resources.get("CPU", 1))))
        self.prepared: dict[str, int] = {}

    def run(self, folders: list[Path]) -> list[ResultDocument]:
        docs: dict[int, ResultDocument] = {}
        queue = deque(range(len(folders)))
        loaded: dict[int, Submission] = {}
        flight: dict[Any, _Pending] = {}
        try:
            while queue or flight:
                moved = self._submit(folders, queue, loaded, flight, docs)
                if flight:
                    ready, _ = self.ray.wait(list(flight), num_returns=1, timeout=1.0)
                    for ref in ready:
                        self._gather(ref, flight.pop(ref), docs)
                elif queue and not moved:
                    time.sleep(0.5)  # every team left is being graded by another process
        finally:
            for ref, pending in flight.items():
                with contextlib.suppress(Exception):
                    self.ray.cancel(ref)
                pending.claim.release()
        return [docs[i] for i in range(len(folders))]

    def _submit(
        self,
        folders: list[Path],
        queue: deque[int],
        loaded: dict[int, Submission],
        flight: dict[Any, _Pending],
        docs: dict[int, ResultDocument],
    ) -> bool:
        """One pass over the queue; a team held elsewhere stays queued. True if any moved."""
        moved = False
        held = {(p.sub.task_id, p.sub.team) for p in flight.values()}
        for _ in range(len(queue)):
            if len(flight) >= self.window:
                break
            i = queue.popleft()
            sub = loaded.get(i) or load_guarded(folders[i], self.options)
            loaded[i] = sub
            claim = None
            if (sub.task_id, sub.team) not in held:
                claim = self.store.try_claim(sub.task_id, sub.team, self.mode)
            if claim is None:
                queue.append(i)
                continue
            moved = True
            try:
                doc, key = settle(
                    sub,
                    options=self.options,
                    backend=self.backend,
                    mode=self.mode,
                    store=self.store,
                    executor="ray",
                )
            except BaseException:
                claim.release()
                raise
            if doc is not None:
                claim.release()
                self._done(i, doc, docs)
                continue
            flight[self._send(sub)] = _Pending(i, sub, claim, key)
            held.add((sub.task_id, sub.team))
        return moved

    def _send(self, sub: Submission) -> Any:
        task = sub.task
        assert task is not None
        gpu = self._gpu(task)
        files = {rel: (sub.path / rel).read_bytes() for rel in sub.files}
        options = dataclasses.replace(self.options, gpu=gpu, executor="local")
        return self.remote.options(
            num_cpus=task.limits.cpus,
            num_gpus=1 if gpu else 0,
            memory=task.limits.memory_mb * 2**20,
            max_retries=2,  # a lost node or worker: graded again elsewhere
            retry_exceptions=False,
        ).remote(sub, files, options, self.backend.name, self.mode)

    def _gpu(self, task: TaskSpec) -> bool:
        if not use_gpu(task.device, self.options.gpu, available=True):
            return False
        if self.options.gpu and not self.cluster_gpus:
            raise UserError(
                f"task {task.id}: a GPU was asked for but the Ray cluster has none",
                "add GPU nodes to the cluster, or leave the GPU to the task's `device`",
            )
        return self.cluster_gpus > 0

    def _gather(self, ref: Any, pending: _Pending, docs: dict[int, ResultDocument]) -> None:
        sub = pending.sub
        try:
            reply = self.ray.get(ref)
        except self.ray.exceptions.RayTaskError as exc:
            cause = exc.cause if isinstance(getattr(exc, "cause", None), Exception) else exc
            if isinstance(cause, UserError):
                raise UserError(
                    f"{sub.path}: on a Ray worker: {cause.message}", cause.hint
                ) from None
            doc = self._failure(sub, f"the Ray task failed: {type(cause).__name__}: {cause}")
        except self.ray.exceptions.RayError as exc:  # the worker or its node died, retries spent
            doc = self._failure(sub, f"the Ray worker was lost: {type(exc).__name__}: {exc}")
        else:
            doc = relocated(ResultDocument.model_validate_json(reply["document"]), sub)
            if doc.cache_key != pending.cache_key:
                raise UserError(
                    f"{sub.path}: the Ray node {reply['node'][:12]} graded it on other inputs "
                    "than this driver would (the cache keys differ)",
                    "give every node the same harness version, HARNESS_SECRET_SEED (or "
                    "config file) and dataset files at the same --data-root path",
                )
            if reply["prepared"]:
                self.prepared[reply["node"]] = self.prepared.get(reply["node"], 0) + 1
        try:
            save_result(doc, sub, self.options, self.store, executor="ray")
        finally:
            pending.claim.release()
        self._done(pending.index, doc, docs)

    def _failure(self, sub: Submission, message: str) -> ResultDocument:
        return harness_failure(
            sub, message, options=self.options, backend=self.backend, mode=self.mode
        )

    def _done(self, index: int, doc: ResultDocument, docs: dict[int, ResultDocument]) -> None:
        docs[index] = doc
        if self.on_done:
            self.on_done(doc)


def _grade_on_worker(
    sub: Submission, files: dict[str, bytes], options: GradeOptions, backend: str, mode: Mode
) -> dict[str, Any]:
    """Runs on a Ray worker: grade a copy of the folder against this node's prepared data."""
    import ray

    sandbox: Backend = get_backend(backend)
    assert sub.task is not None
    with tempfile.TemporaryDirectory(prefix="harness-ray-") as tmp:
        folder = Path(tmp) / sub.path.name
        for rel, data in files.items():
            (folder / rel).parent.mkdir(parents=True, exist_ok=True)
            (folder / rel).write_bytes(data)
        if content_hash(folder, list(files)) != sub.hash:
            raise RuntimeError(f"{sub.path}: the copy on the worker differs from the folder")
        here = dataclasses.replace(sub, path=folder)
        prepared = _prepare_once(sub.task, options, mode)
        doc = evaluate_submission(here, options=options, backend=sandbox, mode=mode)
    node = ray.get_runtime_context().get_node_id()
    return {"document": doc.to_json(), "node": node, "prepared": prepared}


def _prepare_once(task: TaskSpec, options: GradeOptions, mode: Mode) -> bool:
    """Prepare the split in this node's cache under a node-wide lock, so the node's workers
    prepare it once between them; True if this call prepared it."""
    from .data import prepare_split
    from .settings import settings

    split = task.splits.hidden if mode == "grade" else task.splits.check
    folder = settings().cache_dir / task.id
    with locks.held(settings().cache_dir / ".locks" / f"{task.id}-{split}.lock"):
        before = set(folder.glob(f"{split}-*")) if folder.is_dir() else set()
        prepare_split(task, split, data_root=options.data_root)
        return set(folder.glob(f"{split}-*")) != before
