"""``python -m harness.runner serve SPOOL``: the warm predictor's server (phase B for a
batch). Standard library and torch only; the host side is ``sandbox/predictor.py``.

It imports torch once, then serves requests from ``SPOOL`` one at a time, in the order of
their numbers: a request is ``SPOOL/<seq>/`` with ``job/``, ``inputs/``, an empty ``out/``
and, written last by the host, ``ready``. For each it runs the same phase-B code as a
fresh run (``run`` is the runner's ``main`` body: same report.json, exit code 0 ok, 3
failed) with stdout and stderr sent to ``<seq>/log``, writes ``<seq>/done`` holding the
exit code, frees the program (the CUDA cache, and the memory its batches kept:
``heap.py``), and waits for the next. The host removes each request's folder once read
and kills the sandbox to stop it (or writes ``SPOOL/stop``).
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from .heap import release_freed_memory

POLL_SECONDS = 0.002
IMPORTED = "serve: torch imported"  # the server's first words, which the host waits for
NO_SUBMISSION = Path("/submission")  # never mounted in the predictor's sandbox

Run = Callable[[argparse.Namespace], int]


def serve(argv: list[str], run: Run) -> int:
    spool = Path(argv[0])
    t = time.perf_counter()
    import torch  # noqa: F401  (the point: imported once for the batch)

    from . import phase_b  # noqa: F401  (and the phase-B stack with it)

    settle()
    took = time.perf_counter() - t
    print(f"{IMPORTED} in {took:.2f} s (pid {os.getpid()})", flush=True)
    served = 0
    while not (spool / "stop").exists():
        request = _next(spool)
        if request is None:
            time.sleep(POLL_SECONDS)
            continue
        served += 1
        code = _handle(request, served, spool, run)
        tmp = request / ".done"
        tmp.write_text(str(code))
        os.replace(tmp, request / "done")
        _free()
    return 0


def settle() -> None:
    """Move what the imports made out of the garbage collector's sight (``gc.freeze``):
    modules, functions and torch's operator tables live as long as the server, so the
    full collection after each request (``_free``) need walk only what the request
    made. With torch imported that collection took about 0.1 s of CPU per request
    (``benchmarks/serve_gc.py``), beside the other gradings' predictions."""
    gc.collect()
    gc.freeze()


def _next(spool: Path) -> Path | None:
    """The lowest-numbered request that is ready and not done."""
    numbers = sorted(int(n) for n in os.listdir(spool) if n.isdigit())
    for n in numbers:
        folder = spool / str(n)
        if (folder / "ready").exists() and not (folder / "done").exists():
            return folder
    return None


def _handle(request: Path, served: int, spool: Path, run: Run) -> int:
    """Run one request with its stdout and stderr in its own log file."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    fd = os.open(request / "log", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        print(
            f"serve: request {served} of this interpreter (pid {os.getpid()}); "
            f"the spool holds {sorted(os.listdir(spool))}; "
            f"{len(gc.get_objects())} objects before the collector",
            flush=True,
        )
        args = argparse.Namespace(
            job=request / "job",
            submission=NO_SUBMISSION,
            inputs=request / "inputs",
            output=request / "out",
        )
        return run(args)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for f in (fd, *saved):
            os.close(f)


def _free() -> None:
    gc.collect()  # the request's own cycles (``settle`` froze the rest)
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        torch.cuda.empty_cache()
    release_freed_memory()  # what the program's batches kept (``heap.py``)
