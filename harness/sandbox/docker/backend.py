"""``--sandbox docker``: one fresh container per run. The only module that imports ``docker``.

The container: no network; read-only root filesystem; a size-capped ``noexec`` tmpfs at
``/tmp``; all capabilities dropped; ``no-new-privileges``; a user that is not root on the
host (``sandbox_user``); the task's pids, memory (swap included: the same number) and CPU
limits as cgroup limits (an engine that cannot set them is refused);
``fsize``/``core``/``nofile`` rlimits. The job folders are bind mounts at ``MOUNTS``,
read-only except ``/output``. The environment holds ``SAFE_ENV`` and nothing of the host.
stdout/stderr are read over an attach stream with a byte budget (past it the container is
killed), the output folder is watched while it runs, and the wall clock kills it.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from functools import cached_property
from pathlib import Path
from typing import Any, NamedTuple

import docker
import docker.errors
import requests.exceptions
from docker.models.containers import Container
from docker.types import DeviceRequest, LogConfig, Mount, Ulimit

from ...devices import gpu_present
from ...errors import UserError
from ..base import MOUNTS, Predictor, RunJob, RunOutcome, SandboxPolicy
from ..confine import LogPump, exit_code_of, share_folders, supervised_argv, zygote_argv
from ..layout import SAFE_ENV, host_paths, runner_args, runner_root, thread_env
from ..predictor import SPOOL, Heard, Server, SpoolPredictor
from ..watch import Ending, outcome, watch
from ..zygote import Zygote, zygote_binds
from .engine import EngineFacts, client_or_error, engine_answers, engine_facts, image_info
from .image import GRADER_UID, default_tag

POLL_SECONDS = 0.25
LABEL = "harness.sandbox"


class SandboxUser(NamedTuple):
    spec: str  # the container's ``user`` option, "uid:gid"
    host_uid: int | None  # the uid to hand the writable folders to; None: the caller's


def sandbox_user(euid: int, egid: int, rootless: bool) -> SandboxUser:
    """Who a container runs as. A rootful engine called by root: the image's ``grader``
    (uid 1000), handed its folders. Called by anyone else (the ``docker`` group): that
    caller's own uid and gid, which own the folders already; uid 1000 could write them only
    if they were open to every user of the machine. A rootless engine: uid 0, which is the
    user that runs the engine (and the grading), with every capability dropped all the same."""
    if rootless:
        return SandboxUser("0:0", None)
    if euid == 0:
        return SandboxUser(f"{GRADER_UID}:{GRADER_UID}", GRADER_UID)
    return SandboxUser(f"{euid}:{egid}", None)


class DockerBackend:
    name = "docker"
    isolated = True

    def __init__(self, image: str | None = None) -> None:
        self._image = image
        self._hint = ""  # what to do about the last unavailable_reason

    @cached_property
    def client(self) -> docker.DockerClient:
        return client_or_error()

    @cached_property
    def image(self) -> str:
        """The image named, else the evaluation image of this harness and its torch (one
        image for CPU and GPU: PyPI's torch carries its CUDA libraries)."""
        return self._image or default_tag()

    @cached_property
    def facts(self) -> EngineFacts:
        return engine_facts(self.client)

    @cached_property
    def user(self) -> SandboxUser:
        return sandbox_user(os.geteuid(), os.getegid(), self.facts.rootless)

    def unavailable_reason(self) -> str | None:
        reason, self._hint = self._unavailable() or (None, "")
        return reason

    def unavailable_hint(self) -> str:
        return self._hint

    def _unavailable(self) -> tuple[str, str] | None:
        """Why this engine cannot grade, and what to do about it; None when it can."""
        if not engine_answers():
            return (
                "the Docker engine does not answer",
                "start it (`sudo systemctl start docker`) and run `grade image build`, "
                "or use --sandbox bwrap",
            )
        facts = self.facts
        if facts.unenforced:
            limits = " and ".join(facts.unenforced)
            if facts.rootless:
                v1 = facts.cgroup_version == "1"
                where = "on a cgroup v1 host" if v1 else "without its cgroup controllers"
                fix = "boot the host with cgroup v2 and delegate" if v1 else "delegate"
                return (
                    f"the Docker engine is rootless {where}, so it cannot enforce the "
                    f"sandbox's {limits} limits",
                    f"use --sandbox bwrap, or {fix} the cpu, memory and pids controllers to "
                    "your user (Docker's rootless guide)",
                )
            return (
                f"the Docker engine cannot enforce the sandbox's {limits} limits "
                "(its host lacks those cgroup controllers)",
                "use --sandbox bwrap, or enable the controllers (the kernel's "
                "cgroup_enable=memory) and restart the engine",
            )
        if facts.rootless and os.geteuid() == 0:
            return (
                "the Docker engine is rootless, so its containers cannot write root's folders",
                "grade as the user who runs that engine, or unset DOCKER_HOST to use the "
                "system's engine",
            )
        if not image_info(self.client, self.image, missing_ok=True):
            return (
                f"the evaluation image {self.image} is not built",
                "run `grade image build` (`--offline` where no registry answers)",
            )
        return None

    def describe(self) -> dict[str, str]:
        info = image_info(self.client, self.image)
        return {"image": self.image, "image_id": str(info["id"])}

    def run(self, job: RunJob) -> RunOutcome:
        share_folders(_read_only(job), job.output_dir, self.user.host_uid)
        t0 = time.perf_counter()
        paths = host_paths(job)
        mounts = [
            Mount(MOUNTS[key], paths[key], type="bind", read_only=key != "output")
            for key in MOUNTS
            if key != "submission" or job.mount_submission
        ]
        argv = supervised_argv("python3", _spec(job.policy), MOUNTS["code"], runner_args(MOUNTS))
        options = self._options(job.policy, mounts, argv, job.label or "run")
        container = self.client.containers.create(self.image, **options)
        try:
            return self._supervise(job, container, t0)
        finally:
            _remove(container)

    def predictor(self, policy: SandboxPolicy) -> Predictor:
        """A warm predictor: one container running ``harness.runner serve`` for a batch."""
        return SpoolPredictor(self.name, policy, self._serve, self.user.host_uid)

    def _serve(self, policy: SandboxPolicy, spool: Path, heard: Heard) -> Server:
        """Start the predictor's container: the runner's code and ``spool`` (read-write at
        ``/spool``), the same options as a run's otherwise (GPU included)."""
        mounts = [
            Mount(MOUNTS["code"], str(runner_root()), type="bind", read_only=True),
            Mount(SPOOL, str(spool), type="bind", read_only=False),
        ]
        argv = supervised_argv("python3", _spec(policy), MOUNTS["code"], ["serve", SPOOL])
        options = self._options(policy, mounts, argv, "predictor")
        container = self.client.containers.create(self.image, **options)
        try:
            return ContainerServer(container, policy, heard)
        except BaseException:
            _remove(container)
            raise

    def runner(self, policy: SandboxPolicy, preload: tuple[str, ...] = ()) -> Zygote:
        """A warm runner for the submissions' own runs: one zygote container for a batch."""
        return Zygote(
            self.name, policy, self._zygote, self.user.host_uid, self.run, preload=preload
        )

    def _zygote(
        self,
        policy: SandboxPolicy,
        folders: dict[str, Path],
        heard: Heard,
        preload: tuple[str, ...],
    ) -> Server:
        """Start the zygote's container: a fresh run's options with the zygote's folders
        (``sandbox/zygote.py``) and the zygote as its PID 1 (it supervises itself)."""
        mounts = [Mount(MOUNTS["code"], str(runner_root()), type="bind", read_only=True)]
        mounts += [
            Mount(target, source, type="bind", read_only=not writable)
            for source, target, writable in zygote_binds(folders)
        ]
        argv = zygote_argv("python3", _spec(policy), MOUNTS["code"], preload)
        options = self._options(policy, mounts, argv, "zygote")
        container = self.client.containers.create(self.image, **options)
        try:
            return ContainerServer(container, policy, heard)
        except BaseException:
            _remove(container)
            raise

    def _options(
        self, p: SandboxPolicy, mounts: list[Mount], argv: list[str], label: str
    ) -> dict[str, Any]:
        """A container's options; ``argv``: its first process (the supervisor's argv for
        a run or the predictor, the zygote's)."""
        rlimits = _rlimits(p)
        gpu = p.gpu and gpu_present()
        return {
            "command": argv,
            "user": self.user.spec,
            "environment": {
                **SAFE_ENV,
                **thread_env(p.cpus),
                "PYTHONPATH": MOUNTS["code"],
                "HOME": "/tmp",
            },
            "working_dir": "/tmp",
            "network_mode": "none",
            "read_only": True,
            "tmpfs": {"/tmp": f"size={p.tmpfs_bytes},mode=1777,noexec,nosuid,nodev"},
            "shm_size": p.tmpfs_bytes,
            "cap_drop": ["ALL"],
            "security_opt": ["no-new-privileges"],
            "pids_limit": p.pids,
            "mem_limit": p.memory_bytes,
            "memswap_limit": p.memory_bytes,
            "nano_cpus": int(p.cpus * 1e9),
            "ulimits": [Ulimit(name=k, soft=v, hard=v) for k, v in rlimits.items()],
            "mounts": mounts,
            "log_config": LogConfig(type="none"),
            "ipc_mode": "private",
            "hostname": "sandbox",
            "labels": {LABEL: label},
            "device_requests": [DeviceRequest(count=-1, capabilities=[["gpu"]])] if gpu else [],
        }

    def _supervise(self, job: RunJob, container: Container, t0: float) -> RunOutcome:
        p = job.policy
        stream, log = _attached(container, p)
        container.start()
        seen = watch(
            lambda: _exited(container),
            deadline=t0 + p.wall_seconds,
            policy=p,
            output_dir=job.output_dir,
            flooded=lambda: log.flooded,
        )
        _kill(container)
        end = _ending(container, log)
        end.info = {"image": self.image, "container": container.short_id}
        text = log.text(timeout=2.0)
        with contextlib.suppress(Exception):
            stream.close()
        return outcome(
            seen,
            end,
            policy=p,
            output_dir=job.output_dir,
            wall=time.perf_counter() - t0,
            log=text,
            backend=self.name,
        )


class ContainerServer:
    """A warm container (the predictor's or the zygote's), seen from the host
    (``predictor.Server``)."""

    def __init__(self, container: Container, p: SandboxPolicy, heard: Heard | None = None) -> None:
        self.container = container
        self.ident = container.short_id
        self.stream, self.log = _attached(container, p, heard)
        container.start()
        self._end: Ending | None = None

    def ended(self, seconds: float) -> bool:
        # the attach stream ends with the container: a cheap check before asking the engine
        if self.log.ended():  # the engine's wait takes no zero timeout
            return _exited(self.container, max(seconds, POLL_SECONDS))
        time.sleep(seconds)
        return False

    def ending(self) -> Ending:
        if self._end is None:
            self._end = _ending(self.container, self.log)
        return self._end

    def kill(self) -> None:
        _kill(self.container)
        self.ending()
        with contextlib.suppress(Exception):
            self.stream.close()
        _remove(self.container)


def _rlimits(p: SandboxPolicy) -> dict[str, int]:
    return {"fsize": p.output_bytes, "core": 0, "nofile": 1024}


def _spec(p: SandboxPolicy) -> dict[str, int]:
    """The rlimits again, for the first process, and its task watch (see ``confine``)."""
    return {**_rlimits(p), "tasks": p.pids}


def _attached(
    container: Container, p: SandboxPolicy, heard: Heard | None = None
) -> tuple[Any, LogPump]:
    stream = container.attach(stdout=True, stderr=True, stream=True, logs=False)
    chunks = iter(stream)
    log = LogPump(
        lambda: next(chunks, b""),
        keep=p.log_bytes,
        budget=p.output_bytes,
        on_chunk=heard,
        # kill from another thread: the pump must go on draining, or the engine, which
        # waits for the container's output to be read, never finishes the kill
        on_flood=lambda: threading.Thread(target=_kill, args=(container,), daemon=True).start(),
    )
    return stream, log


def _ending(container: Container, log: LogPump) -> Ending:
    state = _state(container)
    return Ending(
        exit_code_of(state.get("ExitCode")),
        flooded=log.flooded,
        out_of_memory=bool(state.get("OOMKilled")),
    )


def _remove(container: Container) -> None:
    with contextlib.suppress(docker.errors.APIError, requests.exceptions.RequestException):
        container.remove(force=True)


def _read_only(job: RunJob) -> list[Path]:
    return [job.submission_dir, job.inputs_dir, job.job_dir]


def _exited(container: Container, seconds: float = POLL_SECONDS) -> bool:
    try:
        container.wait(timeout=seconds)
    except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError):
        return False
    return True


def _kill(container: Container) -> None:
    with contextlib.suppress(docker.errors.APIError, requests.exceptions.RequestException):
        container.kill()


def _state(container: Container) -> dict[str, Any]:
    """The stopped container's state; ``UserError`` when the engine stops answering."""
    for _ in range(6):
        if _exited(container, 10.0):
            container.reload()
            return dict(container.attrs.get("State", {}))
        _kill(container)
    raise UserError(
        f"the Docker engine did not stop container {container.short_id} within a minute",
        "check `docker ps` and the engine's log",
    )
