"""The supervision core of the isolated backends (bwrap, docker) and of their warm
predictors: one watch loop (wall clock, output folder, log flood) and one way to turn
what it saw into a ``RunOutcome``. Each backend supplies only how to ask "has it ended?"
for its kind of sandbox (a process, a container, a request's done marker)."""

from __future__ import annotations

import contextvars
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .base import RunOutcome, SandboxPolicy
from .confine import output_over, verdict

# set by ``grade serve`` around a run it does for a command: true once that command is
# gone (stopped, killed), so nobody waits for the outcome; the sandbox is killed as for a limit
ABANDONED: contextvars.ContextVar[Callable[[], bool]] = contextvars.ContextVar(
    "abandoned", default=lambda: False
)
ABANDONED_REASON = "the command that asked for this run stopped"


@dataclass
class Watched:
    """What the watch loop saw: the wall clock passed, or a limit it kills for."""

    timed_out: bool = False
    killed_for: str = ""


def watch(
    ended: Callable[[], bool],
    *,
    deadline: float,
    policy: SandboxPolicy,
    output_dir: Path,
    flooded: Callable[[], bool] = lambda: False,
) -> Watched:
    """Loop until ``ended()`` (which waits a poll interval itself), the log floods, the
    wall clock passes ``deadline`` (``time.perf_counter``), ``output_dir`` passes the
    output limit, or the command the run is for is gone (``ABANDONED``). The caller kills
    the sandbox afterwards in every case but a clean end."""
    abandoned = ABANDONED.get()
    while not ended() and not flooded():
        if time.perf_counter() > deadline:
            return Watched(timed_out=True)
        over = output_over(output_dir, policy)
        if over:
            return Watched(killed_for=over)
        if abandoned():
            return Watched(killed_for=ABANDONED_REASON)
    return Watched()


def log_limit(policy: SandboxPolicy) -> str:
    return f"log limit: more than {policy.output_bytes / 2**20:g} MiB on stdout/stderr"


@dataclass
class Ending:
    """How a run ended, as the backend saw it after the watch: the exit code (``-N`` for
    signal N), and the limits it knows of (the log flooded, the engine's OOM kill)."""

    exit_code: int | None
    flooded: bool = False
    out_of_memory: bool = False
    timed_out: bool = False  # also: the kernel's CPU-time signal
    info: dict[str, str] = field(default_factory=dict)


def outcome(
    seen: Watched,
    end: Ending,
    *,
    policy: SandboxPolicy,
    output_dir: Path,
    wall: float,
    log: str,
    backend: str,
) -> RunOutcome:
    """The verdict on a watched run, with the same order of reasons on every backend."""
    killed_for = seen.killed_for
    if end.flooded:
        killed_for = log_limit(policy)
    elif not killed_for and end.out_of_memory:
        killed_for = f"memory limit of {policy.memory_bytes / 2**20:g} MiB"
    status, reason = verdict(
        end.exit_code,
        timed_out=seen.timed_out or end.timed_out,
        policy=policy,
        output_dir=output_dir,
        killed_for=killed_for,
    )
    return RunOutcome(
        status=status,
        exit_code=end.exit_code,
        wall_seconds=wall,
        log=log,
        output_dir=output_dir,
        reason=reason,
        backend=backend,
        info=end.info,
    )
