"""The C heap of a predicting run (``harness/runner/heap.py``): with ``keep_freed_memory``
a batch's large tensors reuse the memory the last batch freed instead of fresh pages from
the kernel, and ``release_freed_memory`` (a warm predictor, between programs) hands that
memory back. Each case runs in a fresh interpreter: the settings last for the process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# a small CNN predicts 10 batches, as phase B does; prints the page faults of those
# batches (after a first one), and the RSS after them and after a release
CHILD = """
import json, resource, sys
import torch
from harness.runner.heap import keep_freed_memory, release_freed_memory

def rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024

torch.set_num_threads(1)
took = keep_freed_memory() if sys.argv[1] == "keep" else None
net = torch.nn.Sequential(
    torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(16, 16, 3, padding=1)
).eval()
batch = torch.rand(32, 1, 128, 128)  # activations of 32 MiB each
with torch.inference_mode():
    net(batch)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(10):
        net(batch)
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
kept = rss_mb()
release_freed_memory()
print(json.dumps({"took": took, "faults": faults, "kept_mb": kept, "released_mb": rss_mb()}))
"""


def _child(mode: str) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for name in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES"):
        env.pop(name, None)
    out = subprocess.run(
        [sys.executable, "-c", CHILD, mode], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout)


def test_kept_memory_is_reused_by_the_next_batch_and_released_between_programs() -> None:
    default, kept = _child("default"), _child("keep")
    assert kept["took"] is True
    # 32 MiB is 8,192 pages: by default each batch's activations fault their pages in again
    assert default["faults"] > 10 * 2 * 8_192
    assert kept["faults"] < default["faults"] / 10  # the last batch's memory, reused
    assert kept["kept_mb"] - kept["released_mb"] > 24  # released: back to the kernel
