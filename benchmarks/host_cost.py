"""Three per-grading costs of the grading process itself, before and after, side by side:

- **a prepared split in a fresh interpreter** (what every ``grade`` command does first on
  the MNIST, CIFAR-10, Fashion-MNIST and own-data tasks): reusing the cached split now, and
  the same with ``import torchvision.datasets`` first, which the data layer did at module
  level before (``harness/data/torchvision_sets.py``). CPU seconds of the child process,
  median of ``--repeat``;
- **the hidden split's fingerprint for a batch's documents**: PBKDF2 once per document
  (before), and once per split key in a process (now: ``harness.data.split_fingerprint``);
- **the canaries mixed into the hidden inputs** (every grading of a generated task): the
  mixed array built in memory from the memory-mapped split, then saved (before), and
  written a few rows at a time (now: ``harness.canary.mix``). CPU seconds, and the peak
  RSS above the process's RSS before the mix, of a fresh interpreter on a split of
  ``--images`` 150x150 images and 64 canaries; median of ``--repeat``.

    python benchmarks/host_cost.py [--repeat 5] [--documents 100] [--images 5000]
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

import numpy as np

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


# mix 64 canaries into the split at argv[1]; BEFORE is the in-memory mix canary.mix was
MIX_CHILD = """
import resource, sys, time
from pathlib import Path
from types import SimpleNamespace
import numpy as np
from harness import canary
from harness.settings import settings

def rss(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) / 1024

def before(split, images, labels, folder, key):
    secret, _ = settings().hidden_seed()
    hidden = np.load(split.inputs_path, mmap_mode="r")
    n, k = len(hidden), len(images)
    order = np.random.default_rng(canary._seed("mix", secret, key)).permutation(n + k)
    mixed = np.empty((n + k, *hidden.shape[1:]), dtype=np.uint8)
    mixed[order[:n]] = hidden
    mixed[order[n:]] = images
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "inputs.npy", mixed, allow_pickle=False)

split = SimpleNamespace(inputs_path=Path(sys.argv[1]))
images = np.random.default_rng(1).integers(0, 256, (64, 1, 150, 150), dtype=np.uint8)
mix = before if sys.argv[3] == "before" else canary.mix
start, t = rss("VmRSS"), time.process_time()
mix(split, images, np.zeros(64), Path(sys.argv[2]), "key")
cpu = time.process_time() - t
print(cpu, rss("VmHWM") - start)
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


def canary_mix(repeat: int, images: int) -> tuple[tuple[float, float], tuple[float, float]]:
    """(CPU s, peak RSS growth MB), before and now."""
    with tempfile.TemporaryDirectory() as tmp:
        split = Path(tmp) / "inputs.npy"
        rng = np.random.default_rng(0)
        np.save(split, rng.integers(0, 256, (images, 1, 150, 150), dtype=np.uint8))
        env = {**os.environ, "PYTHONPATH": str(ROOT), "HARNESS_SECRET_SEED": "11"}
        runs: dict[str, list[tuple[float, float]]] = {"before": [], "now": []}
        for _ in range(repeat):
            for role in runs:
                out = subprocess.run(
                    [sys.executable, "-c", MIX_CHILD, str(split), f"{tmp}/{role}", role],
                    env=env,
                    check=True,
                    capture_output=True,
                    text=True,
                ).stdout.split()
                runs[role].append((float(out[0]), float(out[1])))
        same = np.array_equal(np.load(f"{tmp}/before/inputs.npy"), np.load(f"{tmp}/now/inputs.npy"))
        if not same:
            sys.exit("the two mixes differ")
        return tuple(  # type: ignore[return-value]
            (
                statistics.median(r[0] for r in runs[role]),
                statistics.median(r[1] for r in runs[role]),
            )
            for role in ("before", "now")
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=5, help="fresh interpreters per role")
    ap.add_argument("--documents", type=int, default=100, help="documents in the batch")
    ap.add_argument("--images", type=int, default=5000, help="hidden images the canaries join")
    a = ap.parse_args()
    mix_before, mix_now = canary_mix(a.repeat, a.images)
    rows = [
        ("prepared split, fresh interpreter (CPU s)", *prepared_split(a.repeat)),
        (f"split fingerprint, {a.documents} documents (CPU s)", *fingerprints(a.documents)),
        (f"canary mix, {a.images} images (CPU s)", mix_before[0], mix_now[0]),
        (f"canary mix, {a.images} images (peak RSS growth, MB)", mix_before[1], mix_now[1]),
    ]
    print(f"{'':52} {'before':>8} {'now':>8} {'now/before':>10}")
    for name, before, now in rows:
        print(f"{name:52} {before:8.3f} {now:8.3f} {now / before:10.3f}")


if __name__ == "__main__":
    main()
