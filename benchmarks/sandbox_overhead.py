"""Per-submission overhead of each sandbox backend, side by side in one run.

Two numbers per backend, measured round-robin (so load drifts hit every backend alike):

- ``start``: the sandbox alone, with the backend's real options: a container created,
  started, waited for and removed (docker); the launcher and bwrap (bwrap); a plain
  child process (process), each running ``python -c pass``;
- ``run``: one whole runner invocation as the pipeline makes it: ``backend.run(job)`` on a
  tiny eager job (a linear model, 8 images 1x8x8), so ``import torch`` included.

``process`` is the reference: ``process`` itself runs from a pre-imported fork server,
``process-fresh`` starts a new interpreter per run like the isolated backends' own runs
do. ``bwrap-zygote`` and ``docker-zygote`` run the job through the backend's warm runner
(``sandbox/zygote.py``: one sandbox for all rounds, each run a fork of its pre-imported
zygote; its start is in the dropped first round, so ``start`` is 0).

    python benchmarks/sandbox_overhead.py [--repeat 5] [--out benchmarks/sandbox_overhead.json]

Prints a table of medians with each backend's extra seconds and ratio over
``process-fresh``, and writes every sample as JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))  # the test kit

from kit.jobs import eager_spec  # noqa: E402

from harness.runner.contract import JOB_FILE, to_json  # noqa: E402
from harness.sandbox import RunJob, RunOutcome, SandboxPolicy, get_backend  # noqa: E402
from harness.sandbox.base import Backend  # noqa: E402
from harness.sandbox.process import ProcessBackend  # noqa: E402

POLICY = SandboxPolicy(
    wall_seconds=300,
    memory_bytes=2 * 2**30,
    pids=64,
    cpus=1,
    tmpfs_bytes=64 * 2**20,
    output_bytes=64 * 2**20,
    log_bytes=64 * 1024,
)
MODEL = """
import torch


def build_model():
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 3))
"""


def make_job(root: Path) -> RunJob:
    import torch
    from safetensors.torch import save_file

    sub, inputs, job, out = (root / n for n in ("sub", "inputs", "job", "out"))
    for folder in (sub, inputs, job, out):
        folder.mkdir(parents=True)
    (sub / "model.py").write_text(MODEL)
    state = {"1.weight": torch.randn(3, 64), "1.bias": torch.zeros(3)}
    save_file(state, str(sub / "weights.safetensors"))
    images = np.random.default_rng(0).integers(0, 255, (8, 1, 8, 8), dtype=np.uint8)
    np.save(inputs / "inputs.npy", images)
    spec = eager_spec(batch_size=8)
    (job / JOB_FILE).write_text(to_json(spec))
    return RunJob(sub, inputs, job, out, POLICY, label="benchmark")


def start_docker(backend: Any, job: RunJob) -> None:
    options = backend._options(job.policy, [], ["python3", "-I", "-c", "pass"], "benchmark")
    container = backend.client.containers.create(backend.image, **options)
    try:
        container.start()
        container.wait(timeout=120)
    finally:
        container.remove(force=True)


def start_bwrap(backend: Any, job: RunJob) -> None:
    from harness.sandbox import bwrap

    binds = [bwrap.Bind(p, p) for p in bwrap._python_prefixes(backend.python)]
    with ExitStack() as stack:
        argv = backend._argv(stack, binds, bwrap._env(1.0), POLICY.tmpfs_bytes)
        command = [*argv, backend.python, "-I", "-c", "pass"]
        subprocess.run(command, check=True, pass_fds=bwrap._fds(argv))  # the seccomp filter


def start_process(_backend: Any, _job: RunJob) -> None:
    subprocess.run([sys.executable, "-I", "-c", "pass"], check=True)


def start_nothing(_backend: Any, _job: RunJob) -> None:
    pass


Run = Callable[[RunJob], RunOutcome]
Start = Callable[[Any, RunJob], None]


def backends(stack: ExitStack) -> dict[str, tuple[Backend, Start, Run]]:
    process, fresh = ProcessBackend(), ProcessBackend(fork=False)
    found: dict[str, tuple[Backend, Start, Run]] = {
        "process": (process, start_process, process.run),
        "process-fresh": (fresh, start_process, fresh.run),
    }
    for name, start in (("bwrap", start_bwrap), ("docker", start_docker)):
        try:
            backend = get_backend(name)
        except Exception as exc:  # report what could not run; measure the rest
            print(f"{name}: not measured ({exc})", file=sys.stderr)
            continue
        found[name] = (backend, start, backend.run)
        zygote = stack.enter_context(contextlib.closing(backend.runner(POLICY)))
        found[f"{name}-zygote"] = (backend, start_nothing, zygote.run)
    return found


def measure(repeat: int) -> dict[str, dict[str, list[float]]]:
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="sandbox-bench-") as tmp:
        chosen = backends(stack)
        samples: dict[str, dict[str, list[float]]] = {n: {"start": [], "run": []} for n in chosen}
        for i in range(repeat + 1):  # the first round warms caches and is dropped
            for name, (backend, start, run) in chosen.items():
                job = make_job(Path(tmp) / f"{name}-{i}")
                t = time.perf_counter()
                start(backend, job)
                started = time.perf_counter() - t
                outcome = run(job)
                if outcome.status != "ok":
                    raise SystemExit(f"{name}: the benchmark job ended {outcome.status}")
                if i:
                    samples[name]["start"].append(started)
                    samples[name]["run"].append(outcome.wall_seconds)
    return samples


def summarize(samples: dict[str, dict[str, list[float]]]) -> dict[str, dict[str, float]]:
    base = {k: statistics.median(v) for k, v in samples["process-fresh"].items()}
    table = {}
    for name, kinds in samples.items():
        row: dict[str, float] = {}
        for kind, values in kinds.items():
            median = statistics.median(values)
            row[f"{kind}_median_s"] = round(median, 3)
            row[f"{kind}_min_s"] = round(min(values), 3)
            row[f"{kind}_extra_s"] = round(median - base[kind], 3)
            row[f"{kind}_ratio"] = round(median / base[kind], 2)
        table[name] = row
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).resolve().parent / "sandbox_overhead.json"
    )
    args = parser.parse_args()
    samples = measure(args.repeat)
    table = summarize(samples)
    print(f"{'backend':14s} {'start (s)':>10s} {'x':>6s} {'run (s)':>9s} {'+s':>7s} {'x':>6s}")
    for name, row in table.items():
        print(
            f"{name:14s} {row['start_median_s']:10.3f} {row['start_ratio']:6.2f} "
            f"{row['run_median_s']:9.3f} {row['run_extra_s']:+7.3f} {row['run_ratio']:6.2f}"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "benchmark": "sandbox_overhead",
        "reference": "process-fresh",
        "repeat": args.repeat,
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "load_average": os.getloadavg(),
        },
        "summary": table,
        "samples": samples,
    }
    args.out.write_text(json.dumps(document, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
