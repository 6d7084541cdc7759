"""The docker backend for whoever runs it, not only root.

A member of the ``docker`` group (course staff on a shared server, a student on a laptop)
grades with its own uid in the container: the harness, not being root, cannot hand its
folders to the image's uid 1000. A rootless engine runs its containers' root as its own
user. An engine that cannot set the sandbox's memory and process limits is refused, in one
sentence with a hint, never used without them.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
from kit import make_submission, write_task

from harness import canary
from harness.api import GradeOptions, grade
from harness.errors import UserError
from harness.sandbox import get_backend
from harness.sandbox.docker.backend import DockerBackend, SandboxUser, sandbox_user
from harness.sandbox.docker.engine import EngineFacts
from harness.sandbox.layout import runner_root
from harness.settings import settings

# the member: a uid of its own, not nobody, whom bwrap's sandboxes run as when root grades
# (a member's containers run as the member, and the suite runs bwrap tests beside this one)
MEMBER = 60999
ROOTLESS_USER = "harness-rootless"  # runs the rootless engine scripts/system-deps starts
SOCKET = Path("/var/run/docker.sock")


def test_the_container_runs_as_the_image_user_for_root_and_as_the_caller_otherwise() -> None:
    assert sandbox_user(0, 0, rootless=False) == SandboxUser("1000:1000", 1000)
    assert sandbox_user(1001, 1001, rootless=False) == SandboxUser("1001:1001", None)
    assert sandbox_user(4242, 100, rootless=False) == SandboxUser("4242:100", None)
    assert sandbox_user(1001, 1001, rootless=True) == SandboxUser("0:0", None)


@pytest.mark.parametrize(
    ("facts", "euid", "reason", "hint"),
    [
        (
            EngineFacts(rootless=True, unenforced=("memory", "process"), cgroup_version="1"),
            1001,
            "the Docker engine is rootless on a cgroup v1 host, so it cannot enforce the "
            "sandbox's memory and process limits",
            "use --sandbox bwrap, or boot the host with cgroup v2",
        ),
        (
            EngineFacts(rootless=True, unenforced=("process",), cgroup_version="2"),
            1001,
            "the Docker engine is rootless without its cgroup controllers, so it cannot "
            "enforce the sandbox's process limits",
            "use --sandbox bwrap, or delegate the cpu, memory and pids controllers",
        ),
        (
            EngineFacts(rootless=False, unenforced=("memory",)),
            0,
            "the Docker engine cannot enforce the sandbox's memory limits (its host lacks "
            "those cgroup controllers)",
            "use --sandbox bwrap, or enable the controllers",
        ),
        (
            EngineFacts(rootless=True, unenforced=()),
            0,
            "the Docker engine is rootless, so its containers cannot write root's folders",
            "grade as the user who runs that engine",
        ),
    ],
)
def test_an_engine_that_cannot_keep_the_sandbox_is_refused_with_a_hint(
    facts: EngineFacts, euid: int, reason: str, hint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What ``docker info`` says (``engine_facts``, read from a real engine below) decides;
    here each answer a real engine gives, so that every sentence is read."""
    monkeypatch.setattr("harness.sandbox.docker.backend.engine_answers", lambda: True)
    monkeypatch.setattr("harness.sandbox.docker.backend.os.geteuid", lambda: euid)
    backend = DockerBackend()
    backend.__dict__["facts"] = facts  # the cached_property, as a real engine answered it
    assert backend.unavailable_reason() == reason
    assert backend.unavailable_hint().startswith(hint)
    monkeypatch.setattr("harness.sandbox.backends.get", lambda name: lambda: backend)
    with pytest.raises(UserError) as raised:
        get_backend("docker")
    assert raised.value.message == f"the docker sandbox cannot run here: {reason}"
    assert raised.value.hint == backend.unavailable_hint()


@pytest.mark.docker
def test_the_engine_is_read_as_the_docker_cli_reads_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """The system engine, and the rootless one ``scripts/system-deps`` starts for the user
    ``harness-rootless``: what ``engine_facts`` reads agrees with ``docker info``."""
    rootless = _rootless_host()
    for host, kind in ((None, False), (rootless, True)):
        info = _docker_info(host)
        if host is not None:
            monkeypatch.setenv("DOCKER_HOST", host)
        facts = DockerBackend().facts
        assert facts.rootless is kind
        assert ("name=rootless" in info["SecurityOptions"]) is kind
        lacking = [
            n for k, n in (("MemoryLimit", "memory"), ("PidsLimit", "process")) if not info[k]
        ]
        assert list(facts.unenforced) == lacking
        assert facts.cgroup_version == str(info["CgroupVersion"])
    monkeypatch.delenv("DOCKER_HOST")
    assert DockerBackend().unavailable_reason() is None  # the suite's engine grades


@pytest.mark.docker
def test_grade_on_a_rootless_engine_says_what_stops_it(tmp_path: Path) -> None:
    """``grade --sandbox docker`` on the rootless engine: refused before any run, with the
    reason and a hint. On a cgroup v1 host (this one, CI's) that is the limits it cannot
    set; on a cgroup v2 host, that root's folders are closed to it (the test runs as root)."""
    host = _rootless_host()
    tasks = write_task(tmp_path / "tasks").parent
    folder = make_submission(tmp_path / "subs", "team_rl", save=False)
    env = {**os.environ, "DOCKER_HOST": host, "HARNESS_TASKS": str(tasks), "COLUMNS": "200"}
    env["HARNESS_CACHE"] = str(tmp_path / "cache")
    argv = [sys.executable, "-m", "harness.cli", str(folder), "--sandbox", "docker"]
    argv += ["--results", str(tmp_path / "results")]
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 2, done.stderr
    if not all(_docker_info(host)[k] for k in ("MemoryLimit", "PidsLimit")):
        assert done.stderr.splitlines() == [
            "error: the docker sandbox cannot run here: the Docker engine is rootless on a "
            "cgroup v1 host, so it cannot enforce the sandbox's memory and process limits",
            "hint: use --sandbox bwrap, or boot the host with cgroup v2 and delegate the cpu, "
            "memory and pids controllers to your user (Docker's rootless guide)",
        ]
    else:
        assert "cannot write root's folders" in done.stderr.splitlines()[0]
    assert not (tmp_path / "results").exists()  # refused before anything was graded


def _rootless_host() -> str:
    try:
        uid = pwd.getpwnam(ROOTLESS_USER).pw_uid
    except KeyError:
        pytest.fail(f"no user {ROOTLESS_USER} with a rootless engine: run scripts/system-deps")
    return f"unix:///run/user/{uid}/docker.sock"


def _docker_info(host: str | None) -> dict[str, Any]:
    argv = ["docker", *(["-H", host] if host else []), "info", "--format", "{{json .}}"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"{' '.join(argv)}: {done.stderr.strip()}"
    info: dict[str, Any] = json.loads(done.stdout)
    return info


@pytest.mark.docker
@pytest.mark.slow
def test_a_docker_group_member_grades_as_root_does(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same submission graded by root, then by ``MEMBER``, a user with only the docker
    socket's group, in a fork (so that the interpreter it imported as root needs no folder
    that user cannot reach): the same status and metrics, every file it wrote its own, its
    folders in /tmp closed to others while it grades, and the predictor's spool, read-only
    folders and all, gone at the batch's end. Run by a member of the group instead, the
    test grades twice as that member."""
    root = Path(tempfile.mkdtemp(prefix="harness-docker-user-"))
    try:
        os.chmod(root, 0o755)
        tasks = root / "tasks"
        write_task(tasks)
        folder = make_submission(root / "subs", "team_ta")
        monkeypatch.setenv("HARNESS_TASKS", str(tasks))
        monkeypatch.setenv("HARNESS_CACHE", str(root / "cache"))
        monkeypatch.setenv("HARNESS_SECRET_SEED", "docker-user")
        settings.cache_clear()
        report = root / "report.json"
        report.touch()
        pid = os.fork()
        if pid == 0:  # the child: grade, leave the report, never return into pytest
            try:
                _grade_as_root_then_as_a_member(root, folder, report)
            except BaseException as exc:
                report.write_text(json.dumps({"error": repr(exc)}))
            finally:
                os._exit(0)
        os.waitpid(pid, 0)
        seen = json.loads(report.read_text())
        assert "error" not in seen, seen
        assert seen["root"]["status"] == "graded", seen["root"]["message"]
        assert seen["member"]["status"] == "graded", seen["member"]["message"]
        assert seen["member"]["metrics"] == seen["root"]["metrics"]
        assert seen["member"]["sandbox"]["backend"] == "docker"
        member = seen["uid"]
        assert member != 0
        assert {p.stat().st_uid for p in (root / "member").rglob("*")} == {member}
        assert seen["spools"] == []  # its read-only request folders too, not only as root
        assert sorted(seen["modes"]) == ["mix", "spool", "ws", "zygote"]  # each kind seen
        assert set(seen["modes"].values()) == {"0o700"}  # no other user sees in
    finally:
        settings.cache_clear()
        shutil.rmtree(root, ignore_errors=True)


def _grade_as_root_then_as_a_member(root: Path, folder: Path, report: Path) -> None:
    """In the fork: its temporary folders under ``root`` (it ends without exit handlers),
    never the test process's, whose names it inherited."""
    runner_root.cache_clear()
    canary._shared.clear()
    tempfile.tempdir = str(root / "tmp")
    os.mkdir(tempfile.tempdir)
    options = GradeOptions(sandbox="docker", results_dir=root / "as-root", jobs=1)
    [as_root] = grade([folder], options=options)  # also imports what a grading needs
    made = [runner_root(), *(m.inputs_dir.parent for m in canary._shared.values())]
    for path in made:  # the fork's folders, made by root: the member makes its own
        assert path.is_relative_to(tempfile.tempdir)
        shutil.rmtree(path)
    runner_root.cache_clear()
    canary._shared.clear()
    if os.geteuid() == 0:
        for path in [root, *root.rglob("*")]:  # the member's files, as if it had made them
            os.lchown(path, MEMBER, MEMBER)
        os.setgroups([SOCKET.stat().st_gid])  # the docker group, whatever its number here
        os.setgid(MEMBER)
        os.setuid(MEMBER)
    options = GradeOptions(sandbox="docker", results_dir=root / "member", jobs=1)
    modes: dict[str, str] = {}

    def look(task: str, team: str, stage: str) -> None:  # the folders while it grades
        for entry in Path(tempfile.tempdir or "").glob("harness-*"):
            if not entry.name.startswith("harness-runner-"):  # the runner's code: public
                modes[entry.name.split("-")[1]] = oct(entry.stat().st_mode & 0o777)

    [member] = grade([folder], options=options, on_stage=look)
    fields = ("status", "message", "metrics", "sandbox")
    seen = {
        "root": {k: as_root.model_dump(mode="json")[k] for k in fields},
        "member": {k: member.model_dump(mode="json")[k] for k in fields},
        "uid": os.geteuid(),
        "modes": modes,
        "spools": sorted(p.name for p in Path(tempfile.tempdir).glob("harness-spool-*")),
    }
    report.write_text(json.dumps(seen))
