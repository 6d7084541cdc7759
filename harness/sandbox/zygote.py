"""The submissions' own runs for a batch (phase A: convert, export, rebuild) through one
warm sandbox per backend and policy: the host side of ``runner/zygote.py``.

A fresh bwrap or docker run imports torch and the ``torch.export`` stack (seconds of CPU)
before it does anything; the zygote imports them once per batch and forks each run. The
sandbox is the backend's own (the same namespaces or container, seccomp filter, read-only
root, capped tmpfs, rlimits and cgroup limits as a fresh run) with these host folders:

=================  ==========  ==================================================
inside             access      holds
=================  ==========  ==================================================
``/submission``    read-only   this run's submission files (hard links, else copies)
``/inputs``        read-only   this run's inputs (none for phase A)
``/job``           read-only   this run's ``job.json``
``/ctl``           read-only   ``go``: the host's go for the next run (its token, limits)
``/output``        read-write  empty at each start; copied out once the run has ended
``/log``           read-write  ``<token>``: the run's stdout and stderr
``/opt/harness``   read-only   the runner's code
=================  ==========  ==================================================

The folders are bound once, at the sandbox's start; the host changes what is in them
between runs. The host fills a run's folders only after the zygote said the previous
run is over: its ``@zygote done SEQ STATUS OOM`` line comes on the zygote's own stdout, which
no run holds, after every other process of the sandbox was killed and ``/tmp``,
``/dev/shm`` and the SysV IPC objects were emptied. So no run sees another team's files,
and nothing one run leaves behind (a process, a file in ``/tmp``) meets the next.

The host enforces per run what ``Backend.run`` enforces: the wall clock (the first run's
also covers the sandbox's start), the output cap on ``/output``, the log cap and flood
limit on ``/log/<token>``; the sandbox as a whole has the policy's memory and process
limits, the run its CPU-time limit. A run that times out, breaks a limit or ends the
sandbox gets that outcome, the sandbox is killed, and the next run starts a fresh one. A
sandbox that ended between runs (killed from outside) is replaced before the next run is
handed over: no run pays for it, and the operator is warned.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import shutil
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path

from ..runner.emptying import empty_folder
from ..runner.zygote import DONE_LINE, GO, UNFIT
from ..safefs import discard, walk
from ..staging import owned_temp
from .base import MOUNTS, RunJob, RunOutcome, SandboxPolicy
from .confine import exit_code_of, hand_over, output_over
from .layout import host_paths
from .predictor import Heard, Server, WarmSandbox, answered, size_of
from .watch import Watched, watch

log = logging.getLogger(__name__)

POLL_SECONDS = 0.005
CTL, LOG = "/ctl", "/log"
READ_ONLY = ("submission", "inputs", "job", "ctl")
WRITABLE = ("output", "log")

# (policy, the zygote's folders, its stdout's listener, the batch's optional preloads)
StartZygote = Callable[[SandboxPolicy, dict[str, Path], Heard, tuple[str, ...]], Server]


def zygote_binds(folders: dict[str, Path]) -> list[tuple[str, str, bool]]:
    """(host folder, path inside, writable) for each of the zygote's folders."""
    inside = {**MOUNTS, "ctl": CTL, "log": LOG}
    return [(str(folders[k]), inside[k], k in WRITABLE) for k in (*READ_ONLY, *WRITABLE)]


class Zygote(WarmSandbox):
    """A warm runner for the submissions' own runs (see the module's docstring)."""

    kind = "zygote's sandbox"

    def __init__(
        self,
        backend: str,
        policy: SandboxPolicy,
        start: StartZygote,
        uid: int | None,
        fresh: Callable[[RunJob], RunOutcome],
        cpu_seconds: Callable[[SandboxPolicy], int | None] = lambda p: None,
        preload: tuple[str, ...] = (),
    ) -> None:
        """``uid``: the sandbox user's host uid when it differs from ours (root host);
        ``fresh``: the backend's run in a sandbox of its own, for every run once a zygote
        said it is unfit; ``cpu_seconds``: a run's CPU-time limit under its policy (None:
        none); ``preload``: the batch's optional preloads (``harness/preloads.py``)."""
        self.backend, self.policy, self._start, self.uid = backend, policy, start, uid
        self.fresh, self.cpu_seconds, self.preload = fresh, cpu_seconds, preload
        self.unfit = False  # a zygote could not import its stack: fresh sandboxes from now
        self._lock = threading.Lock()
        self._server: Server | None = None
        self._root: Path | None = None
        self._seq = 0
        self._ears = Ears()
        self.starts = 0  # sandboxes started, for tests and benchmarks

    def _close(self) -> None:
        self._stop()

    def run(self, job: RunJob) -> RunOutcome:
        with self._lock:
            if self.unfit:
                return self.fresh(job)
            try:
                outcome = self._run(job)
            except BaseException:  # the zygote and the host may be out of step: start over
                self._kill()
                raise
            if self._ears.unfit is not None:  # it served nothing: to a fresh sandbox
                said = self._ears.unfit
                self._stop()
                self.unfit = True
                log.warning(  # the operator's (the CLI prints it as a warning)
                    "the %s zygote could not import its stack, so each run of this batch "
                    "starts a sandbox of its own (slower): %s",
                    self.backend,
                    said,
                )
                return self.fresh(job)
            return outcome

    # -- one run ------------------------------------------------------------------------
    def _run(self, job: RunJob) -> RunOutcome:
        t0 = time.perf_counter()
        server, root = self._ensure()
        self._seq += 1
        seq, ears = self._seq, self._ears
        self._fill(job, root)
        token = secrets.token_hex(8)  # a run is named by nothing it could count
        go: dict[str, object] = {"token": token}
        if (cpu := self.cpu_seconds(job.policy)) is not None:
            go["cpu"] = cpu
        _write_atomic(root["ctl"] / GO, json.dumps(go))
        log_file = root["log"] / token
        p = job.policy
        seen = watch(
            lambda: ears.said(seq) or server.ended(POLL_SECONDS),
            deadline=t0 + p.wall_seconds,
            policy=p,
            output_dir=root["output"],
            flooded=lambda: _flooded(root["log"], log_file, p),
        )
        said = ears.done.get(seq)
        return self._finish(job, seq, log_file, said, server, seen, time.perf_counter() - t0)

    def _ensure(self) -> tuple[Server, dict[str, Path]]:
        """The running sandbox, else a fresh one on emptied folders (a new zygote counts
        its runs from 1 again, and would take a go left in ``/ctl`` for its first run)."""
        if self._ended_idle():
            self._kill()
        if self._server is None:
            if self._root is not None:  # a killed sandbox's last processes may still be ending
                discard(self._root)
            self._root = _folders(self.uid)
            self._seq, self._ears = 0, Ears()  # the last sandbox's late words go elsewhere
            self._server = self._start(self.policy, self._paths(), self._ears.hear, self.preload)
            self.starts += 1
        return self._server, self._paths()

    def _finish(
        self,
        job: RunJob,
        seq: int,
        log_file: Path,
        said: tuple[int, bool] | None,
        server: Server,
        seen: Watched,
        wall: float,
    ) -> RunOutcome:
        root = self._paths()
        if said is None or seen.timed_out or seen.killed_for:
            self._kill()  # the run is not over until its sandbox is gone
        if said is None:  # every word it said is heard (an unfit zygote's)
            server.log.text(timeout=2.0)
        result = answered(
            self.backend,
            job,
            server,
            seen,
            code=exit_code_of(said[0]) if said else None,
            out_of_memory=bool(said and said[1]),
            flooded=_flooded(root["log"], log_file, job.policy),
            output=root["output"],
            log_file=log_file,
            wall=wall,
            info={"runner": "zygote", "request": str(seq), "sandbox": server.ident},
            show_sandbox_log=False,
            sandbox="the sandbox",
        )
        if result.status in ("timeout", "killed"):
            self._kill()  # a limit the sandbox may still feel (tasks, memory): fresh start
        for key in WRITABLE:
            empty_folder(root[key])
        return result

    # -- folders ------------------------------------------------------------------------
    def _paths(self) -> dict[str, Path]:
        assert self._root is not None
        return {k: self._root / k for k in (*READ_ONLY, *WRITABLE)}

    def _fill(self, job: RunJob, root: dict[str, Path]) -> None:
        """This run's files into the read-only folders (emptied first: the previous run
        and every process it made are gone)."""
        sources = host_paths(job)
        for key in ("submission", "inputs", "job"):
            empty_folder(root[key])
            if key != "submission" or job.mount_submission:
                _place_tree(Path(sources[key]), root[key])

    def _kill(self) -> None:
        if self._server is not None:
            self._server.kill()
            self._server = None

    def _stop(self) -> None:
        self._kill()
        if self._root is not None:
            discard(self._root)
            self._root = None


class Ears:
    """One sandbox's stdout as it comes: the runs its zygote said are done."""

    def __init__(self) -> None:
        self.done: dict[int, tuple[int, bool]] = {}  # seq -> (exit code, OOM kill seen)
        self.unfit: str | None = None  # why the zygote could not import its stack (served nothing)
        self._heard = bytearray()
        self._said = threading.Condition()

    def hear(self, chunk: bytes) -> None:
        with self._said:
            self._heard += chunk
            *whole, rest = bytes(self._heard).split(b"\n")
            self._heard = bytearray(rest[-4096:])
            for line in whole:
                if line.startswith(UNFIT.encode()) and not self.done:  # before any run
                    self.unfit = line[len(UNFIT) :].decode(errors="replace").strip()
                match = DONE_LINE.fullmatch(line + b"\n")
                if match:
                    seq, code, oom = (int(g) for g in match.groups())
                    self.done[seq] = (code, bool(oom))
            self._said.notify_all()

    def said(self, seq: int) -> bool:
        """Whether run ``seq`` is done, waiting at most a poll interval."""
        with self._said:
            if seq not in self.done:
                self._said.wait(POLL_SECONDS)
            return seq in self.done


def _flooded(logs: Path, log_file: Path, p: SandboxPolicy) -> bool:
    """The run wrote its output cap to its log (the file-size rlimit, the same cap, stops
    the log there, so reaching it is the flood a fresh run's pipe shows), or filled the
    log folder past the output limit with files of its own."""
    return size_of(log_file) >= p.output_bytes or bool(output_over(logs, p))


def _folders(uid: int | None) -> Path:
    root = owned_temp("harness-zygote-")
    for key in (*READ_ONLY, *WRITABLE):
        (root / key).mkdir(mode=0o755)
        if key in WRITABLE:
            hand_over(root / key, uid)
    return root


def _place_tree(source: Path, target: Path) -> None:
    """Regular files and folders of ``source`` into ``target``: hard links where the
    filesystem allows (the sandbox sees them through a read-only bind), else copies."""
    for path, info, _depth in walk(source):
        rel = path.relative_to(source)
        if stat.S_ISDIR(info.st_mode):
            (target / rel).mkdir(exist_ok=True)
            os.chmod(target / rel, 0o755)
        elif stat.S_ISREG(info.st_mode):
            try:
                os.link(path, target / rel, follow_symlinks=False)
            except OSError:
                shutil.copyfile(path, target / rel, follow_symlinks=False)
            with contextlib.suppress(OSError):
                os.chmod(target / rel, (info.st_mode & 0o777) | 0o444)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name("." + path.name)
    tmp.write_text(text)
    os.chmod(tmp, 0o444)
    os.replace(tmp, path)
