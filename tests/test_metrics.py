"""Metrics against hand-computed examples and independent loop implementations."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

import numpy as np
import pytest

from harness.errors import UserError
from harness.metrics import (
    METRICS,
    Metric,
    better,
    bootstrap_interval,
    bootstrap_values,
    compute,
    sort_key,
)

# --- independent reference implementations: plain Python loops ----------------------


def ref_mse(y: Sequence[float], p: Sequence[float]) -> float:
    return sum((b - a) * (b - a) for a, b in zip(y, p, strict=True)) / len(y)


def ref_mae(y: Sequence[float], p: Sequence[float]) -> float:
    return sum(abs(b - a) for a, b in zip(y, p, strict=True)) / len(y)


def ref_rmse(y: Sequence[float], p: Sequence[float]) -> float:
    return math.sqrt(ref_mse(y, p))


def ref_r2(y: Sequence[float], p: Sequence[float]) -> float:
    mean = math.fsum(y) / len(y)
    ss_tot = math.fsum((a - mean) ** 2 for a in y)
    ss_res = math.fsum((a - b) ** 2 for a, b in zip(y, p, strict=True))
    if ss_tot == 0:
        return 1.0 if ss_res == 0 else 0.0
    return 1 - ss_res / ss_tot


def ref_pearson(y: Sequence[float], p: Sequence[float]) -> float:
    n = len(y)
    sy, sp = math.fsum(y), math.fsum(p)
    syy = math.fsum(a * a for a in y)
    spp = math.fsum(b * b for b in p)
    syp = math.fsum(a * b for a, b in zip(y, p, strict=True))
    var_y, var_p = n * syy - sy * sy, n * spp - sp * sp
    if var_y <= 1e-12 * max(1.0, n * syy) or var_p <= 1e-12 * max(1.0, n * spp):
        return 0.0
    return (n * syp - sy * sp) / math.sqrt(var_y * var_p)


def ref_accuracy(y: Sequence[int], p: Sequence[int]) -> float:
    return sum(1 for a, b in zip(y, p, strict=True) if a == b) / len(y)


def ref_macro_f1(y: Sequence[int], p: Sequence[int]) -> float:
    scores = []
    for c in sorted(set(y) | set(p)):
        tp = sum(1 for a, b in zip(y, p, strict=True) if a == c and b == c)
        fp = sum(1 for a, b in zip(y, p, strict=True) if a != c and b == c)
        fn = sum(1 for a, b in zip(y, p, strict=True) if a == c and b != c)
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        both = precision + recall
        scores.append(2 * precision * recall / both if both else 0.0)
    return sum(scores) / len(scores)


def ref_balanced_accuracy(y: Sequence[int], p: Sequence[int]) -> float:
    recalls = []
    for c in sorted(set(y)):
        members = [b for a, b in zip(y, p, strict=True) if a == c]
        recalls.append(sum(1 for b in members if b == c) / len(members))
    return sum(recalls) / len(recalls)


REFERENCE: dict[str, Callable[..., float]] = {
    "mse": ref_mse,
    "mae": ref_mae,
    "rmse": ref_rmse,
    "r2": ref_r2,
    "pearson": ref_pearson,
    "accuracy": ref_accuracy,
    "macro_f1": ref_macro_f1,
    "balanced_accuracy": ref_balanced_accuracy,
}


def sample(metric: Metric, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    if metric.kind == "classification":
        k = rng.integers(0, 6, n)
        return k, np.where(rng.random(n) < 0.6, k, rng.integers(0, 7, n))
    y = rng.normal(size=n)
    return y, 0.7 * y + rng.normal(scale=0.5, size=n)


# --- the registry ------------------------------------------------------------------


def test_every_metric_has_a_reference_and_its_facts() -> None:
    assert set(METRICS.names()) == set(REFERENCE)
    for name in METRICS:
        m = METRICS.get(name)
        assert m.name == name and m.label
        assert m.kind in ("classification", "regression")
        assert m.direction in ("min", "max")
        assert isinstance(m.format(0.5), str)
    assert METRICS.get("mse").direction == "min" and METRICS.get("accuracy").direction == "max"


def test_unknown_metric_suggests() -> None:
    with pytest.raises(UserError) as info:
        METRICS.get("accuarcy")
    assert "accuracy" in info.value.hint


def test_registry_is_frozen() -> None:
    with pytest.raises(RuntimeError, match="frozen"):
        METRICS.add("extra", METRICS.get("mse"))


# --- hand-computed examples ------------------------------------------------------------

Y = [1.0, 2.0, 3.0, 4.0]
P = [1.0, 3.0, 2.0, 5.0]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("mse", 0.75),
        ("mae", 0.75),
        ("rmse", math.sqrt(0.75)),
        ("r2", 1 - 3 / 5),  # ss_res 3, ss_tot 5
        ("pearson", 5.5 / math.sqrt(5 * 8.75)),  # cov sum 5.5, ss_y 5, ss_p 8.75
    ],
)
def test_regression_by_hand(name: str, expected: float) -> None:
    assert METRICS.get(name)(np.array(Y), np.array(P)) == pytest.approx(expected, abs=1e-12)


def test_classification_by_hand() -> None:
    y = np.array([0, 0, 1, 1, 2, 2])
    p = np.array([0, 1, 1, 1, 2, 0])
    assert METRICS.get("accuracy")(y, p) == pytest.approx(4 / 6)
    # class 0: tp1 fp1 fn1 -> 1/2; class 1: tp2 fp1 fn0 -> 4/5; class 2: tp1 fp0 fn1 -> 2/3
    assert METRICS.get("macro_f1")(y, p) == pytest.approx((1 / 2 + 4 / 5 + 2 / 3) / 3)
    assert METRICS.get("balanced_accuracy")(y, p) == pytest.approx((1 / 2 + 1 + 1 / 2) / 3)


def test_macro_f1_leaves_out_absent_classes() -> None:
    y = np.array([0, 0, 5, 5])
    p = np.array([0, 5, 5, 5])
    # classes 1..4 absent from both: only 0 (2/3) and 5 (4/5) are averaged
    assert METRICS.get("macro_f1")(y, p) == pytest.approx((2 / 3 + 4 / 5) / 2)
    # a class only predicted counts with F1 0
    assert METRICS.get("macro_f1")(np.array([0, 0]), np.array([0, 3])) == pytest.approx(
        (2 / 3 + 0) / 2
    )


def test_degenerate_regression_conventions() -> None:
    const = np.full(5, 0.3)
    ramp = np.linspace(0, 1, 5)
    pearson, r2 = METRICS.get("pearson"), METRICS.get("r2")
    assert pearson(ramp, const) == 0.0
    assert pearson(const, ramp) == 0.0
    assert pearson(ramp, 2 * ramp + 1) == pytest.approx(1.0)
    assert pearson(ramp, -ramp) == pytest.approx(-1.0)
    assert r2(const, const) == 1.0
    assert r2(const, ramp) == 0.0
    assert r2(ramp, ramp) == 1.0


# --- every metric against its loop reference, single and batched ---------------------


@pytest.mark.parametrize("name", METRICS.names())
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_reference(name: str, seed: int) -> None:
    m = METRICS.get(name)
    y, p = sample(m, 57, seed)
    assert m(y, p) == pytest.approx(REFERENCE[name](y.tolist(), p.tolist()), rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("name", METRICS.names())
def test_batched_rows_match_reference(name: str) -> None:
    """The bootstrap calls fn on (B, N) stacks: each row must equal the 1-D reference."""
    m = METRICS.get(name)
    rows = [sample(m, 23, seed) for seed in range(6)]
    y = np.stack([r[0] for r in rows])
    p = np.stack([r[1] for r in rows])
    got = np.asarray(m.fn(y, p))
    assert got.shape == (6,)
    for i, (yi, pi) in enumerate(rows):
        assert got[i] == pytest.approx(REFERENCE[name](yi.tolist(), pi.tolist()), abs=1e-12)


# --- compute -----------------------------------------------------------------------------


def test_compute_classification_details() -> None:
    y = np.array([0, 0, 1, 1, 2, 2, 2])
    p = np.array([0, 1, 1, 1, 2, 0, 2])
    values, details = compute("classification", ["accuracy", "macro_f1"], y, p, num_classes=4)
    assert values["accuracy"] == pytest.approx(5 / 7)
    assert set(values) == {"accuracy", "macro_f1"}
    assert details["confusion_matrix"] == [
        [1, 1, 0, 0],
        [0, 2, 0, 0],
        [1, 0, 2, 0],
        [0, 0, 0, 0],
    ]
    assert details["per_class_accuracy"] == [0.5, 1.0, pytest.approx(2 / 3), None]


def test_compute_regression_scatter_small_and_large() -> None:
    y = np.array([0.1234567, 0.5, 0.9])
    values, details = compute("regression", ["mse", "pearson"], y, y + 0.1)
    assert values["mse"] == pytest.approx(0.01)
    assert details["scatter"]["true"] == [0.12346, 0.5, 0.9]
    assert details["scatter"]["pred"] == [pytest.approx(0.22346), 0.6, 1.0]

    rng = np.random.default_rng(3)
    y = rng.permutation(5000) / 5000  # distinct after rounding to 5 decimals
    p = y + rng.normal(scale=0.01, size=5000)
    _, first = compute("regression", ["mse"], y, p)
    _, again = compute("regression", ["mse"], y, p)
    scatter = first["scatter"]
    assert scatter == again["scatter"]  # fixed seed
    assert len(scatter["true"]) == len(scatter["pred"]) == 1000
    pairs = dict(zip(np.round(y, 5).tolist(), np.round(p, 5).tolist(), strict=True))
    assert all(pairs[t] == q for t, q in zip(scatter["true"], scatter["pred"], strict=True))


@pytest.mark.parametrize(
    ("kind", "names", "labels", "preds", "match"),
    [
        ("regression", ["accuracy"], [0.1, 0.2], [0.1, 0.2], "classification metric"),
        ("regression", ["mse"], [0.1, 0.2], [0.1], "must be equal"),
        ("regression", ["mse"], [], [], "non-empty"),
        ("regression", ["mse"], [0.1, 0.2], [0.1, np.nan], "finite"),
        ("classification", ["accuracy"], [0, 1], [0, 3], r"class indices in \[0, 3\)"),
        ("classification", ["accuracy"], [0, 1], [0.0, 1.0], "class indices"),
    ],
)
def test_compute_rejects_unvalidated_input(
    kind: str, names: list[str], labels: list[float], preds: list[float], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        compute(kind, names, np.array(labels), np.array(preds), num_classes=3)  # type: ignore[arg-type]


# --- bootstrap ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", METRICS.names())
def test_bootstrap_deterministic_and_contains_estimate(name: str) -> None:
    m = METRICS.get(name)
    y, p = sample(m, 400, seed=5)
    first = bootstrap_interval(m, y, p, samples=300, seed=7)
    assert first == bootstrap_interval(m, y, p, samples=300, seed=7)
    assert first != bootstrap_interval(m, y, p, samples=300, seed=8)
    low, high = first
    assert low < m(y, p) < high


@pytest.mark.parametrize("name", [n for n in METRICS.names() if METRICS.get(n).per_pair])
@pytest.mark.parametrize("dtype", ["float32", "float64", "int64"])
def test_a_mean_metrics_bootstrap_resamples_per_pair_values_with_the_same_numbers(
    name: str, dtype: str
) -> None:
    """Resampling a mean metric's per-pair values gives, bit for bit, the values of the
    metric on resampled pairs (what the bootstrap did before, and still does for others);
    2,500 pairs and 1,000 samples span ten chunks of resamples."""
    import dataclasses

    m = METRICS.get(name)
    y, p = sample(m, 2500, seed=3)
    if m.kind == "regression" or dtype == "int64":
        y, p = y.astype(dtype), p.astype(dtype)
    on_pairs = dataclasses.replace(m, per_pair=None)
    fast = bootstrap_values(m, y, p, samples=1000, seed=11)
    assert np.array_equal(fast, bootstrap_values(on_pairs, y, p, samples=1000, seed=11))
    assert float(np.mean(m.per_pair(y, p))) == m(y, p)  # type: ignore[misc]


def test_bootstrap_values_are_metric_on_resamples() -> None:
    """Each bootstrap value is the metric of some resample: within the values' possible range."""
    m = METRICS.get("accuracy")
    y = np.array([0, 1, 1, 0, 1])
    p = np.array([0, 1, 0, 0, 1])
    values = bootstrap_values(m, y, p, samples=500, seed=0)
    assert set(np.round(values * 5).astype(int)) <= set(range(6))
    assert values.mean() == pytest.approx(0.8, abs=0.03)


def test_bootstrap_narrows_with_n() -> None:
    m = METRICS.get("mse")
    widths = []
    for n in (100, 1000, 10_000):
        y, p = sample(m, n, seed=1)
        low, high = bootstrap_interval(m, y, p, samples=500, seed=0)
        widths.append(high - low)
    assert widths[0] > widths[1] > widths[2]
    assert widths[0] / widths[2] > 5  # about sqrt(100) = 10 in expectation


def test_bootstrap_level() -> None:
    m = METRICS.get("mae")
    y, p = sample(m, 500, seed=2)
    low90, high90 = bootstrap_interval(m, y, p, level=0.9)
    low99, high99 = bootstrap_interval(m, y, p, level=0.99)
    assert low99 < low90 < high90 < high99
    with pytest.raises(ValueError, match="level"):
        bootstrap_interval(m, y, p, level=1.0)


@pytest.mark.parametrize("name", ["mse", "accuracy", "macro_f1"])
def test_bootstrap_is_fast(name: str) -> None:
    m = METRICS.get(name)
    y, p = sample(m, 10_000, seed=0)
    start = time.perf_counter()
    bootstrap_interval(m, y, p, samples=1000, seed=0)
    # about 0.1 s (mse) to 0.25 s (macro_f1) on a shared 2-core machine; generous bound
    assert time.perf_counter() - start < 2.0


# --- ranking ---------------------------------------------------------------------------


def test_better_and_sort_key_follow_direction() -> None:
    mse, acc = METRICS.get("mse"), METRICS.get("accuracy")
    assert better(mse, 0.1, 0.2) and not better(mse, 0.2, 0.1) and not better(mse, 0.1, 0.1)
    assert better(acc, 0.9, 0.8) and not better(acc, 0.8, 0.9)
    scores = [0.3, None, 0.1, float("nan"), 0.2]
    assert sorted(scores, key=lambda v: sort_key(mse, v))[:3] == [0.1, 0.2, 0.3]
    assert sorted(scores, key=lambda v: sort_key(acc, v))[:3] == [0.3, 0.2, 0.1]
    tail = sorted(scores, key=lambda v: sort_key(acc, v))[3:]
    assert tail[0] is None or math.isnan(tail[0])
    assert tail[1] is None or math.isnan(tail[1])


def test_format() -> None:
    assert METRICS.get("accuracy").format(0.8294) == "82.94%"
    assert METRICS.get("mse").format(0.000008) == "8e-06"
    assert METRICS.get("mse").format(None) == "n/a"


@pytest.mark.parametrize("name", ["mse", "pearson"])  # per-pair values, and pairs
def test_a_bootstrap_holds_a_few_megabytes_at_once_whatever_its_chunks(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two gradings score at once in a batch: each bootstrap's resamples are held a
    chunk at a time (``_CHUNK_VALUES``), and the chunks change no number."""
    import tracemalloc

    from harness import metrics

    m = METRICS.get(name)
    y, p = sample(m, 5000, seed=4)
    tracemalloc.start()
    try:
        chunked = bootstrap_values(m, y, p, samples=1000, seed=2)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 * 2**20  # 2 M values at once (before) held 32 MB for MSE alone
    monkeypatch.setattr(metrics, "_CHUNK_VALUES", 10**9)  # every resample at once
    assert np.array_equal(chunked, bootstrap_values(m, y, p, samples=1000, seed=2))
