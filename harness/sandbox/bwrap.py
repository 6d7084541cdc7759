"""``--sandbox bwrap``: bubblewrap, for Linux laptops without Docker.

The same policy as the docker backend, built from namespaces and rlimits instead of
cgroups (which an unprivileged user usually cannot create):

- new user, PID, network, IPC, UTS and cgroup namespaces: no network but a private
  loopback; the sandbox's processes see only each other; no nested user namespaces;
- an empty root with read-only binds of ``/usr`` (and its ``/lib``, ``/bin`` links), the
  dynamic linker's cache, and the Python installation that runs the runner; the job
  folders at ``MOUNTS`` (read-only except ``/output``); a size-capped tmpfs at ``/tmp``;
  a fresh ``/proc`` and a minimal ``/dev`` whose ``/dev/shm`` is its own tmpfs with the
  ``/tmp`` cap; no host home, no ``/etc/passwd``;
- a seccomp filter with the denials of docker's default profile (``seccomp.py``);
- a scrubbed environment (``SAFE_ENV``), a new session (no terminal injection), and
  death with its parent;
- limits: processes and threads with RLIMIT_NPROC, counted per user namespace, so per
  sandbox; memory with RLIMIT_DATA per process (private writable mappings, with 256 MiB
  of slack for what torch maps but never touches; each forked process has its own); file size with
  RLIMIT_FSIZE; CPU time with RLIMIT_CPU; no core files; the wall clock from the host.

When the host runs as root, the sandbox runs as ``nobody``: root's processes are exempt
from RLIMIT_NPROC, and a sandbox owned by root could write any root-owned file that leaked
into it. ``nobody`` may not be able to reach the folders to bind (a Python under
``/root``, a job under a private temp folder), so a private mount namespace of the
launcher first binds each of them onto an empty folder it can reach (``unshare``), then
drops to ``nobody`` (``setpriv``) and starts bwrap; the host's mounts do not change.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from ..devices import gpu_device_nodes, gpu_library_dirs
from .base import MOUNTS, Predictor, RunJob, RunOutcome, SandboxPolicy
from .confine import (
    LogPump,
    exit_code_of,
    from_lasting_thread,
    kill_group,
    share_folders,
    supervised_argv,
    zygote_argv,
)
from .layout import SAFE_ENV, host_paths, runner_args, runner_root, thread_env
from .predictor import (
    SIGXCPU,
    SPOOL,
    Heard,
    ProcessServer,
    Server,
    SpoolPredictor,
    ended_within,
)
from .seccomp import SeccompUnavailable, program, program_fd
from .watch import Ending, outcome, watch
from .zygote import Zygote, zygote_binds

NOBODY = 65534
INSIDE_UID = 1000
POLL_SECONDS = 0.1
SYSTEM_RO = ("/usr", "/lib", "/lib64", "/lib32", "/bin", "/sbin")
ETC_RO = ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/localtime")
# RLIMIT_DATA counts private writable mappings, touched or not; after `import torch` they
# are ~250 MB more than the memory in use (which the docker backend's cgroup counts)
DATA_SLACK = 256 * 2**20


class BwrapBackend:
    name = "bwrap"
    isolated = True
    _probe: dict[str, str | None] = {}

    def __init__(self, python: str | None = None) -> None:
        self.python = python or sys.executable

    def unavailable_reason(self) -> str | None:
        found = self._unavailable()
        return found[0] if found else None

    def unavailable_hint(self) -> str:
        found = self._unavailable()
        return found[1] if found else ""

    def _unavailable(self) -> tuple[str, str] | None:
        """Why bwrap cannot sandbox here, and what to do about it; None when it can."""
        if shutil.which("bwrap") is None:
            return (
                "bubblewrap (bwrap) is not installed",
                "install bubblewrap (apt-get install bubblewrap), or use --sandbox docker",
            )
        if _as_nobody() and not (shutil.which("unshare") and shutil.which("setpriv")):
            return (
                "running as root needs util-linux's unshare and setpriv to drop to nobody",
                "install util-linux (apt-get install util-linux), grade as a plain user, "
                "or use --sandbox docker",
            )
        try:
            program()
        except SeccompUnavailable as exc:
            return (
                f"bwrap's seccomp filter cannot be built: {exc}",
                "install libseccomp (apt-get install libseccomp2), or use --sandbox docker",
            )
        if self.python not in self._probe:
            self._probe[self.python] = self._try()
        said = self._probe[self.python]
        if said is None:
            return None
        reason = f"bwrap could not start a sandbox ({said.removeprefix('bwrap: ')})"
        return reason, _refusal_hint(said)

    def _try(self) -> str | None:
        """bwrap's last line when it cannot start a sandbox here, else None."""
        binds = [Bind(p, p) for p in _python_prefixes(self.python)]
        with ExitStack() as stack:
            argv = self._argv(stack, binds, _env(1.0), 1 << 20)
            proc = _popen([*argv, self.python, "-I", "-c", "pass"], _fds(argv))
            out = proc.communicate(timeout=60)[0].decode(errors="replace").strip()
        if proc.returncode != 0:
            return (out.splitlines() or ["?"])[-1]
        return None

    def describe(self) -> dict[str, str]:
        version = subprocess.run(["bwrap", "--version"], capture_output=True, text=True)
        return {"bwrap": version.stdout.strip(), "python": self.python, "device": "cpu"}

    def run(self, job: RunJob) -> RunOutcome:
        p = job.policy
        share_folders(_read_only(job), job.output_dir, NOBODY if _as_nobody() else None)
        binds = [
            Bind(path, MOUNTS[key], writable=key == "output")
            for key, path in host_paths(job).items()
            if key != "submission" or job.mount_submission
        ]
        with ExitStack() as stack:
            t0 = time.perf_counter()
            inside = supervised_argv(self.python, _rlimits(p), MOUNTS["code"], runner_args(MOUNTS))
            proc = self._launch(stack, binds, p, inside)
            return self._supervise(job, proc, t0)

    def predictor(self, policy: SandboxPolicy) -> Predictor:
        """A warm predictor: one sandbox running ``harness.runner serve`` for a batch."""
        return SpoolPredictor(self.name, policy, self._serve, NOBODY if _as_nobody() else None)

    def _serve(self, policy: SandboxPolicy, spool: Path, heard: Heard) -> Server:
        """Start the predictor's sandbox: the runner's code, ``spool`` read-write at
        ``/spool``, nothing else of the host. No CPU-time rlimit: it serves many requests,
        each under the host's wall clock."""
        stack = ExitStack()
        binds = [Bind(str(runner_root()), MOUNTS["code"]), Bind(str(spool), SPOOL, writable=True)]
        limits = {k: v for k, v in _rlimits(policy).items() if k != "cpu"}
        try:
            inside = supervised_argv(self.python, limits, MOUNTS["code"], ["serve", SPOOL])
            proc = self._launch(stack, binds, policy, inside)
        except BaseException:
            stack.close()
            raise
        return ProcessServer(proc, policy, stack, heard)

    def runner(self, policy: SandboxPolicy, preload: tuple[str, ...] = ()) -> Zygote:
        """A warm runner for the submissions' own runs: one zygote sandbox for a batch."""
        uid = NOBODY if _as_nobody() else None
        return Zygote(self.name, policy, self._zygote, uid, self.run, _cpu_seconds, preload=preload)

    def _zygote(
        self,
        policy: SandboxPolicy,
        folders: dict[str, Path],
        heard: Heard,
        preload: tuple[str, ...],
    ) -> Server:
        """Start the zygote's sandbox: a fresh run's sandbox with the zygote's folders
        (``sandbox/zygote.py``) and the zygote as its PID 1; each run's CPU-time limit is
        set by the zygote in the run's fork."""
        stack = ExitStack()
        binds = [Bind(str(runner_root()), MOUNTS["code"])]
        binds += [
            Bind(source, target, writable) for source, target, writable in zygote_binds(folders)
        ]
        limits = {k: v for k, v in _rlimits(policy).items() if k != "cpu"}
        try:
            inside = zygote_argv(self.python, limits, MOUNTS["code"], preload)
            proc = self._launch(stack, binds, policy, inside)
        except BaseException:
            stack.close()
            raise
        return ProcessServer(proc, policy, stack, heard)

    def _launch(
        self,
        stack: ExitStack,
        binds: list[Bind],
        p: SandboxPolicy,
        inside: list[str],
    ) -> subprocess.Popen[bytes]:
        """Start ``inside`` (the supervisor's argv, or the zygote's) as PID 1 of a new
        sandbox with ``binds`` (and the Python installation); ``stack`` holds what must
        outlive it."""
        binds = [Bind(prefix, prefix) for prefix in _python_prefixes(self.python)] + binds
        env = _env(p.cpus)
        if p.gpu and (driver := _driver_folders()):  # staged like every bind (root host)
            binds += [Bind(folder, folder) for folder in driver if not _within(folder, SYSTEM_RO)]
            env["LD_LIBRARY_PATH"] = ":".join(driver)
        argv = self._argv(stack, binds, env, p.tmpfs_bytes, gpu=p.gpu)
        return _popen(argv + inside, _fds(argv))

    def _argv(
        self,
        stack: ExitStack,
        binds: list[Bind],
        env: dict[str, str],
        tmpfs: int,
        *,
        gpu: bool = False,
    ) -> list[str]:
        launcher: list[str] = []
        if _as_nobody():
            launcher, binds = _drop_to_nobody(stack, binds)
        argv = ["bwrap", "--unshare-all", "--unshare-user", "--disable-userns"]
        argv += ["--die-with-parent", "--new-session", "--as-pid-1"]
        argv += ["--uid", str(INSIDE_UID), "--gid", str(INSIDE_UID), "--hostname", "sandbox"]
        argv += ["--clearenv"]
        for key, value in env.items():
            argv += ["--setenv", key, value]
        for path in (*SYSTEM_RO, *ETC_RO):
            if os.path.islink(path):
                argv += ["--symlink", os.readlink(path), path]
            elif os.path.exists(path):
                argv += ["--ro-bind", path, path]
        argv += ["--proc", "/proc", "--dev", "/dev"]
        for node in gpu_device_nodes() if gpu else []:  # the NVIDIA driver's nodes only
            argv += ["--dev-bind", node, node]
        argv += ["--size", str(tmpfs), "--perms", "1777", "--tmpfs", "/tmp"]
        # POSIX shared memory: capped like /tmp (docker: shm_size), not bwrap's open /dev tmpfs
        argv += ["--size", str(tmpfs), "--perms", "1777", "--tmpfs", "/dev/shm"]
        argv += ["--remount-ro", "/dev"]  # bwrap's /dev is an uncapped tmpfs: nothing there
        seccomp_fd = program_fd()
        stack.callback(os.close, seccomp_fd)
        argv += ["--seccomp", str(seccomp_fd)]
        for bind in binds:
            argv += ["--bind" if bind.writable else "--ro-bind", bind.source, bind.target]
        # the root is bwrap's own tmpfs, unbounded: nothing may be written there
        return [*launcher, *argv, "--remount-ro", "/", "--chdir", "/tmp", "--"]

    def _supervise(self, job: RunJob, proc: subprocess.Popen[bytes], t0: float) -> RunOutcome:
        p = job.policy
        assert proc.stdout is not None
        log = LogPump.from_stream(
            proc.stdout,
            keep=p.log_bytes,
            budget=p.output_bytes,
            on_flood=lambda: kill_group(proc.pid),
        )
        seen = watch(
            lambda: ended_within(proc, POLL_SECONDS),
            deadline=t0 + p.wall_seconds,
            policy=p,
            output_dir=job.output_dir,
        )
        kill_group(proc.pid)
        proc.wait()
        code = exit_code_of(proc.returncode)
        end = Ending(code, flooded=log.flooded, timed_out=code == -SIGXCPU)
        return outcome(
            seen,
            end,
            policy=p,
            output_dir=job.output_dir,
            wall=time.perf_counter() - t0,
            log=log.text(timeout=2.0),
            backend=self.name,
        )


@dataclass(frozen=True)
class Bind:
    source: str
    target: str
    writable: bool = False


# where the sandbox's own mounts go: a driver folder may be none of these, nor hold one
OWN_PATHS = ("/tmp", "/dev", "/proc", "/ctl", "/log", SPOOL, *MOUNTS.values())


def _driver_folders() -> list[str]:
    """The GPU driver's library folders (``devices.gpu_library_dirs``) a GPU sandbox is
    given read-only at the same path, and named in its ``LD_LIBRARY_PATH``; never ``/`` or
    a folder that is, holds or lies in one of the sandbox's own mounts (the host's
    ``/tmp`` would cover the sandbox's own)."""
    return [
        folder
        for folder in gpu_library_dirs()
        if folder != "/"
        and not _within(folder, OWN_PATHS)
        and not any(_within(own, (folder,)) for own in OWN_PATHS)
    ]


def _within(path: str, roots: tuple[str, ...]) -> bool:
    """Whether ``path`` is one of ``roots`` or lies in one."""
    return any(path == root or path.startswith(root + "/") for root in roots)


# runs as root in a private mount namespace: bind each source onto its stage folder
_STAGE = """
stage=$1; shift; i=0
while [ "$1" != "--" ]; do
  mount --bind -- "$1" "$stage/$i" || exit 125
  i=$((i + 1)); shift
done
shift; exec "$@"
"""


def _drop_to_nobody(stack: ExitStack, binds: list[Bind]) -> tuple[list[str], list[Bind]]:
    """A launcher that stages ``binds`` where ``nobody`` can reach them, then drops to it."""
    stage = Path(tempfile.mkdtemp(prefix="harness-bwrap-"))
    os.chmod(stage, 0o755)
    stack.callback(_rmdir, stage)  # callbacks run last-in first-out: this one last
    staged = []
    for i, bind in enumerate(binds):
        (stage / str(i)).mkdir()
        staged.append(Bind(str(stage / str(i)), bind.target, bind.writable))
        stack.callback(_rmdir, stage / str(i))
    launcher = ["unshare", "--mount", "--propagation", "private", "--", "/bin/sh", "-c", _STAGE]
    launcher += ["sh", str(stage), *(b.source for b in binds), "--"]
    launcher += ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--"]
    return launcher, staged


def _cpu_seconds(policy: SandboxPolicy) -> int:
    """A run's CPU-time limit under ``policy`` (the zygote sets it in each run's fork)."""
    return _rlimits(policy)["cpu"]


def _rmdir(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.rmdir()  # never recursive: in the host's namespace the stage folders are empty


def _popen(argv: list[str], fds: tuple[int, ...] = ()) -> subprocess.Popen[bytes]:
    """bwrap, started from the launcher thread: ``--die-with-parent`` follows the thread
    that forks it (``from_lasting_thread``)."""
    return from_lasting_thread(
        lambda: subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
            pass_fds=fds,
        )
    )


def _fds(argv: list[str]) -> tuple[int, ...]:
    """The descriptors bwrap reads its options from (``--seccomp FD``), kept open for it."""
    return tuple(int(argv[i + 1]) for i, a in enumerate(argv[:-1]) if a == "--seccomp")


def _rlimits(p: SandboxPolicy) -> dict[str, int]:
    return {
        "nproc": p.pids,
        "data": p.memory_bytes + DATA_SLACK,
        "fsize": p.output_bytes,
        "cpu": math.ceil(p.wall_seconds * max(1.0, p.cpus)) + 1,
        "core": 0,
        "nofile": 1024,
        "tasks": p.pids,  # not an rlimit: the supervisor's watch (see confine)
    }


def _env(cpus: float) -> dict[str, str]:
    return {
        **SAFE_ENV,
        "PATH": "/usr/bin:/bin",
        "HOME": "/tmp",
        "TMPDIR": "/tmp",
        # the sandbox has no /etc/passwd: getpass.getuser() (torch's cache folders) reads these
        "USER": "sandbox",
        "LOGNAME": "sandbox",
        "PYTHONPATH": MOUNTS["code"],
        **thread_env(cpus),
    }


# what bwrap says when the kernel refuses it new user namespaces (sysctl, AppArmor, a
# container without them)
_NAMESPACE_WORDS = ("namespace", "uid map", "Permission denied", "Operation not permitted")


def _refusal_hint(said: str) -> str:
    """What to do about bwrap's refusal ``said`` (its last line)."""
    if any(word in said for word in _NAMESPACE_WORDS):
        return (
            "allow unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1 "
            "and user.max_user_namespaces above 0; on Ubuntu 24.04 also "
            "kernel.apparmor_restrict_unprivileged_userns=0 or an AppArmor profile for "
            "bwrap; in a container, run it with them allowed), or use --sandbox docker"
        )
    return "run `bwrap --ro-bind / / --unshare-all true` to see why, or use --sandbox docker"


@cache
def _python_prefixes(python: str) -> list[str]:
    """The folders the runner's Python needs: its venv and its base installation."""
    out = subprocess.run(
        [python, "-I", "-c", "import sys; print(sys.prefix); print(sys.base_prefix)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    prefixes = sorted({os.path.realpath(p) for p in out} | set(out))
    return [p for p in prefixes if not _within(p, SYSTEM_RO)]


def _read_only(job: RunJob) -> list[Path]:
    return [job.submission_dir, job.inputs_dir, job.job_dir]


def _as_nobody() -> bool:
    return os.geteuid() == 0
