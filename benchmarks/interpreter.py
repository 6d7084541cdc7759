"""Phase B's graph interpreter against eager PyTorch, side by side in one run.

For each task's reference model (random weights; timing needs no training): export it at
the task's batch size, check it as the host does, then time ``model(x)`` (eager), the
interpreter (``harness.runner.interpreter.Program``), the interpreter with 2-D
convolutions channels-last (``channels_last=True``: what phase B runs on a CPU) and
``ExportedProgram.module()`` on the same batches, one thread, interleaved rounds; and
the largest difference of the channels-last outputs from eager on one batch.

    python benchmarks/interpreter.py              # all references, 3 rounds of 4 batches
    python benchmarks/interpreter.py --references correlation --rounds 5
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from harness.program.check import Expect, check_program  # noqa: E402
from harness.runner.interpreter import Program  # noqa: E402
from harness.tasks import load_task  # noqa: E402


def _model(name: str) -> torch.nn.Module:
    path = ROOT / "reference_solutions" / name / "model.py"
    spec = importlib.util.spec_from_file_location(f"ref_{name.replace('-', '_')}", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    torch.manual_seed(0)
    return module.build_model().eval()


def _time(fn: Any, batches: list[torch.Tensor]) -> float:
    with torch.inference_mode():
        fn(batches[0])  # warm
        t0 = time.perf_counter()
        for x in batches:
            fn(x)
    return (time.perf_counter() - t0) / len(batches)


def bench(name: str, rounds: int, count: int, work: Path) -> dict[str, Any]:
    """``name``: a reference folder (``fashion-mnist/bn-cnn``); its task is the first part."""
    task_id = name.partition("/")[0]
    task = load_task(task_id)
    shape = (task.batch_size, *task.input_shape)
    model = _model(name)
    with torch.no_grad():
        exported = torch.export.export(model, (torch.rand(shape),), strict=False)
    stem = name.replace("/", "-")
    raw, clean = work / f"{stem}.pt2", work / f"{stem}-clean.pt2"
    torch.export.save(exported, str(raw))
    expect = Expect(shape, task.kind, task.num_classes, 2**31)
    check_program(raw, clean, expect)
    program = Program(clean, torch.device("cpu"))
    fast = Program(clean, torch.device("cpu"), channels_last=True)
    module = exported.module()
    batches = [torch.rand(shape) for _ in range(count)]
    times: dict[str, list[float]] = {"eager": [], "interpreter": [], "channels_last": []}
    times["module"] = []
    for _ in range(rounds):
        times["eager"].append(_time(model, batches))
        times["interpreter"].append(_time(program, batches))
        times["channels_last"].append(_time(fast, batches))
        times["module"].append(_time(module, batches))
    med = {k: statistics.median(v) for k, v in times.items()}
    with torch.inference_mode():
        diff = (fast(batches[0]) - model(batches[0])).abs().max().item()
    return {
        "reference": name,
        "batch": shape[0],
        "seconds_per_batch": {k: round(v, 5) for k, v in med.items()},
        "interpreter_over_eager": round(med["interpreter"] / med["eager"], 3),
        "channels_last_over_eager": round(med["channels_last"] / med["eager"], 3),
        "module_over_eager": round(med["module"] / med["eager"], 3),
        "channels_last_max_abs_diff": diff,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    every = "correlation,mnist,cifar10,cifar10-resnet,fashion-mnist/bn-cnn"
    ap.add_argument("--references", default=every)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batches", type=int, default=4)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "interpreter.json")
    a = ap.parse_args()
    torch.set_num_threads(1)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in a.references.split(","):
            row = bench(name, a.rounds, a.batches, Path(tmp))
            rows.append(row)
            s = row["seconds_per_batch"]
            print(
                f"{name:22s} batch {row['batch']:4d}  eager {s['eager']:.4f} s  "
                f"interpreter {s['interpreter']:.4f} s ({row['interpreter_over_eager']:.2f}x)  "
                f"channels-last {s['channels_last']:.4f} s "
                f"({row['channels_last_over_eager']:.2f}x, max diff "
                f"{row['channels_last_max_abs_diff']:.1e})  "
                f"module() {s['module']:.4f} s ({row['module_over_eager']:.2f}x)",
                flush=True,
            )
    a.out.write_text(json.dumps({"torch": torch.__version__, "threads": 1, "rows": rows}, indent=1))
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
