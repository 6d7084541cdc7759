"""``grade serve``: keep every backend's runners and sandboxes warm between commands
(``sandbox/served.py``, ``served_sandboxes.py``)."""

from __future__ import annotations

import contextlib

import click

from .cli_options import debug_option, friendly


@click.command("serve")
@click.option(
    "--idle-minutes",
    type=click.FloatRange(min=0),
    default=120.0,
    show_default=True,
    help="Stop after this long without a command or a run (0: only when stopped).",
)
@debug_option("Show tracebacks.")
@friendly
def serve_cmd(idle_minutes: float, debug: bool) -> None:
    """Keep the sandboxes warm for this user's later `grade` commands.

    A `grade` command spends seconds before its first run starting its sandboxes and
    importing torch and the export stack into them. `grade serve` stays in the
    foreground (Ctrl-C stops it) and keeps them: the process backend's runners (warm
    at once) and bwrap's and docker's sandboxes (opened by the first command that
    needs them, then kept). Your later commands of this same harness and Python find
    it by themselves; each run is still a fresh run in its sandbox, under its task's
    limits. GPU runs are not served.
    """
    import signal

    from .console import say
    from .sandbox.process import ProcessBackend, server_env
    from .sandbox.served import serve_forever
    from .served_sandboxes import Broker
    from .settings import usable_cpus

    # the environments of this machine's usual runs: one thread each (--jobs = cores),
    # and two (one submission at a time, a task's default limits.cpus)
    warm = [server_env(threads) for threads in sorted({1, min(2, usable_cpus())})]
    signal.signal(signal.SIGTERM, _interrupt)  # stopped as by Ctrl-C

    def ready(path: object) -> None:
        say(f"serving warm sandboxes at {path} (Ctrl-C stops it)")

    def warmed(count: int, seconds: float) -> None:
        say(f"{count} of {len(warm)} process-backend runners imported and warm in {seconds:.1f} s")

    broker = Broker(usable_cpus())
    try:
        with contextlib.suppress(KeyboardInterrupt):
            serve_forever(
                ProcessBackend(),
                broker,
                idle_seconds=idle_minutes * 60,
                warm=warm,
                ready=ready,
                warmed=warmed,
            )
    finally:
        broker.close()
    say("stopped")


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


COMMANDS = (serve_cmd,)
