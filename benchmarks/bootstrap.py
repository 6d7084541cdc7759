"""The scoring's bootstrap interval: per-pair values resampled against pairs resampled.

A mean metric (MSE, MAE, accuracy: ``Metric.per_pair``) is bootstrapped by resampling its
per-pair values, computed once; any other metric by resampling the (label, prediction)
pairs and computing the metric on each resample. Both give the same numbers
(``tests/test_metrics.py``); this times them side by side on the hidden-split sizes of the
courses (the correlation task's 5,000 images, the CIFAR-10 and MNIST test sets), 1,000
resamples each, best of ``--repeat``:

    python benchmarks/bootstrap.py
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.metrics import METRICS, Metric, bootstrap_interval  # noqa: E402

CASES = [("mse", 5_000), ("mae", 5_000), ("accuracy", 10_000)]


def _best(metric: Metric, y: np.ndarray, p: np.ndarray, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        bootstrap_interval(metric, y, p, samples=1000)
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=5, help="timings per case; the best is kept")
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    print(f"{'metric':10} {'pairs':>7} {'per-pair s':>11} {'on pairs s':>11} {'ratio':>6}")
    for name, n in CASES:
        m = METRICS.get(name)
        if m.kind == "regression":
            y = rng.random(n).astype(np.float32)
            p = (y + rng.normal(0, 0.1, n)).astype(np.float32)
        else:
            y, p = rng.integers(0, 10, n), rng.integers(0, 10, n)
        slow = dataclasses.replace(m, per_pair=None)
        fast_s, slow_s = _best(m, y, p, a.repeat), _best(slow, y, p, a.repeat)
        assert bootstrap_interval(m, y, p) == bootstrap_interval(slow, y, p)
        print(f"{name:10} {n:7,} {fast_s:11.4f} {slow_s:11.4f} {fast_s / slow_s:6.2f}")


if __name__ == "__main__":
    main()
