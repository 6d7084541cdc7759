"""The body of a run forked from a pre-imported interpreter: the process backend's fork
server (``sandbox/forkserver.py``) and the zygote of bwrap and docker (``zygote.py``).
Standard library only."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Callable
from typing import NoReturn


def run_forked(
    log_fd: int,
    *,
    cwd: str,
    env: dict[str, str],
    argv: list[str],
    main: Callable[[], int],
    before: Callable[[], None] = lambda: None,
) -> NoReturn:
    """In the forked child: a session of its own, stdin from /dev/null, stdout and stderr
    into ``log_fd``; then ``before()`` (limits), ``cwd``, exactly ``env``, what a new
    interpreter would not share with its siblings, ``argv``; then ``main()``, whose
    status is the child's exit status. Never returns."""
    code = 1
    try:
        os.setsid()
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        os.close(null)
        os.close(log_fd)
        before()
        os.chdir(cwd)
        os.environ.clear()
        os.environ.update(env)
        fresh_interpreter_state()
        sys.argv = argv
        code = int(main() or 0)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code & 0xFF)


def fresh_interpreter_state() -> None:
    """What a new interpreter would not share with its siblings: temp dir, seeds, signals."""
    import random
    import tempfile

    tempfile.tempdir = None  # recomputed from the run's TMPDIR
    random.seed()
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        numpy.random.seed()
    torch = sys.modules.get("torch")
    if torch is not None:  # a new interpreter starts from torch's fixed default seed
        torch.manual_seed(torch.initial_seed())
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
