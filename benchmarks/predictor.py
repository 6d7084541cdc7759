"""Phase B per run vs one warm predictor per batch, side by side in one run.

For each isolated backend (bwrap, docker): N real checked programs (tiny linear models with
distinct weights, exported by the real phase A through the process backend and checked by
the host) predict the same inputs, first as N fresh ``backend.run`` calls (a sandbox and
an ``import torch`` each), then through one ``backend.predictor(policy)`` (one sandbox,
one import). Predictions must agree exactly. Prints totals, seconds per program and the
ratio, and writes the samples as JSON.

    python benchmarks/predictor.py [--programs 8] [--images 2000] [--backends bwrap,docker]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))  # the test kit

from kit.jobs import predict_run  # noqa: E402

from harness.program.check import check_program  # noqa: E402
from harness.program.records import Expect  # noqa: E402
from harness.runner.contract import PROGRAM  # noqa: E402
from harness.sandbox import RunJob, SandboxPolicy, get_backend  # noqa: E402
from harness.sandbox.process import ProcessBackend  # noqa: E402
from harness.staging import Workspace  # noqa: E402

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
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
"""
SHAPE = (1, 8, 8)
BATCH = 64
COMMON = {
    "normalize": None,
    "kind": "classification",
    "num_classes": 10,
    "input_shape": list(SHAPE),
    "device": "cpu",
    "threads": 1,
}


@dataclass
class Made:
    program: Path
    root: Path


def export(exporter: ProcessBackend, root: Path, seed: int) -> Path:
    ws = Workspace(root)
    source = root / "source"
    source.mkdir(parents=True)
    (source / "model.py").write_text(MODEL)
    g = torch.Generator().manual_seed(seed)
    save_file(
        {"1.weight": torch.randn(10, 64, generator=g), "1.bias": torch.randn(10, generator=g)},
        source / "w.safetensors",
    )
    spec = {
        **COMMON,
        "phase": "export",
        "entrypoint": "model:build_model",
        "weights": "w.safetensors",
        "export_batch": BATCH,
    }
    out = ws.output("export-out")
    outcome = exporter.run(
        RunJob(
            ws.stage("sub", source, ["model.py", "w.safetensors"]),
            ws.stage("none", source, []),
            ws.job("export-job", spec),
            out,
            POLICY,
        )
    )
    if outcome.status != "ok":
        raise SystemExit(f"phase A failed: {outcome.log[-2000:]}")
    checked = root / "checked.pt2"
    check_program(out / PROGRAM, checked, Expect((BATCH, *SHAPE), "classification", 10, 2**24))
    return checked


def predict_job(root: Path, name: str, program: Path, inputs: Path) -> RunJob:
    probe = {"count": 64, "seed": 1, "amplitude": 2}
    return predict_run(
        root, name, program, inputs, io=COMMON, batch=BATCH, probe=probe, policy=POLICY
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--programs", type=int, default=8)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--backends", default="bwrap,docker")
    parser.add_argument("--out", type=Path, default=None)
    a = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-predictor-"))
    inputs = tmp / "inputs"
    inputs.mkdir()
    rng = np.random.default_rng(0)
    np.save(inputs / "inputs.npy", rng.integers(0, 256, (a.images, *SHAPE), dtype=np.uint8))
    exporter = ProcessBackend()
    programs = [export(exporter, tmp / f"p{i}", i) for i in range(a.programs)]
    exporter.close()
    load0 = os.getloadavg()[0]
    rows: list[dict[str, Any]] = []
    for name in a.backends.split(","):
        backend = get_backend(name)
        t = time.perf_counter()
        fresh = [predict_job(tmp, f"{name}-run{i}", p, inputs) for i, p in enumerate(programs)]
        per_run = []
        for job in fresh:
            s = time.perf_counter()
            assert backend.run(job).status == "ok"
            per_run.append(time.perf_counter() - s)
        warm_jobs = [predict_job(tmp, f"{name}-warm{i}", p, inputs) for i, p in enumerate(programs)]
        warm = []
        with backend.predictor(POLICY) as predictor:
            for job in warm_jobs:
                s = time.perf_counter()
                outcome = predictor.predict(job)
                assert outcome.status == "ok", outcome.log
                warm.append(time.perf_counter() - s)
            starts = getattr(predictor, "starts", None)
        for f, w in zip(fresh, warm_jobs, strict=True):
            np.testing.assert_array_equal(
                np.load(f.output_dir / "predictions.npy"), np.load(w.output_dir / "predictions.npy")
            )
        rows.append(
            {
                "backend": name,
                "per_run_s": per_run,
                "warm_s": warm,
                "sandbox_starts": starts,
                "elapsed_s": time.perf_counter() - t,
            }
        )
    print(f"{a.programs} programs x {a.images} images, load average {load0:.2f} at the start")
    print(
        f"{'backend':8} {'per-run s':>10} {'warm s':>8} {'per-run/prog':>13} "
        f"{'warm/prog':>10} {'first warm':>11} {'ratio':>6}"
    )
    for r in rows:
        pr, w = sum(r["per_run_s"]), sum(r["warm_s"])
        print(
            f"{r['backend']:8} {pr:10.2f} {w:8.2f} {pr / a.programs:13.2f} "
            f"{w / a.programs:10.2f} {r['warm_s'][0]:11.2f} {pr / w:5.2f}x"
        )
    document = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "load_average_start": load0,
        "load_average_end": os.getloadavg()[0],
        "programs": a.programs,
        "images": a.images,
        "rows": rows,
    }
    if a.out:
        a.out.write_text(json.dumps(document, indent=2))


if __name__ == "__main__":
    main()
