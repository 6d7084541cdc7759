"""The process backend's fork server under hostile runs: a crash, a hang, a flood, a run
that kills its process group, its supervisor or the server itself. Each run is the real
runner (``eager`` phase) on a tiny submission whose ``model.py`` misbehaves when imported;
the backend must give the same outcome as a fresh interpreter would, and keep serving."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kit.jobs import assert_serves, eager_inputs, run_eager

from harness.sandbox import RunOutcome
from harness.sandbox.layout import SAFE_ENV
from harness.sandbox.process import ProcessBackend, server_env

NORMAL = ""
CRASH = "os.abort()"
HANG = "time.sleep(120)"
FLOOD = "sys.stdout.write('x' * 4_000_000); sys.stdout.flush()"
KILL_GROUP = "os.killpg(0, signal.SIGKILL)"
KILL_PARENT = "os.kill(os.getppid(), signal.SIGKILL)"
KILL_SERVER = "os.kill(int(open(f'/proc/{os.getppid()}/stat').read().split()[3]), signal.SIGKILL)"
SHOW_ENV = "print('ENV=' + json.dumps({'env': dict(os.environ), 'cwd': os.getcwd()}))"
SLOW = "time.sleep(3)"
LEAVE_CHILD = (
    "import subprocess; print('CHILD=%d' % subprocess.Popen(['sleep', '300']).pid, flush=True)"
)


@pytest.fixture(scope="module")
def backend() -> Iterator[ProcessBackend]:
    b = ProcessBackend()
    yield b
    b.close()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return eager_inputs(tmp_path_factory.mktemp("inputs"))


def _server_pid(backend: ProcessBackend) -> int:
    """The pid of the server that forks this module's runs (one CPU's environment)."""
    pid = backend._server(server_env(1)).pid
    assert pid is not None
    return pid


def test_a_normal_run_is_forked_from_one_server(
    backend: ProcessBackend, inputs: Path, tmp_path: Path
) -> None:
    assert_serves(backend, tmp_path / "a", inputs)
    first = _server_pid(backend)
    assert_serves(backend, tmp_path / "b", inputs)
    assert _server_pid(backend) == first


def test_gradings_one_after_another_in_one_process_share_the_server(
    backend: ProcessBackend, inputs: Path, tmp_path: Path
) -> None:
    """Each ``grade()`` call makes a backend of its own: a server per backend would import
    torch again for every call (seconds each) in a notebook or a test session."""
    assert_serves(backend, tmp_path / "a", inputs)
    first = _server_pid(backend)
    again = ProcessBackend()
    assert_serves(again, tmp_path / "b", inputs)
    assert _server_pid(again) == first
    del again
    gc.collect()  # a backend collected leaves the process's server running
    assert_serves(backend, tmp_path / "c", inputs)
    assert _server_pid(backend) == first


_WARM_UP_THREADS = """
import os, sys
from harness.sandbox.forkserver import PRELOAD
for name in PRELOAD:
    __import__(name)
before = sorted(os.listdir("/proc/self/task"))
imported = "torch._inductor.ir" in sys.modules
from harness.runner.phase_a import warm_up
warm_up()
after = sorted(os.listdir("/proc/self/task"))
print(before == after, imported, "torch._inductor.ir" in sys.modules)
"""


def test_the_warm_up_starts_no_thread_and_does_the_first_exports_imports() -> None:
    """The server forks its runs after phase A's warm-up: a thread it left running (an
    intra-op pool) would be missing from every run, holding whatever lock it held. The
    warm-up imports what the imports alone did not (the conformance suite checks that a
    pre-imported runner's run finds it imported)."""
    done = subprocess.run(
        [sys.executable, "-c", _WARM_UP_THREADS],
        cwd=Path(__file__).resolve().parent.parent,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.stdout.split() == ["True", "False", "True"], done.stderr[-2000:]


@pytest.mark.parametrize("fork", [True, False], ids=["forked", "fresh"])
def test_a_crash_is_an_error_with_the_signal(
    backend: ProcessBackend, fork: bool, inputs: Path, tmp_path: Path
) -> None:
    b = backend if fork else ProcessBackend(fork=False)
    outcome = run_eager(b, tmp_path / "crash", inputs, CRASH)
    assert (outcome.status, outcome.exit_code) == ("error", -6)


@pytest.mark.slow
@pytest.mark.parametrize("fork", [True, False], ids=["forked", "fresh"])
def test_a_hang_is_killed_at_the_wall_clock(
    backend: ProcessBackend, fork: bool, inputs: Path, tmp_path: Path
) -> None:
    b = backend if fork else ProcessBackend(fork=False)
    outcome = run_eager(b, tmp_path / "hang", inputs, HANG, wall=4)
    assert outcome.status == "timeout"
    assert outcome.exit_code == -9
    assert "4 s" in outcome.reason
    assert 4 <= outcome.wall_seconds < 15
    if fork:
        assert_serves(b, tmp_path / "after", inputs)


def test_a_flood_is_capped(backend: ProcessBackend, inputs: Path, tmp_path: Path) -> None:
    outcome = run_eager(backend, tmp_path / "flood", inputs, FLOOD, log_kb=4)
    assert outcome.status == "ok", outcome.log
    assert "bytes of output cut" in outcome.log
    assert len(outcome.log.encode()) < 4 * 1024 + 200
    assert_serves(backend, tmp_path / "after", inputs)


@pytest.mark.parametrize("behaviour", [KILL_GROUP, KILL_PARENT], ids=["killpg0", "kill-parent"])
def test_a_run_that_kills_its_parents_costs_only_itself(
    backend: ProcessBackend, inputs: Path, tmp_path: Path, behaviour: str
) -> None:
    assert_serves(backend, tmp_path / "before", inputs)
    server = _server_pid(backend)
    outcome = run_eager(backend, tmp_path / "killer", inputs, behaviour)
    assert (outcome.status, outcome.exit_code) == ("error", -9)
    assert _server_pid(backend) == server
    assert_serves(backend, tmp_path / "after", inputs)


def test_what_a_run_leaves_behind_is_killed(
    backend: ProcessBackend, inputs: Path, tmp_path: Path
) -> None:
    outcome = run_eager(backend, tmp_path / "leave", inputs, LEAVE_CHILD)
    assert outcome.status == "ok", outcome.log
    pid = int(next(x for x in outcome.log.splitlines() if x.startswith("CHILD="))[6:])
    deadline = time.monotonic() + 5
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(pid)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except OSError:
        return False
    return state != "Z"


def test_killing_the_server_spares_runs_in_flight_and_it_restarts(
    backend: ProcessBackend, inputs: Path, tmp_path: Path
) -> None:
    assert_serves(backend, tmp_path / "before", inputs)
    server = _server_pid(backend)
    slow: list[RunOutcome] = []
    thread = threading.Thread(
        target=lambda: slow.append(run_eager(backend, tmp_path / "slow", inputs, SLOW))
    )
    thread.start()
    killer = run_eager(backend, tmp_path / "killer", inputs, KILL_SERVER)
    assert killer.status == "ok", killer.log  # it killed the server, not itself
    thread.join()
    assert (slow[0].status, slow[0].exit_code) == ("ok", 0), slow[0].log
    assert_serves(backend, tmp_path / "after", inputs)
    assert _server_pid(backend) != server


def test_the_environment_is_scrubbed_and_home_is_private(
    backend: ProcessBackend, inputs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HARNESS_SECRET_SEED", "31337")
    outcome = run_eager(backend, tmp_path / "env", inputs, SHOW_ENV)
    assert outcome.status == "ok", outcome.log
    line = next(x for x in outcome.log.splitlines() if x.startswith("ENV="))
    seen = json.loads(line[4:])
    allowed = {*SAFE_ENV, "PATH", "HOME", "TMPDIR", "CUDA_VISIBLE_DEVICES"}
    assert set(seen["env"]) <= allowed
    assert seen["env"]["CUDA_VISIBLE_DEVICES"] == ""  # a run without the GPU policy
    assert "31337" not in line
    assert seen["cwd"] == seen["env"]["HOME"] == seen["env"]["TMPDIR"]
    assert seen["cwd"] != os.getcwd() and not Path(seen["cwd"]).exists()  # removed after
