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
from typing import Any

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


def _child(mode: str, script: str = CHILD) -> dict[str, Any]:
    """``script`` in a fresh interpreter, with no malloc settings from the environment."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for name in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES"):
        env.pop(name, None)
    out = subprocess.run(
        [sys.executable, "-c", script, mode], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout)


def test_kept_memory_is_reused_by_the_next_batch_and_released_between_programs() -> None:
    default, kept = _child("default"), _child("keep")
    assert kept["took"] is True
    # 32 MiB is 8,192 pages: by default each batch's activations fault their pages in again
    assert default["faults"] > 10 * 2 * 8_192
    assert kept["faults"] < default["faults"] / 10  # the last batch's memory, reused
    assert kept["kept_mb"] - kept["released_mb"] > 24  # released: back to the kernel


# the same CNN through ``run_batches``, under an RLIMIT_DATA that leaves the run a lot of
# room ("room") or little ("tight": under twice what it uses after its first batch)
LIMITED = """
import json, resource, sys
from types import SimpleNamespace
import numpy as np, torch
from harness.runner.heap import memory_use, room_to_keep
from harness.runner.predict import run_batches

def vm_data():
    for line in open("/proc/self/status"):
        if line.startswith("VmData"):
            return int(line.split()[1]) * 1024

torch.set_num_threads(1)
net = torch.nn.Sequential(
    torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(16, 16, 3, padding=1)
).eval()
images = np.zeros((11 * 32, 1, 128, 128), dtype=np.uint8)
job = SimpleNamespace(batch_size=32, normalize=None, kind="classification", num_classes=16)
with torch.inference_mode():
    net(torch.rand(32, 1, 128, 128))  # the first batch's allocations, before the limit
room = 20 if sys.argv[1] == "room" else 1.6
limit = int(vm_data() * room)
resource.setrlimit(resource.RLIMIT_DATA, (limit, resource.RLIM_INFINITY))
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
run_batches(lambda x: net(x).mean(dim=(2, 3)), images, job, torch.device("cpu"))
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(json.dumps({"faults": faults, "use": memory_use(), "room": room_to_keep()}))
"""


def test_a_run_near_its_memory_limit_keeps_nothing() -> None:
    room, tight = _child("room", LIMITED), _child("tight", LIMITED)
    assert room["room"] is True and tight["room"] is False
    ((used, limit),) = tight["use"]  # RLIMIT_DATA, and what counts against it
    assert limit / 2 <= used < limit
    # 11 batches: with room, the first faults its activations in and the rest reuse them;
    # near the limit, each batch after the first gets fresh pages again, as by default
    assert room["faults"] < 4 * 2 * 8_192
    assert tight["faults"] > 9 * 2 * 8_192
