"""The warm predictor (``sandbox/predictor.py``, ``runner/serve.py``): phase B for a batch
in one sandbox, on bwrap and docker.

The programs are real: each tiny model is exported by the real phase A (the process
backend's runner) and checked by the host (``check_program``); the predictor's answers are
compared with a fresh ``backend.run`` of the same job.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from kit.jobs import kill_sandbox, predict_run
from safetensors.torch import save_file

from harness.program.check import check_program
from harness.program.records import Expect
from harness.runner.contract import PROGRAM
from harness.sandbox import RunJob, SandboxPolicy, get_backend
from harness.sandbox.base import Backend
from harness.sandbox.predictor import PerRun, ProcessServer, SpoolPredictor, copy_tree
from harness.sandbox.process import ProcessBackend
from harness.staging import Workspace

ISOLATED = [
    pytest.param("bwrap", marks=pytest.mark.bwrap),
    pytest.param("docker", marks=pytest.mark.docker),
]

POLICY = SandboxPolicy(
    wall_seconds=120,
    memory_bytes=1024 * 2**20,
    pids=32,
    cpus=1,
    tmpfs_bytes=8 * 2**20,
    output_bytes=8 * 2**20,
    log_bytes=16 * 1024,
)

# {extra}: what the forward adds to the logits (0 for an honest model)
MODEL = """
import torch


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(64, 3)

    def forward(self, x):
        return self.fc(x.flatten(1)) + {extra}


def build_model():
    return Net()
"""
# ~2.4 GiB for one batch of 8: past the predictor's 1 GiB
HOG = "x.repeat(1, 1, 1100, 1100).mean((1, 2, 3))[:, None] * 0"
# seconds for the 100 batches of ``many_inputs`` on any machine, so a timeout of 0.5 s or
# a kill lands mid-request (at 60x60 a fast machine finished it in 0.9 s)
SLOW = "x.repeat(1, 1, 200, 200).mean((1, 2, 3))[:, None] * 0"
SHAPE = (1, 8, 8)
BATCH = 8


def _export(exporter: ProcessBackend, root: Path, name: str, extra: str, seed: int) -> Path:
    """A checked program: the real phase A (process backend), then the host's check."""
    ws = Workspace(root / name)
    source = root / name / "source"
    source.mkdir(parents=True)
    (source / "model.py").write_text(MODEL.format(extra=extra))
    g = torch.Generator().manual_seed(seed)
    weights = {"fc.weight": torch.randn(3, 64, generator=g), "fc.bias": torch.randn(3, generator=g)}
    save_file(weights, source / "w.safetensors")
    spec = {
        **_common(),
        "phase": "export",
        "entrypoint": "model:build_model",
        "weights": "w.safetensors",
        "export_batch": BATCH,
    }
    out = ws.output("export-out")
    job = RunJob(
        submission_dir=ws.stage("sub", source, ["model.py", "w.safetensors"]),
        inputs_dir=ws.stage("no-inputs", source, []),
        job_dir=ws.job("export-job", spec),
        output_dir=out,
        policy=POLICY,
    )
    outcome = exporter.run(job)
    assert outcome.status == "ok", outcome.log
    checked = root / name / "checked.pt2"
    expect = Expect(
        input_shape=(BATCH, *SHAPE), kind="classification", num_classes=3, max_bytes=2**24
    )
    check_program(out / PROGRAM, checked, expect)
    return checked


def _common() -> dict[str, object]:
    return {
        "normalize": None,
        "kind": "classification",
        "num_classes": 3,
        "input_shape": list(SHAPE),
        "device": "cpu",
        "threads": 1,
    }


@pytest.fixture(scope="module")
def programs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("programs")
    exporter = ProcessBackend()  # forked from one pre-imported runner
    try:
        made = {f"good{i}": _export(exporter, root, f"good{i}", "0", i) for i in range(3)}
        made["hog"] = _export(exporter, root, "hog", HOG, 10)
        made["slow"] = _export(exporter, root, "slow", SLOW, 11)
    finally:
        exporter.close()
    return made


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("inputs")
    rng = np.random.default_rng(0)
    np.save(folder / "inputs.npy", rng.integers(0, 256, size=(40, *SHAPE), dtype=np.uint8))
    os.chmod(folder / "inputs.npy", 0o444)
    os.chmod(folder, 0o555)
    return folder


@pytest.fixture(scope="module")
def many_inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("many")
    rng = np.random.default_rng(1)
    np.save(folder / "inputs.npy", rng.integers(0, 256, size=(800, *SHAPE), dtype=np.uint8))
    return folder


def _job(root: Path, name: str, program: Path, inputs: Path, **policy: float) -> RunJob:
    probe = {"count": 8, "seed": 5, "amplitude": 2}
    limits = replace(POLICY, **policy)
    return predict_run(
        root, name, program, inputs, io=_common(), batch=BATCH, probe=probe, policy=limits,
        label=f"{name}/predict",
    )  # fmt: skip


@pytest.fixture(scope="module")
def cache() -> dict[str, Backend]:
    return {}


def _backend(name: str, cache: dict[str, Backend]) -> Backend:
    if name not in cache:
        cache[name] = get_backend(name)
    return cache[name]


def _predictions(job: RunJob) -> np.ndarray:
    return np.load(job.output_dir / "predictions.npy")


# on a GPU the process backend's batch gets one warm predictor too (one CUDA context); a
# GPU policy asks for it on any machine (with no GPU here, the runner predicts on the CPU)
WARM = [*ISOLATED, pytest.param("process", id="process-gpu-policy")]


@pytest.mark.parametrize("name", WARM)
def test_a_batch_predicts_as_fresh_runs_do_in_one_interpreter(
    name: str, cache: dict[str, Backend], programs: dict[str, Path], inputs: Path, tmp_path: Path
) -> None:
    backend = _backend(name, cache)
    goods = [programs[f"good{i}"] for i in range(3)]
    with backend.predictor(replace(POLICY, gpu=name == "process")) as predictor:
        assert isinstance(predictor, SpoolPredictor)
        warm = [_job(tmp_path, f"warm{i}", p, inputs) for i, p in enumerate(goods)]
        outcomes = [predictor.predict(job) for job in warm]
        assert [o.status for o in outcomes] == ["ok"] * 3, [o.log for o in outcomes]
        assert predictor.starts == 1
        spool = predictor._spool
        assert spool is not None and os.listdir(spool) == []  # each request removed
    assert not spool.exists()
    # the server's own words: one interpreter, request n of it, the spool held only it,
    # and what its collection after each request walks: not torch's ~180,000 objects,
    # which ``serve.settle`` froze after the imports
    for n, outcome in enumerate(outcomes, start=1):
        assert f"serve: request {n} of this interpreter" in outcome.log
        assert f"the spool holds ['{outcome.info['request']}']" in outcome.log
        seen = re.search(r"; (\d+) objects before the collector", outcome.log)
        assert seen is not None and int(seen[1]) < 20_000, outcome.log[:400]
    assert len({o.info["sandbox"] for o in outcomes}) == 1
    for i, (program, job) in enumerate(zip(goods, warm, strict=True)):
        fresh = _job(tmp_path, f"fresh{i}", program, inputs)
        assert backend.run(fresh).status == "ok"
        np.testing.assert_array_equal(_predictions(job), _predictions(fresh))
        np.testing.assert_array_equal(
            np.load(job.output_dir / "probe" / "predictions.npy"),
            np.load(fresh.output_dir / "probe" / "predictions.npy"),
        )
        assert (job.output_dir / "report.json").is_file()
    assert not np.array_equal(_predictions(warm[0]), _predictions(warm[1]))


@pytest.mark.parametrize("name", ISOLATED)
def test_a_started_predictor_says_when_it_has_imported_torch(
    name: str, cache: dict[str, Backend]
) -> None:
    backend = _backend(name, cache)
    with backend.predictor(POLICY) as predictor:
        assert isinstance(predictor, SpoolPredictor)
        assert predictor.ready(0.1) is False  # none started
        predictor.start()
        assert predictor.ready(120) is True
        assert predictor.starts == 1


@pytest.mark.parametrize("name", ISOLATED)
def test_a_bad_request_costs_only_itself(
    name: str,
    cache: dict[str, Backend],
    programs: dict[str, Path],
    inputs: Path,
    many_inputs: Path,
    tmp_path: Path,
) -> None:
    backend = _backend(name, cache)
    good = programs["good0"]
    with backend.predictor(POLICY) as predictor:
        first = predictor.predict(_job(tmp_path, "a", good, inputs))
        assert first.status == "ok", first.log
        slow = predictor.predict(
            _job(tmp_path, "slow", programs["slow"], many_inputs, wall_seconds=0.5)
        )
        assert (slow.status, slow.reason) == ("timeout", "wall-clock limit of 0.5 s")
        after_timeout = predictor.predict(_job(tmp_path, "b", good, inputs))
        assert after_timeout.status == "ok", after_timeout.log
        hog = predictor.predict(_job(tmp_path, "hog", programs["hog"], inputs))
        assert (hog.status, hog.reason) == ("killed", "memory limit of 1024 MiB"), hog.log
        after_hog = predictor.predict(_job(tmp_path, "c", good, inputs))
        assert after_hog.status == "ok", after_hog.log
        assert predictor.starts == 3
        np.testing.assert_array_equal(
            _predictions(_job_out(tmp_path, "a")), _predictions(_job_out(tmp_path, "c"))
        )
    assert not (tmp_path / "slow" / "out" / "predictions.npy").exists()


def _job_out(root: Path, name: str) -> RunJob:
    return RunJob(root, root, root, root / name / "out", POLICY)


@pytest.mark.parametrize("name", ISOLATED)
def test_a_server_killed_mid_request_costs_only_that_request(
    name: str,
    cache: dict[str, Backend],
    programs: dict[str, Path],
    inputs: Path,
    many_inputs: Path,
    tmp_path: Path,
) -> None:
    backend = _backend(name, cache)
    with backend.predictor(POLICY) as predictor:
        assert predictor.predict(_job(tmp_path, "a", programs["good1"], inputs)).status == "ok"
        sandbox = predictor.sandbox
        assert sandbox is not None
        assert predictor._spool is not None
        started = predictor._spool / "2" / "log"  # the server opens it as it starts request 2
        killer = threading.Thread(target=_kill_server, args=(name, sandbox, started))
        killer.start()
        crashed = predictor.predict(_job(tmp_path, "slow", programs["slow"], many_inputs))
        killer.join()
        assert crashed.status == "error" and crashed.exit_code == -signal.SIGKILL, crashed
        assert "the predictor's sandbox ended" in crashed.log
        after = predictor.predict(_job(tmp_path, "b", programs["good1"], inputs))
        assert after.status == "ok", after.log
        assert predictor.starts == 2 and predictor.sandbox != sandbox


@pytest.mark.parametrize("name", ISOLATED)
def test_a_sandbox_that_ended_between_requests_costs_no_request(
    name: str,
    cache: dict[str, Backend],
    programs: dict[str, Path],
    inputs: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Killed from outside while idle (an operator, the out-of-memory killer): the next
    request is no one's fault, so it gets a fresh sandbox rather than a failed verdict."""
    backend = _backend(name, cache)
    with backend.predictor(POLICY) as predictor:
        assert predictor.predict(_job(tmp_path, "a", programs["good1"], inputs)).status == "ok"
        sandbox, server = predictor.sandbox, predictor._server
        assert sandbox is not None and server is not None
        kill_sandbox(name, sandbox)
        deadline = time.monotonic() + 30
        while not server.ended(0.05):
            assert time.monotonic() < deadline, "the killed sandbox did not end"
        after = predictor.predict(_job(tmp_path, "b", programs["good2"], inputs))
        assert after.status == "ok", after.log
        assert predictor.starts == 2 and predictor.sandbox != sandbox
    assert "predictor's sandbox ended between jobs" in caplog.text


@pytest.mark.parametrize("name", ISOLATED)
def test_a_predictor_started_by_a_thread_that_ends_outlives_it(
    name: str,
    cache: dict[str, Backend],
    programs: dict[str, Path],
    inputs: Path,
    tmp_path: Path,
) -> None:
    """A batch's predictors are started in threads that end (``WarmSandboxes.prewarm``).
    bwrap's --die-with-parent is the kernel's parent-death signal, which follows the
    thread that forked bwrap: unless bwrap is forked from a thread that lasts, the
    sandbox is SIGKILLed when its starting thread ends, and the next request fails."""
    backend = _backend(name, cache)
    with backend.predictor(POLICY) as predictor:

        def start_then_end() -> None:
            predictor.start()
            time.sleep(1.0)  # past bwrap's own setup, as a busy machine makes it

        starter = threading.Thread(target=start_then_end)
        starter.start()
        starter.join()
        time.sleep(0.5)
        outcome = predictor.predict(_job(tmp_path, "a", programs["good1"], inputs))
        assert outcome.status == "ok", outcome.log
        assert predictor.starts == 1  # the first sandbox served it: it was never killed


def _kill_server(backend: str, sandbox: str, started: Path) -> None:
    """SIGKILL the server's interpreter from the host, once it is busy with a request."""
    deadline = time.monotonic() + 60
    while not started.exists():
        assert time.monotonic() < deadline, f"the server never started {started.parent}"
        time.sleep(0.01)
    if backend == "docker":
        import docker

        docker.from_env().containers.get(sandbox).kill()  # the whole container
        return
    for pid in _descendants(int(sandbox)):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                argv = fh.read().split(b"\0")
        except OSError:
            continue  # it ended since /proc was read: not the server, which is waiting
        if b"serve" in argv and b"-u" in argv:
            os.kill(pid, signal.SIGKILL)
            return
    raise AssertionError("no server process found under the sandbox")


def _descendants(root: int) -> list[int]:
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    parents[int(entry)] = int(fh.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    found, frontier = [], [root]
    while frontier:
        pid = frontier.pop()
        children = [c for c, p in parents.items() if p == pid]
        found += children
        frontier += children
    return found


def test_the_process_backend_predicts_run_by_run(
    programs: dict[str, Path], inputs: Path, tmp_path: Path
) -> None:
    backend = ProcessBackend()
    try:
        with backend.predictor(POLICY) as predictor:
            assert isinstance(predictor, PerRun)
            job = _job(tmp_path, "a", programs["good2"], inputs)
            assert predictor.predict(job).status == "ok"
        fresh = _job(tmp_path, "b", programs["good2"], inputs)
        assert backend.run(fresh).status == "ok"
        np.testing.assert_array_equal(_predictions(job), _predictions(fresh))
    finally:
        backend.close()


def test_a_kill_returns_only_once_the_sandbox_is_released() -> None:
    """The log thread (on a flood) and the host may kill one server at once: each kill
    returns only after the sandbox's mounts and folders are released, whoever began."""
    released: list[float] = []
    stack = ExitStack()
    stack.callback(lambda: (time.sleep(0.5), released.append(time.monotonic())))
    proc = subprocess.Popen(
        ["sleep", "60"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )
    server = ProcessServer(proc, POLICY, stack)
    returned: list[float] = []

    def kill() -> None:
        server.kill()
        returned.append(time.monotonic())

    threads = [threading.Thread(target=kill) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert proc.poll() is not None and len(released) == 1  # released once
    assert len(returned) == 2 and min(returned) >= released[0]  # neither returned before


def test_files_a_run_closed_to_the_host_are_left_not_fatal() -> None:
    """Under rootless Docker a run's files belong to a user that is not the host's: a
    file or folder it closes in /output cannot be read. The copy leaves them and brings
    the rest (mode 000: closed to nobody, which plays the host when the test runs as root,
    and to the test's own user otherwise)."""
    root = Path(tempfile.mkdtemp(prefix="harness-closed-"))
    try:
        os.chmod(root, 0o755)
        source, target = root / "output", root / "copy"
        (source / "closed").mkdir(parents=True)
        (source / "predictions.npy").write_bytes(b"kept")
        (source / "secret").write_bytes(b"closed")
        (source / "closed" / "inside").write_bytes(b"closed")
        os.chmod(source / "secret", 0o000)
        os.chmod(source / "closed", 0o000)
        target.mkdir(mode=0o777)
        os.chmod(target, 0o777)
        pid = os.fork()  # the child is the host, as another user than the files' owner
        if pid == 0:
            try:
                if os.geteuid() == 0:  # root reads anything: be another user
                    os.setgid(65534)
                    os.setuid(65534)
                copy_tree(source, target)
            except BaseException:
                os._exit(1)
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0  # nothing raised
        assert (target / "predictions.npy").read_bytes() == b"kept"
        assert not (target / "secret").exists() and not (target / "closed" / "inside").exists()
    finally:
        shutil.rmtree(root, ignore_errors=True)
