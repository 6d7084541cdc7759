"""A batch's warm sandboxes (``harness/warm.py``): how many runners and predictors a policy
gets, and that each serves one job at a time. The runners here only count and wait (the zygote's own
promises are in ``test_sandbox_conformance.py``, the predictor's in ``test_predictor.py``)."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import pytest

from harness.sandbox import RunJob, RunOutcome, SandboxPolicy
from harness.warm import WarmSandboxes

POLICY = SandboxPolicy(
    wall_seconds=60,
    memory_bytes=2**30,
    pids=64,
    cpus=1,
    tmpfs_bytes=2**24,
    output_bytes=2**24,
    log_bytes=2**14,
)


class Runner:
    def __init__(self, backend: Backend, policy: SandboxPolicy) -> None:
        self.backend, self.policy = backend, policy
        self.busy = False
        self.closed = False
        self.started = False

    def run(self, job: RunJob) -> RunOutcome:
        assert not self.busy, "a runner was given two runs at once"
        assert job.policy == self.policy
        self.busy = True
        with self.backend.lock:
            self.backend.running += 1
            self.backend.peak = max(self.backend.peak, self.backend.running)
        time.sleep(0.2)
        with self.backend.lock:
            self.backend.running -= 1
        self.busy = False
        return RunOutcome("ok", 0, 0.05, "", job.output_dir, info={"runner": str(id(self))})

    predict = run

    def start(self) -> None:
        self.started = True
        self.started_at = time.monotonic()

    def ready(self, seconds: float) -> bool:
        time.sleep(0.1)  # its imports
        self.ready_at = time.monotonic()
        return True

    def close(self) -> None:
        self.closed = True


class Backend:
    """Counts the runners it opens and the runs going on at once."""

    name = "counting"
    isolated = True
    kind: type[Runner] = Runner  # what it opens

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.opened: list[Runner] = []
        self.running = 0
        self.peak = 0

    def runner(self, policy: SandboxPolicy, preload: tuple[str, ...] = ()) -> Runner:
        with self.lock:
            self.opened.append(self.kind(self, policy))
            return self.opened[-1]

    def predictor(self, policy: SandboxPolicy) -> Runner:
        return self.runner(policy)


def _job(policy: SandboxPolicy) -> RunJob:
    here = Path("/nonexistent")
    return RunJob(here, here, here, here, policy)


def _runs(warm: WarmSandboxes, jobs: list[RunJob]) -> list[RunOutcome]:
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        return list(pool.map(warm.run, jobs))


def test_one_runner_serves_every_run_of_a_policy_one_at_a_time() -> None:
    backend = Backend()
    with WarmSandboxes(backend, jobs=1) as warm:  # type: ignore[arg-type]
        outcomes = _runs(warm, [_job(POLICY)] * 8)
    assert len(backend.opened) == 1 and backend.peak == 1
    assert {o.info["runner"] for o in outcomes} == {str(id(backend.opened[0]))}
    assert backend.opened[0].closed


def test_up_to_n_runners_per_policy_and_their_own_for_another_policy() -> None:
    backend = Backend()
    other = replace(POLICY, memory_bytes=2**31)
    with WarmSandboxes(backend, jobs=12) as warm:  # type: ignore[arg-type]
        _runs(warm, [_job(POLICY)] * 12 + [_job(other)] * 2)
    per_policy = {p: sum(r.policy == p for r in backend.opened) for p in (POLICY, other)}
    assert per_policy[POLICY] == 3
    assert 1 <= per_policy[other] <= 2
    assert 3 <= backend.peak <= 5
    assert all(r.closed for r in backend.opened)


def test_a_cpu_policy_gets_a_predictor_per_grading_and_a_gpu_policy_one() -> None:
    backend = Backend()
    gpu = replace(POLICY, gpu=True)
    with WarmSandboxes(backend, jobs=2) as warm:  # type: ignore[arg-type]
        warm.prewarm(POLICY)
        warm.prewarm(POLICY)  # opens nothing more
        time.sleep(0.4)  # the two imports, one after the other
        assert len(backend.opened) == 2 and all(r.started for r in backend.opened)
        with ThreadPoolExecutor(max_workers=6) as pool:
            list(pool.map(warm.predict, [_job(POLICY)] * 6 + [_job(gpu)] * 6))
    per_policy = {p: sum(r.policy == p for r in backend.opened) for p in (POLICY, gpu)}
    assert per_policy == {POLICY: 2, gpu: 1}


def test_predictors_start_one_after_another_and_the_first_ready_takes_the_first_job() -> None:
    backend = Backend()
    with WarmSandboxes(backend, jobs=3) as warm:  # type: ignore[arg-type]
        warm.prewarm(POLICY)
        time.sleep(0.05)
        first, second, third = backend.opened
        assert first.started and not second.started  # the second waits for the first
        time.sleep(0.5)
        assert all(p.started for p in backend.opened)
        assert first.ready_at <= second.started_at and second.ready_at <= third.started_at
        assert warm.predict(_job(POLICY)).info["runner"] == str(id(first))


class ParallelRunner(Runner):
    parallel = True  # each job its own run, as PerRun's

    def run(self, job: RunJob) -> RunOutcome:
        self.busy = False  # runs at once are its point
        return super().run(job)

    predict = run


class ParallelBackend(Backend):
    kind = ParallelRunner


def test_a_parallel_runner_serves_every_grading_at_once() -> None:
    backend = ParallelBackend()
    with WarmSandboxes(backend, jobs=4) as warm:  # type: ignore[arg-type]
        outcomes = _runs(warm, [_job(POLICY)] * 4)
    assert len(backend.opened) == 1 and backend.peak == 4  # queued behind none
    assert {o.info["runner"] for o in outcomes} == {str(id(backend.opened[0]))}
    assert backend.opened[0].closed


def test_the_process_backends_runs_are_parallel_and_a_zygote_is_not() -> None:
    from harness.sandbox.bwrap import BwrapBackend
    from harness.sandbox.process import ProcessBackend

    process = ProcessBackend()
    assert process.runner(POLICY).parallel and process.predictor(POLICY).parallel  # type: ignore[attr-defined]
    assert not getattr(BwrapBackend().runner(POLICY), "parallel", False)


class SlowToClose(Runner):
    def close(self) -> None:
        self.closing_at = time.monotonic()
        time.sleep(0.3)  # a container's kill and removal
        if self.policy.memory_bytes == 2**31:
            raise RuntimeError("the engine did not answer")
        super().close()


class SlowBackend(Backend):
    kind = SlowToClose


def test_a_batchs_sandboxes_are_closed_at_once_and_a_failed_close_is_still_raised() -> None:
    """Closing the batch's runners and predictors together: four that each take 0.3 s
    are closed in about 0.3 s, not 1.2 s; one whose close fails still fails the close,
    once every other sandbox was closed."""
    backend = SlowBackend()
    warm = WarmSandboxes(backend, jobs=4)  # type: ignore[arg-type]
    warm.prewarm(POLICY)
    _runs(warm, [_job(POLICY)])
    assert len(backend.opened) == 5  # 4 predictors, 1 runner
    t0 = time.monotonic()
    warm.close()
    assert time.monotonic() - t0 < 0.9
    assert all(r.closed for r in backend.opened)
    closing = [r.closing_at for r in backend.opened if isinstance(r, SlowToClose)]
    assert len(closing) == 5 and max(closing) - t0 < 0.2  # none waited for another

    failing = SlowBackend()
    warm = WarmSandboxes(failing, jobs=2)  # type: ignore[arg-type]
    _runs(warm, [_job(POLICY), _job(replace(POLICY, memory_bytes=2**31))])
    with pytest.raises(RuntimeError, match="did not answer"):
        warm.close()
    assert sum(r.closed for r in failing.opened) == len(failing.opened) - 1
