"""Two per-grading costs of the grading process itself, before and after, side by side:

- **a prepared split in a fresh interpreter** (what every ``grade`` command does first on
  the MNIST, CIFAR-10, Fashion-MNIST and own-data tasks): reusing the cached split now, and
  the same with ``import torchvision.datasets`` first, which the data layer did at module
  level before (``harness/data/torchvision_sets.py``). CPU seconds of the child process,
  median of ``--repeat``;
- **the hidden split's fingerprint for a batch's documents**: PBKDF2 once per document
  (before), and once per split key in a process (now: ``harness.data.split_fingerprint``).

    python benchmarks/host_cost.py [--repeat 5] [--documents 100]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from harness.data import split_fingerprint  # noqa: E402
from harness.fixtures import write_mnist  # noqa: E402

# prepare every split of the mnist task (the cached arrays after the first call); BEFORE
# imports torchvision.datasets first, as the data layer's module did
CHILD = """
import resource, sys
from pathlib import Path
if sys.argv[3] == "before":
    import torchvision.datasets
from harness.data import prepare_split
from harness.tasks import load_task
task = load_task("mnist")
for split in (*task.splits.public, task.splits.hidden):
    prepare_split(task, split, data_root=Path(sys.argv[1]))
usage = resource.getrusage(resource.RUSAGE_SELF)
Path(sys.argv[2]).write_text(str(usage.ru_utime + usage.ru_stime))
"""


def _child_cpu(root: Path, env: dict[str, str], role: str) -> float:
    with tempfile.NamedTemporaryFile() as out:
        subprocess.run(
            [sys.executable, "-c", CHILD, str(root), out.name, role], env=env, check=True
        )
        return float(Path(out.name).read_text())


def prepared_split(repeat: int) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        write_mnist(root, seed=0)
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "HARNESS_TASKS": str(ROOT / "tasks"),
            "HARNESS_CACHE": str(Path(tmp) / "cache"),
            "HARNESS_SECRET_SEED": "11",
        }
        _child_cpu(root, env, "now")  # prepares the splits: every later run reuses them
        runs: dict[str, list[float]] = {"before": [], "now": []}
        for _ in range(repeat):  # alternated, so both see the same machine
            for role in runs:
                runs[role].append(_child_cpu(root, env, role))
        return statistics.median(runs["before"]), statistics.median(runs["now"])


def fingerprints(documents: int) -> tuple[float, float]:
    key = hashlib.sha256(b"benchmark split").hexdigest()
    t = time.process_time()
    for _ in range(documents):
        hashlib.pbkdf2_hmac("sha256", key.encode(), b"harness hidden split", 100_000)
    before = time.process_time() - t
    split_fingerprint.cache_clear()
    t = time.process_time()
    for _ in range(documents):
        split_fingerprint(key)
    return before, time.process_time() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=5, help="fresh interpreters per role")
    ap.add_argument("--documents", type=int, default=100, help="documents in the batch")
    a = ap.parse_args()
    rows = [
        ("prepared split, fresh interpreter (CPU s)", *prepared_split(a.repeat)),
        (f"split fingerprint, {a.documents} documents (CPU s)", *fingerprints(a.documents)),
    ]
    print(f"{'':48} {'before':>8} {'now':>8} {'now/before':>10}")
    for name, before, now in rows:
        print(f"{name:48} {before:8.3f} {now:8.3f} {now / before:10.3f}")


if __name__ == "__main__":
    main()
