"""What a run is given, on every backend: the runner's code folder (mounted read-only at
``/opt/harness``), the runner's argv, where the job's folders sit on the host and inside
the sandbox, and the environment (``SAFE_ENV``, the math libraries' thread counts)."""

from __future__ import annotations

import shutil
from functools import cache
from pathlib import Path

from ..staging import process_temp
from .base import MOUNTS, RunJob

RUNNER_SOURCE = Path(__file__).resolve().parent.parent / "runner"


@cache
def runner_root() -> Path:
    """A folder holding only ``harness/__init__.py`` (empty) and ``harness/runner/``.

    Backends mount it read-only as ``/opt/harness``: the sandbox sees the runner's code
    and nothing else of the harness.
    """
    root = process_temp("harness-runner-")
    pkg = root / "harness"
    (pkg / "runner").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    for src in RUNNER_SOURCE.glob("*.py"):
        shutil.copy2(src, pkg / "runner" / src.name)
    return root


def runner_args(mapped: dict[str, str]) -> list[str]:
    """The runner's arguments (after ``python -m harness.runner``), given where each job
    folder appears to it."""
    return [
        "--job",
        mapped["job"],
        "--submission",
        mapped["submission"],
        "--inputs",
        mapped["inputs"],
        "--output",
        mapped["output"],
    ]


def host_paths(job: RunJob) -> dict[str, str]:
    return {
        "submission": str(job.submission_dir),
        "inputs": str(job.inputs_dir),
        "job": str(job.job_dir),
        "output": str(job.output_dir),
        "code": str(runner_root()),
    }


def sandbox_paths() -> dict[str, str]:
    return dict(MOUNTS)


SAFE_ENV = {
    "PYTHONDONTWRITEBYTECODE": "1",
    "PYTHONUNBUFFERED": "1",
    "PYTHONHASHSEED": "0",
    "LANG": "C.UTF-8",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}


def thread_env(cpus: float) -> dict[str, str]:
    """Thread counts for the math libraries: torch.set_num_threads does not lift
    MKL_NUM_THREADS=1, and a single-threaded MKL makes linear layers up to 1.6x slower."""
    threads = str(max(1, int(cpus)))
    return {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
