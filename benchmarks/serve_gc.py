"""The warm predictor's collection after each request (``harness/runner/serve.py``), with
and without ``serve.settle`` (``gc.freeze`` after the server's imports), side by side.

Each side is a fresh interpreter that imports what the server imports (torch and the
phase-B stack), settles or not, predicts one batch through an exported program (a small
CNN, exported once beforehand) with phase B's graph interpreter as a request does, then
times the full collection that ``serve._free``
runs after every request: median of ``--repeat`` collections, CPU seconds.

    python benchmarks/serve_gc.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import gc, json, sys, time
import torch
from harness.runner import phase_b, serve
if sys.argv[1] == "settled":
    serve.settle()
# a request's work: the checked program through phase B's interpreter, one batch
from harness.runner.interpreter import Program
program = Program(sys.argv[3], torch.device("cpu"))
with torch.inference_mode():
    program(torch.rand(8, 1, 16, 16))
del program
times = []
for _ in range(int(sys.argv[2])):
    t = time.process_time()
    gc.collect()
    times.append(time.process_time() - t)
seen = {"tracked": len(gc.get_objects()), "frozen": gc.get_freeze_count(), "times": times}
print(json.dumps(seen))
"""

MAKE_PROGRAM = r"""
import sys, torch
from harness.runner.phase_a import save
model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.Flatten(), torch.nn.Linear(784, 1))
save(model.eval(), torch.zeros(8, 1, 16, 16), sys.argv[1])
"""


def side(kind: str, repeat: int, program: Path) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, kind, str(repeat), str(program)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    data = json.loads(out.strip().splitlines()[-1])
    return {
        "collect_cpu_s": round(statistics.median(data["times"]), 4),
        "tracked_objects": data["tracked"],
        "frozen_objects": data["frozen"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    a = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        program = Path(folder) / "program.pt2"
        subprocess.run([sys.executable, "-c", MAKE_PROGRAM, str(program)], cwd=ROOT, check=True)
        plain, settled = side("plain", a.repeat, program), side("settled", a.repeat, program)
    saved = plain["collect_cpu_s"] - settled["collect_cpu_s"]
    print(f"{'':28} {'without settle':>16} {'with settle':>14}")
    for key in plain:
        print(f"{key:28} {plain[key]:>16} {settled[key]:>14}")
    print(f"CPU saved per request: {saved:.4f} s (a batch of N submissions: N times that)")


if __name__ == "__main__":
    main()
