"""``grade serve``: the process backend's fork servers kept warm between commands.

A real ``grade serve`` process in a folder of the test's own; the test process is the
command that uses it. Its runs must be forked from the served servers (not from one the
command starts), give what a server of the command's own gives, survive the served
server's death, and be refused to a command of other code or another user."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kit import make_submission
from kit.jobs import assert_serves, eager_inputs, eager_run, run_eager
from kit.served import ServeDaemon, fork_servers_of, spied_warm_sandboxes

from harness import served_sandboxes
from harness.api import GradeOptions, grade
from harness.sandbox import get_backend, served
from harness.sandbox.forkserver import ForkServer
from harness.sandbox.process import ProcessBackend, server_env
from harness.served_sandboxes import ServedSandboxes
from harness.settings import usable_cpus
from harness.warm import WarmSandboxes

OTHER_USER = 60998  # no such user here: the test makes no account for it
SERVE_LINE_SECONDS = 60.0


def _alive(pid: int) -> bool:
    """Not yet a zombie: a dying process empties its command line before it closes its
    files, so only its state says it is done."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture
def serve_dir(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A short private folder (a socket's path is at most 107 bytes), this process's
    fork servers stopped before and after: the next run attaches or starts anew."""
    folder = Path(tempfile.mkdtemp(prefix="hs-", dir="/tmp"))
    monkeypatch.setenv("HARNESS_SERVE_DIR", str(folder))
    ProcessBackend().close()
    yield folder
    ProcessBackend().close()
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def inputs(tmp_path: Path) -> Path:
    return eager_inputs(tmp_path)


def _server() -> ForkServer:
    """This process's fork server client for one CPU's runs (the tests' runs)."""
    return ProcessBackend()._server(server_env(1))


def test_runs_fork_from_the_served_server_and_predict_as_from_our_own(
    serve_dir: Path, inputs: Path, tmp_path: Path
) -> None:
    daemon = ServeDaemon(serve_dir)
    try:
        assert "serving warm sandboxes at" in daemon.first_line
        assert str(served.socket_path()) in daemon.first_line
        cpus = min(2, usable_cpus())  # one thread per run, and the task's two: each warm
        assert re.fullmatch(
            rf"{cpus} of {cpus} process-backend runners imported and warm in [0-9.]+ s\n",
            daemon.wait_warm(),
        )
        assert len(daemon.servers) == cpus
        assert oct(serve_dir.stat().st_mode & 0o777) == "0o700"
        assert oct(served.socket_path().stat().st_mode & 0o777) == "0o600"
        assert_serves(ProcessBackend(), tmp_path / "a", inputs)
        server = _server()
        assert server.attached and server.pid is None  # nothing started by this process
        assert fork_servers_of(os.getpid()) == []
        # the served server survives its run, and serves the next command's too
        before = sorted(daemon.servers)
        assert_serves(ProcessBackend(), tmp_path / "b", inputs)
        assert sorted(daemon.servers) == before
    finally:
        out = daemon.stop()
    assert daemon.proc.returncode == 0, out
    assert not served.socket_path().exists()  # removed on its way out
    assert "stopped" in out


def test_a_dead_served_server_is_replaced_and_the_run_still_served(
    serve_dir: Path, inputs: Path, tmp_path: Path
) -> None:
    daemon = ServeDaemon(serve_dir)
    try:
        assert_serves(ProcessBackend(), tmp_path / "a", inputs)
        dead = daemon.servers
        for pid in dead:
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while any(map(_alive, dead)) and time.monotonic() < deadline:
            time.sleep(0.05)  # its sockets are closed once it is a zombie
        assert_serves(ProcessBackend(), tmp_path / "b", inputs)  # re-attached, restarted
        assert _server().attached
    finally:
        daemon.stop()


def test_a_command_of_other_code_or_without_a_private_folder_starts_its_own(
    serve_dir: Path, inputs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    daemon = ServeDaemon(serve_dir)
    try:
        monkeypatch.setattr(served, "code_digest", lambda: "0123456789abcdef")  # other code
        assert_serves(ProcessBackend(), tmp_path / "a", inputs)
        assert not _server().attached and _server().pid is not None
        monkeypatch.undo()
        monkeypatch.setenv("HARNESS_SERVE_DIR", str(serve_dir))
        ProcessBackend().close()
        serve_dir.chmod(0o755)  # others may enter: not trusted
        assert served.attach(server_env(1), ()) is None
        serve_dir.chmod(0o700)
        assert served.attach(server_env(1), ()) is not None
    finally:
        daemon.stop()


def test_another_user_gets_nothing_from_it(serve_dir: Path) -> None:
    """A user who is not the daemon's cannot enter its folder, nor use its socket when
    it can reach it: the daemon checks the caller's uid."""
    if os.geteuid() != 0:
        pytest.fail("this test changes its uid: run the suite as root, as CI does")
    daemon = ServeDaemon(serve_dir)
    report = serve_dir.parent / f"{serve_dir.name}-other.json"
    try:
        pid = os.fork()
        if pid == 0:  # the other user (no exit handlers: os._exit)
            code = 1
            try:
                os.setgid(OTHER_USER)
                os.setuid(OTHER_USER)
                seen = {"attach": served.attach(server_env(1), ()) is not None}
                chan = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
                try:
                    chan.connect(str(served.socket_path()))
                    seen["connect"] = "connected"
                except OSError as exc:
                    seen["connect"] = type(exc).__name__
                report.write_text(json.dumps(seen))
                code = 0
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert status == 0
        assert json.loads(report.read_text()) == {"attach": False, "connect": "PermissionError"}
        # let it in as far as the socket: the daemon still answers nothing to that uid
        serve_dir.chmod(0o711)
        served.socket_path().chmod(0o666)
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                os.setgid(OTHER_USER)
                os.setuid(OTHER_USER)
                chan = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
                chan.settimeout(10)
                chan.connect(str(served.socket_path()))
                try:  # the daemon may close before the request is sent
                    chan.sendall(json.dumps({"env": server_env(1), "preload": []}).encode())
                    reply = chan.recv(100).decode()
                except OSError as exc:
                    reply = type(exc).__name__
                report.write_text(json.dumps({"reply": reply}))
                code = 0
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert status == 0
        reply = json.loads(report.read_text())["reply"]
        assert reply in ("", "BrokenPipeError", "ConnectionResetError")  # closed, nothing handed
    finally:
        serve_dir.chmod(0o700)
        report.unlink(missing_ok=True)
        daemon.stop()


def _serve_at(folder: Path) -> subprocess.CompletedProcess[str]:
    """`grade serve` at ``folder``, when it is expected to refuse (it returns at once)."""
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", "serve"],
        env={**os.environ, "HARNESS_SERVE_DIR": str(folder)},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_second_serve_is_refused_and_an_idle_one_stops_by_itself(serve_dir: Path) -> None:
    first = ServeDaemon(serve_dir, "--idle-minutes", "0.05")  # 3 s
    try:
        second = _serve_at(serve_dir)
        assert second.returncode == 2
        assert "already answers at" in second.stderr and "Traceback" not in second.stderr
        assert "stop it first" in second.stderr
        deadline = time.monotonic() + SERVE_LINE_SECONDS
        while first.proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert first.proc.returncode == 0  # stopped by itself, idle
        assert not served.socket_path().exists()
    finally:
        if first.proc.poll() is None:
            first.stop()


def test_a_run_under_way_keeps_an_idle_serve_up(
    serve_dir: Path, inputs: Path, tmp_path: Path
) -> None:
    """A command attached to a served runner asks nothing more while its runs fork from
    it: a run longer than the idle time keeps the daemon up, which stops after it."""
    daemon = ServeDaemon(serve_dir, "--idle-minutes", "0.1")  # 6 s
    try:
        outcome = run_eager(ProcessBackend(), tmp_path / "slow", inputs, "time.sleep(15)")
        assert (outcome.status, outcome.exit_code) == ("ok", 0), outcome.log
        assert _server().attached  # it ran through the daemon's runner
        assert daemon.proc.poll() is None  # 15 s of a run, idle for 6: still up
        deadline = time.monotonic() + SERVE_LINE_SECONDS
        while daemon.proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert daemon.proc.returncode == 0  # then idle: stopped by itself
    finally:
        if daemon.proc.poll() is None:
            daemon.stop()


def test_serve_refuses_a_folder_others_may_enter(serve_dir: Path) -> None:
    serve_dir.chmod(0o777)
    try:
        done = _serve_at(serve_dir)
    finally:
        serve_dir.chmod(0o700)
    assert done.returncode == 2
    assert f"{serve_dir} is not a folder of yours that only you may enter" in done.stderr
    assert "HARNESS_SERVE_DIR" in done.stderr


def test_serve_names_a_folder_it_cannot_make(serve_dir: Path) -> None:
    blocker = serve_dir / "a-file"
    blocker.write_text("")
    done = _serve_at(blocker / "harness")
    assert done.returncode == 2
    assert f"cannot make {blocker / 'harness'} for grade serve's socket" in done.stderr
    assert "HARNESS_SERVE_DIR" in done.stderr and "Traceback" not in done.stderr


def test_serve_names_a_socket_path_too_long(serve_dir: Path) -> None:
    deep = serve_dir / ("d" * 100)
    done = _serve_at(deep)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert f"cannot listen at {deep}/serve-" in done.stderr
    assert "a socket's path has at most 107 bytes" in done.stderr


# ---- bwrap and docker: the batch's warm sandboxes, kept by the daemon --------------------


def _grade(folders: list[Path], results: Path, backend: str, **kw: Any) -> list[dict[str, Any]]:
    options = GradeOptions(sandbox=backend, results_dir=results, jobs=2, reports=False)
    docs = grade(folders, options=options, **kw)
    return [{k: d.model_dump(mode="json")[k] for k in ("team", "status", "metrics")} for d in docs]


@pytest.mark.parametrize(
    "backend",
    [
        pytest.param("bwrap", marks=pytest.mark.bwrap),
        pytest.param("docker", marks=pytest.mark.docker),
    ],
)
def test_a_batch_through_grade_serve_is_graded_as_without_it(
    backend: str, env: Path, serve_dir: Path, tmp_path: Path
) -> None:
    folders = [make_submission(tmp_path / "subs", f"team{i}", seed=i) for i in range(3)]
    with spied_warm_sandboxes() as made:
        alone = _grade(folders, tmp_path / "alone", backend)  # no daemon answers yet
        daemon = ServeDaemon(serve_dir)
        try:
            first = _grade(folders, tmp_path / "served-1", backend)
            again = _grade(folders, tmp_path / "served-2", backend)  # its sandboxes warm now
        finally:
            out = daemon.stop()
    assert [type(w) for w in made] == [WarmSandboxes, ServedSandboxes, ServedSandboxes], out
    assert not any(w.fell_back for w in made[1:])  # type: ignore[attr-defined]
    assert {d["status"] for d in alone} == {"graded"}, alone
    assert first == alone and again == alone  # the same documents' verdicts and metrics


@pytest.mark.bwrap
def test_a_daemon_gone_mid_batch_leaves_the_rest_to_the_commands_own_sandboxes(
    env: Path, serve_dir: Path, tmp_path: Path
) -> None:
    folders = [make_submission(tmp_path / "subs", f"team{i}", seed=i) for i in range(3)]
    daemon = ServeDaemon(serve_dir)
    try:
        with spied_warm_sandboxes() as made:
            docs = _grade(folders, tmp_path / "r", "bwrap", on_done=lambda d: daemon.proc.kill())
    finally:
        daemon.stop()
    assert {d["status"] for d in docs} == {"graded"}, docs
    assert isinstance(made[0], ServedSandboxes) and made[0].fell_back


@pytest.mark.bwrap
def test_a_daemon_whose_sandbox_differs_from_the_commands_is_not_used(
    serve_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = get_backend("bwrap")
    daemon = ServeDaemon(serve_dir)
    try:
        assert ServedSandboxes(backend).answers()
        monkeypatch.setattr(type(backend), "describe", lambda self: {"bwrap": "another build"})
        other = ServedSandboxes(backend)
        assert not other.answers() and other.fell_back
    finally:
        daemon.stop()


@pytest.mark.bwrap
def test_the_broker_runs_no_gpu_job_and_serves_no_process_backend(tmp_path: Path) -> None:
    broker = served_sandboxes.Broker(1)
    job = eager_run(tmp_path, eager_inputs(tmp_path), "")
    gpu = dataclasses.replace(job, policy=dataclasses.replace(job.policy, gpu=True))
    request = {"backend": "bwrap", "describe": get_backend("bwrap").describe()}
    request |= {"jobs": 1, "preload": [], "op": "run"}
    try:
        with pytest.raises(ValueError, match="runs no GPU job"):
            broker({**request, "job": served_sandboxes.job_to_wire(gpu)})
        with pytest.raises(ValueError, match="does not serve the process backend"):
            broker({**request, "backend": "process", "job": served_sandboxes.job_to_wire(job)})
        wire = served_sandboxes.job_to_wire(job)
        assert served_sandboxes.job_from_wire(wire) == job  # the wire loses nothing
    finally:
        broker.close()


@pytest.mark.parametrize(
    "backend",
    [
        pytest.param("bwrap", marks=pytest.mark.bwrap),
        pytest.param("docker", marks=pytest.mark.docker),
    ],
)
def test_a_served_run_whose_command_is_gone_is_killed(backend: str, tmp_path: Path) -> None:
    """The daemon's run for a command that closed its end of the reply (stopped, killed)
    is killed at once, not at its wall clock, and the warm sandboxes serve the next run."""
    broker = served_sandboxes.Broker(1)
    inputs = eager_inputs(tmp_path)
    request = {"backend": backend, "describe": get_backend(backend).describe()}
    request |= {"jobs": 1, "preload": [], "op": "run"}
    (tmp_path / "slow").mkdir()
    slow = eager_run(tmp_path / "slow", inputs, "time.sleep(90)", wall=120)
    mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    asked = {**request, "job": served_sandboxes.job_to_wire(slow)}
    answer = threading.Thread(target=served._broker_answer, args=(broker, asked, theirs.detach()))
    try:
        answer.start()
        time.sleep(8)  # the sandbox is up, the run sleeps
        t0 = time.monotonic()
        mine.close()  # the command is gone
        answer.join(timeout=45)
        assert not answer.is_alive(), "the run went on for nobody"
        assert time.monotonic() - t0 < 45
        (tmp_path / "next").mkdir()
        job = eager_run(tmp_path / "next", inputs, "")
        reply = broker({**request, "job": served_sandboxes.job_to_wire(job)})
        outcome = served_sandboxes.outcome_from_wire(reply["outcome"])
        assert (outcome.status, outcome.exit_code) == ("ok", 0), outcome.log
    finally:
        mine.close()
        answer.join(timeout=130)
        broker.close()
