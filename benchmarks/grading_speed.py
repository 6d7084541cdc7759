"""Grading speed, side by side, in one run: the harness against a bare inference loop and
against a naive grader, on the same submissions and the same hidden test images.

    python benchmarks/grading_speed.py                 # 8 submissions, 5,000 images
    python benchmarks/grading_speed.py --backends process,bwrap,docker --repeat 2

What it times (each a fresh process, wall clock measured here):

* bare: ``bare_loop.py``, one process that decodes the test set once and runs each model;
  and the same with ``--keep-freed-memory`` (the C heap kept between batches, as the
  harness's predicting runs have it: ``harness/runner/heap.py``), so that a reader sees
  how much of the harness's speed is that setting; the targets are against the faster
  of the two (the plain loop's time swings with where glibc's mmap threshold drifts);
* harness: ``grade SUBMISSION... --sandbox B --force --no-reports`` for each backend B;
* naive: ``naive_grader.py`` once per submission (PIL + DataLoader over the PNG layout);
* re-grade: one submission graded, then graded again unchanged (served from the store),
  in this process through the ``grade`` API and through the CLI;
* memory: the grading process's peak RSS, and the whole process tree's peak PSS, for one
  submission and for all of them, in process-backend runs of their own (the sampler's
  scans of /proc cost a timed run 1.2-1.3 s of wall time; no timed run is sampled).

The submissions are real correlation architectures (the reference CNN and three
variants a student might hand in), with seeded random weights: timing needs no training.
``--repeat`` interleaves bare and process-backend rounds (bwrap and docker run once).
Prints a table of the ratios and writes them to ``benchmarks/results.json``.

For a GPU machine, ``--suite references`` measures each task's reference model (images
per second, bare and through the harness) and ``--suite cifar10-resnet`` times a batch of
ResNets (``--submissions 100 --images 10000``); see ``benchmarks/README.md``. The
real-data case, ``--suite fashion-mnist``, grades the fashion-mnist references and 8
student-style models on the 10,000 real Fashion-MNIST test images (``real_data.py``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "tests"))  # the test kit writes the benchmark's submissions

from kit import save_weights, write_manifest  # noqa: E402
from serve_daemon import Daemon, grade_serve, process_tree  # noqa: E402

PY = sys.executable
TARGETS = {"harness_over_bare": 1.25, "naive_over_harness": 1.8, "regrade_fraction": 0.05}
# issue 17: the process backend, which isolates nothing, at most the bare loop's time
# (through overlap); the sandboxes at most 1.25x
SERVED = ", served"  # a backend's row with a warm `grade serve` running (--served)
BACKEND_TARGETS = {"process": 1.0, "process" + SERVED: 1.0}
FLAT_MEMORY = 1.25  # peak RSS with all submissions over peak RSS with one

WIDE_HEAD = '''"""The seed CNN with a wider head (8*32*32 -> 192 -> 1)."""
import torch
from torch import nn


def build_model() -> nn.Module:
    return nn.Sequential(
        nn.AdaptiveAvgPool2d(64),
        nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.Tanh(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(8 * 32 * 32, 192), nn.Tanh(), nn.Linear(192, 1),
    )
'''
TWO_BLOCKS = '''"""Two conv blocks on a 75 x 75 downsample, ReLU, a tanh output."""
import torch
from torch import nn


class TwoBlocks(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.AdaptiveAvgPool2d(75),
            nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(16 * 18 * 18, 128), nn.ReLU(), nn.Linear(128, 1), nn.Tanh(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(1)


def build_model() -> nn.Module:
    return TwoBlocks()
'''
MLP = '''"""A multilayer perceptron on a 32 x 32 downsample."""
from torch import nn


def build_model() -> nn.Module:
    return nn.Sequential(
        nn.AdaptiveAvgPool2d(32), nn.Flatten(),
        nn.Linear(1024, 512), nn.ReLU(), nn.Linear(512, 256), nn.ReLU(), nn.Linear(256, 1),
    )
'''
TRAINING = {
    "optimizer": "Adam",
    "learning_rate": 0.001,
    "batch_size": 128,
    "epochs": 2,
    "loss": "MSELoss",
    "history": "history.csv",
}
HISTORY = "epoch,train_loss,val_loss\n0,0.34,0.34\n1,0.05,0.06\n2,0.02,0.03\n"


# ---- running and watching processes ---------------------------------------------------


@dataclass
class Timed:
    wall_s: float
    rc: int
    stdout: str
    stderr: str
    peak_rss_mb: float = 0.0  # the process itself (VmHWM)
    peak_tree_pss_mb: float = 0.0  # it and every descendant, shared pages counted once
    cpu_s: float = 0.0  # user + system time of it and every descendant it waited for


class TreeSampler(threading.Thread):
    """Samples a process tree's memory 5 times a second from /proc."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.hwm_kb, self.tree_kb = pid, 0, 0
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.wait(0.2):
            self.hwm_kb = max(self.hwm_kb, _status_kb(self.pid, "VmHWM"))
            self.tree_kb = max(self.tree_kb, sum(_pss_kb(p) for p in process_tree(self.pid)))


def _status_kb(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _pss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(cmd: list[str], *, env: dict[str, str] | None = None, watch: bool = False) -> Timed:
    cpu0 = _children_cpu()
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    sampler = TreeSampler(proc.pid) if watch else None
    if sampler:
        sampler.start()
    out, err = proc.communicate()
    wall = time.perf_counter() - t0
    result = Timed(wall, proc.returncode, out, err, cpu_s=round(_children_cpu() - cpu0, 2))
    if sampler:
        sampler.halt.set()
        sampler.join()
        result.peak_rss_mb = round(sampler.hwm_kb / 1024, 1)
        result.peak_tree_pss_mb = round(sampler.tree_kb / 1024, 1)
    if proc.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(cmd[:4])}... failed ({proc.returncode}):\n{err[-3000:]}")
    return result


# ---- the set-up: task, split, submissions, PNG layout ----------------------------------


@dataclass
class Setup:
    work: Path
    env: dict[str, str]
    inputs: Path
    labels: Path
    layout: Path
    batch_size: int
    images: int
    subs: list[Path] = field(default_factory=list)


def task_override(work: Path, images: int, cpus: float | None) -> Path | None:
    """A tasks folder whose correlation task differs only in its test size or its
    ``limits.cpus`` (None when the project's own task fits)."""
    task_file = ROOT / "tasks" / "correlation" / "task.toml"
    text = task_file.read_text()
    size = tomllib.loads(text)["dataset"]["options"]["test_size"]
    if size == images and cpus is None:
        return None
    text = text.replace(f"test_size = {size}", f"test_size = {images}")
    if cpus is not None:
        text = text.replace("[limits]\n", f"[limits]\ncpus = {cpus:g}\n")
    tasks = work / f"tasks-{images}-{cpus or 'default'}"
    (tasks / "correlation").mkdir(parents=True, exist_ok=True)
    (tasks / "correlation" / "task.toml").write_text(text)
    return tasks


def make_setup(
    work: Path,
    count: int,
    images: int,
    cpus: float | None = None,
    *,
    write: Callable[[Path, int], Path] | None = None,
    layout: bool = True,
) -> Setup:
    """Prepare the hidden split through the harness, write the submissions (``write``:
    root, index -> folder; default the four correlation variants) and the PNG layout
    (the naive grader's; ``layout=False`` skips it)."""
    env = dict(os.environ)
    tasks = task_override(work, images, cpus)
    if tasks is not None:
        env["HARNESS_TASKS"] = os.environ["HARNESS_TASKS"] = str(tasks)
    from harness.data import prepare_split
    from harness.tasks import load_task

    task = load_task("correlation")
    split = prepare_split(task, task.splits.hidden)
    setup = Setup(
        work,
        env,
        split.inputs_path,
        split.folder / "labels.npy",
        work / "layout" / split.key[:16],
        task.batch_size,
        split.count,
    )
    if layout:
        _write_layout(setup, split.images(), split.labels())
    write = write or _write_submission
    setup.subs = [write(work / "subs", i) for i in range(count)]
    return setup


def _write_layout(setup: Setup, images: Any, labels: Any) -> None:
    done = setup.layout / "responses.csv"
    if done.is_file():
        return
    from harness.data.correlation import write_layout

    tmp = setup.layout.with_name(setup.layout.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    write_layout(tmp, images, labels)
    tmp.rename(setup.layout)


def _variants() -> list[tuple[str, str]]:
    seed_cnn = (ROOT / "reference_solutions" / "correlation" / "model.py").read_text()
    return [
        ("seed CNN", seed_cnn),
        ("wide head", WIDE_HEAD),
        ("two blocks", TWO_BLOCKS),
        ("MLP", MLP),
    ]


def _write_submission(root: Path, i: int) -> Path:
    variant, source = _variants()[i % 4]
    folder = root / f"bench{i + 1:02d}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    (folder / "model.py").write_text(source)
    notes = f"benchmark: {variant} architecture, random weights (seed {i})"
    write_manifest(
        folder, task="correlation", members=["benchmark"], training=TRAINING | {"notes": notes}
    )
    (folder / "history.csv").write_text(HISTORY)
    save_weights(source, folder, seed=i)
    return folder


# ---- the measurements ---------------------------------------------------------------


def run_bare(
    s: Setup,
    subs: list[Path],
    device: str = "auto",
    *,
    keep: bool = False,
    channels_last: bool = False,
) -> dict[str, Any]:
    """The bare loop; ``keep``: with the C heap kept between batches, as the harness's
    predicting runs have it (``harness/runner/heap.py``); ``channels_last``: its models
    and batches channels-last, as phase B runs 2-D convolutions on a CPU."""
    cmd = [PY, str(HERE / "bare_loop.py"), "--inputs", str(s.inputs), "--labels", str(s.labels)]
    cmd += ["--batch-size", str(s.batch_size), "--device", device]
    cmd += ["--keep-freed-memory"] * keep + ["--channels-last"] * channels_last
    cmd += [*map(str, subs)]
    t = timed(cmd, env=s.env)
    inner = json.loads(t.stdout)
    inner = {k: v for k, v in inner.items() if k != "wall_s"}
    return {"wall_s": round(t.wall_s, 3), "cpu_s": t.cpu_s, **inner}


def run_harness(
    s: Setup,
    subs: list[Path],
    backend: str,
    *,
    jobs: int = 1,
    force: bool = True,
    tag: str = "",
    extra: list[str] | None = None,
    watch: bool = False,
) -> dict[str, Any]:
    """One ``grade`` command, timed; with ``watch``, its memory sampled too (runs of
    their own: the sampler's scans of /proc took 1.2-1.3 s of a 15 s run's wall time)."""
    results = s.work / "results" / (tag or backend)
    if force:
        shutil.rmtree(results, ignore_errors=True)
    cmd = [PY, "-m", "harness.cli", *map(str, subs), "--sandbox", backend, "--no-reports"]
    cmd += ["--results", str(results), "--json", "--jobs", str(jobs)] + (["--force"] * force)
    cmd += extra or []
    t = timed(cmd, env=s.env, watch=watch)
    docs = json.loads(t.stdout)
    statuses = sorted({d["status"] for d in docs})
    return {
        "wall_s": round(t.wall_s, 3),
        "cpu_s": t.cpu_s,
        "jobs": jobs,
        "statuses": statuses,
        "devices": sorted({str((d.get("sandbox") or {}).get("device")) for d in docs}),
        "messages": [d["message"] for d in docs if d["status"] != "graded"][:3],
        "mse": {d["team"]: d["metrics"].get("mse") for d in docs},
        "timing": _timing_sums(docs),
        "peak_rss_mb": t.peak_rss_mb,
        "peak_tree_pss_mb": t.peak_tree_pss_mb,
    }


def _timing_sums(docs: list[dict[str, Any]]) -> dict[str, float]:
    sums: dict[str, float] = {}
    for doc in docs:
        for key, value in doc.get("timing", {}).items():
            if key.endswith("_s") and isinstance(value, int | float):
                sums[key] = round(sums.get(key, 0.0) + value, 3)
    return sums


def run_naive(s: Setup, subs: list[Path]) -> dict[str, Any]:
    walls, cpus, mses = [], [], {}
    for sub in subs:
        cmd = [PY, str(HERE / "naive_grader.py"), "--layout", str(s.layout)]
        t = timed(cmd + ["--batch-size", str(s.batch_size), str(sub)], env=s.env)
        walls.append(round(t.wall_s, 3))
        cpus.append(t.cpu_s)
        mses[sub.name] = json.loads(t.stdout)["mse"]
    return {
        "wall_s": round(sum(walls), 3),
        "cpu_s": round(sum(cpus), 2),
        "per_submission_s": walls,
        "mse": mses,
    }


def run_regrade(s: Setup, sub: Path) -> dict[str, Any]:
    """One submission graded, then again unchanged: through the API here, then the CLI."""
    from harness.api import GradeOptions, grade

    results = s.work / "results" / "regrade-api"
    shutil.rmtree(results, ignore_errors=True)
    options = GradeOptions(sandbox="process", results_dir=results, reports=False, force=True)
    t = time.perf_counter()
    first = grade([sub], options=options)
    graded = time.perf_counter() - t
    t = time.perf_counter()
    again = grade(
        [sub], options=GradeOptions(sandbox="process", results_dir=results, reports=False)
    )
    cached = time.perf_counter() - t
    one = run_harness(s, [sub], "process", tag="regrade-cli")
    cli_again = run_harness(s, [sub], "process", force=False, tag="regrade-cli")
    return {
        "api_graded_s": round(graded, 4),
        "api_cached_s": round(cached, 4),
        "api_fraction": round(cached / graded, 4),
        "served_from_store": again[0].graded_at == first[0].graded_at,
        "cli_graded_s": one["wall_s"],
        "cli_cached_s": cli_again["wall_s"],
        "cli_fraction": round(cli_again["wall_s"] / one["wall_s"], 4),
        "one_submission": one,
    }


def run_extra(s: Setup, a: argparse.Namespace, extra: str) -> dict[str, Any]:
    """The process backend at ``--jobs J`` (``J``), on a task with ``limits.cpus = C``
    (``J:C``): how jobs and the runner's torch threads share the cores."""
    jobs, _, cpus = extra.partition(":")
    print(f"harness, process backend, --jobs {jobs}, cpus {cpus or 'as the task'}", file=sys.stderr)
    if not cpus:
        return run_harness(s, s.subs, "process", jobs=int(jobs), tag=f"process-j{extra}")
    tasks = task_override(s.work, s.images, float(cpus))
    assert tasks is not None
    other = Setup(**{**s.__dict__, "env": {**s.env, "HARNESS_TASKS": str(tasks)}})
    result = run_harness(other, s.subs, "process", jobs=int(jobs), tag=f"process-j{jobs}-c{cpus}")
    return {**result, "task_cpus": float(cpus)}


def backend_reason(name: str) -> str | None:
    from harness.sandbox import backends

    try:
        return backends.get(name)().unavailable_reason()
    except Exception as exc:  # an unknown name, a broken engine: skip with the reason
        return f"{type(exc).__name__}: {exc}"


# ---- the report ---------------------------------------------------------------------


def machine() -> dict[str, Any]:
    import torch

    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "host": platform.node(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "gpu": gpu,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "load_average_before": [round(x, 2) for x in os.getloadavg()],
    }


def _ratio(a: float, b: float) -> float:
    return round(a / b, 3) if b else float("nan")


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def summarize(r: dict[str, Any]) -> dict[str, Any]:
    """The ratios the issue names, each with its target and whether it is met."""
    bare = _median([b["wall_s"] for b in r["bare"]])
    bare_cpu = _median([b["cpu_s"] for b in r["bare"]])
    naive = r.get("naive", {}).get("wall_s")
    kept = _median([b["wall_s"] for b in r["bare_kept"]]) if r.get("bare_kept") else None
    cl = r.get("bare_channels_last")
    same_kernels = _median([b["wall_s"] for b in cl]) if cl else None
    rows: dict[str, Any] = {}
    for name, runs in r["harness"].items():
        if not runs or "skipped" in runs[0]:
            rows[name] = {"skipped": runs[0]["skipped"] if runs else "not run"}
            continue
        wall = _median([h["wall_s"] for h in runs])
        cpu = _median([h["cpu_s"] for h in runs])
        pairs = [_ratio(h["wall_s"], b["wall_s"]) for h, b in zip(runs, r["bare"], strict=False)]
        rows[name] = {
            "harness_s": round(wall, 2),
            "bare_s": round(bare, 2),
            "naive_s": naive,
            "harness_over_bare": _ratio(wall, bare),
            "harness_over_bare_per_round": pairs,
            "harness_over_bare_of_minima": _ratio(
                min(h["wall_s"] for h in runs), min(b["wall_s"] for b in r["bare"])
            ),
            "bare_kept_s": round(kept, 2) if kept else None,
            "harness_over_bare_kept": _ratio(wall, kept) if kept else None,
            # the targets' ratio: against the faster of the two loops (the plain one's
            # time swings with where glibc's mmap threshold drifts: 10.5-16.9 s here)
            "harness_over_best_bare": _ratio(wall, min(bare, kept or bare)),
            # context, not a target: the loop with phase B's layout (the same kernels)
            "bare_channels_last_s": round(same_kernels, 2) if same_kernels else None,
            "harness_over_bare_channels_last": (
                _ratio(wall, same_kernels) if same_kernels else None
            ),
            "naive_over_harness": _ratio(naive, wall) if naive else None,
            "harness_cpu_s": round(cpu, 2),
            "bare_cpu_s": round(bare_cpu, 2),
            "cpu_harness_over_bare": _ratio(cpu, bare_cpu),
            "all_graded": all(h["statuses"] == ["graded"] for h in runs),
        }
    summary: dict[str, Any] = {"backends": rows}
    targets = []
    for name, row in rows.items():
        if "skipped" in row:
            continue
        limit = BACKEND_TARGETS.get(name, TARGETS["harness_over_bare"])
        best = row["harness_over_best_bare"]
        targets.append(_target(f"{name}: harness / faster bare", best, "<=", limit))
        if row["naive_over_harness"] is not None:
            limit = TARGETS["naive_over_harness"]
            targets.append(
                _target(f"{name}: naive / harness", row["naive_over_harness"], ">=", limit)
            )
    if "regrade" in r:
        fraction = r["regrade"]["api_fraction"]
        targets.append(_target("re-grade / grade", fraction, "<", TARGETS["regrade_fraction"]))
    if "memory" in r:
        targets.append(_target("peak RSS n / 1", r["memory"]["rss_ratio"], "<=", FLAT_MEMORY))
    summary["targets"] = targets
    return summary


def _target(name: str, value: float, op: str, limit: float) -> dict[str, Any]:
    met = {"<=": value <= limit, "<": value < limit, ">=": value >= limit}[op]
    return {"name": name, "value": value, "target": f"{op} {limit}", "met": bool(met)}


def print_table(r: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    rows = r["summary"]["backends"]
    table = Table(
        title=f"{r['config']['submissions']} submissions x {r['config']['images']} images"
    )
    table.add_column("")
    for name in rows:
        table.add_column(name, justify="right")
    for label, key in [
        ("harness s", "harness_s"),
        ("bare s", "bare_s"),
        ("naive s", "naive_s"),
        ("harness / bare", "harness_over_bare"),
        ("harness / bare, per round", "harness_over_bare_per_round"),
        ("bare, heap kept, s", "bare_kept_s"),
        ("harness / bare, heap kept", "harness_over_bare_kept"),
        ("harness / faster bare (targets)", "harness_over_best_bare"),
        ("bare, channels-last, s", "bare_channels_last_s"),
        ("harness / bare channels-last", "harness_over_bare_channels_last"),
        ("naive / harness", "naive_over_harness"),
        ("harness CPU s", "harness_cpu_s"),
        ("bare CPU s", "bare_cpu_s"),
        ("CPU harness / bare", "cpu_harness_over_bare"),
    ]:
        table.add_row(
            label, *[str(rows[n].get(key, rows[n].get("skipped", "")))[:40] for n in rows]
        )
    console.print(table)
    targets = Table(title="targets")
    for column in ("measure", "value", "target", "met"):
        targets.add_column(column)
    for t in r["summary"]["targets"]:
        targets.add_row(t["name"], str(t["value"]), t["target"], "yes" if t["met"] else "NO")
    console.print(targets)
    if r.get("served_first"):
        opened = ", ".join(f"{b} {x['wall_s']} s" for b, x in r["served_first"].items())
        console.print(f"first served command (it opens the daemon's sandboxes): {opened}")
    if "regrade" in r:
        g = r["regrade"]
        console.print(
            f"re-grade: API {g['api_cached_s']} s of {g['api_graded_s']} s; "
            f"CLI {g['cli_cached_s']} s of {g['cli_graded_s']} s"
        )
    if "memory" in r:
        m = r["memory"]
        console.print(
            f"memory: grading process peak RSS {m['rss_1_mb']} MB (1) -> "
            f"{m['rss_n_mb']} MB ({r['config']['submissions']}); process tree peak "
            f"PSS {m['tree_pss_1_mb']} -> {m['tree_pss_n_mb']} MB"
        )


def _agreement(r: dict[str, Any]) -> dict[str, Any]:
    """Do the harness, the bare loop and the naive grader compute the same MSE?"""
    bare = {Path(m["path"]).name: m["mse"] for m in r["bare"][0]["models"]}
    out: dict[str, Any] = {}
    for name, runs in r["harness"].items():
        if runs and "mse" in runs[0]:
            diffs = [
                abs(runs[0]["mse"][team] - bare[team])
                for team in bare
                if runs[0]["mse"].get(team) is not None
            ]
            out[name] = max(diffs) if len(diffs) == len(bare) else "missing results"
    if "naive" in r:
        out["naive"] = max(abs(r["naive"]["mse"][t] - bare[t]) for t in bare)
    return {"max_abs_mse_difference_vs_bare": out}


# ---- the GPU machine's suites: reference models, a batch of ResNets --------------------


def _torchvision_data(work: Path, images: int) -> Path:
    """Fixture MNIST and CIFAR-10 in their torchvision layouts, ``images`` test images each
    (the real sets' size by default; their content is generated, which timing ignores)."""
    from harness.fixtures import write_cifar10, write_mnist

    root = work / f"data-{images}"
    if not (root / "done").is_file():
        write_mnist(root, train=200, test=images)
        write_cifar10(root, train=200, test=images)
        (root / "done").write_text("")
    return root


def _reference_copy(task_id: str, folder: Path, seed: int) -> Path:
    """The task's reference model with seeded random weights, as a submission folder."""
    import torch
    from safetensors.torch import save_file

    source = ROOT / "reference_solutions" / task_id
    manifest = tomllib.loads((source / "submission.toml").read_text())
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(source, folder, ignore=shutil.ignore_patterns("*.safetensors", "*.pt"))
    text = (source / "submission.toml").read_text()
    text = text.replace(f'team = "{manifest["team"]}"', f'team = "{folder.name}"')
    (folder / "submission.toml").write_text(text)
    if "history" in manifest.get("training", {}):
        (folder / manifest["training"]["history"]).write_text(HISTORY)
    namespace: dict[str, Any] = {"__name__": f"reference_{task_id.replace('-', '_')}"}
    sys.path.insert(0, str(folder))
    try:
        exec(
            compile((folder / "model.py").read_text(), str(folder / "model.py"), "exec"), namespace
        )
    finally:
        sys.path.pop(0)
    torch.manual_seed(seed)
    model = namespace["build_model"]()
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / manifest["model"]["weights"]))
    return folder


def _split_paths(task_id: str, data_root: Path | None) -> tuple[Path, Path, int]:
    from harness.data import prepare_split
    from harness.tasks import load_task

    task = load_task(task_id)
    split = prepare_split(task, task.splits.hidden, data_root=data_root)
    return split.inputs_path, split.folder / "labels.npy", task.batch_size


def references_suite(a: argparse.Namespace) -> dict[str, Any]:
    """Images per second of each task's reference model: bare loop and harness."""
    r: dict[str, Any] = {"machine": machine(), "suite": "references", "models": {}}
    data = _torchvision_data(a.work, a.images)
    for task_id in ("mnist", "cifar10", "cifar10-resnet", "correlation"):
        root = None if task_id == "correlation" else data
        inputs, labels, batch = _split_paths(task_id, root)
        sub = _reference_copy(task_id, a.work / "references" / f"ref-{task_id}", 0)
        cmd = [PY, str(HERE / "bare_loop.py"), "--inputs", str(inputs), "--labels", str(labels)]
        bare = json.loads(timed([*cmd, "--batch-size", str(batch), str(sub)]).stdout)
        extra = ["--data-root", str(root)] if root else []
        env = {**os.environ, "HARNESS_TASKS": str(ROOT / "tasks")}
        setup = Setup(a.work, env, inputs, labels, a.work, batch, bare["images"])
        harness = run_harness(setup, [sub], "process", tag=f"ref-{task_id}", extra=extra)
        r["models"][task_id] = {
            "images": bare["images"],
            "device": bare["device"],
            "bare_images_per_s": bare["models"][0]["images_per_s"],
            "harness_images_per_s": harness["timing"].get("images_per_s"),
            "harness_s": harness["wall_s"],
            "statuses": harness["statuses"],
            "harness_devices": harness["devices"],
        }
        print(task_id, json.dumps(r["models"][task_id]), file=sys.stderr)
    a.out.write_text(json.dumps(r, indent=2) + "\n")
    print(json.dumps(r["models"], indent=2))
    return r


def resnet_suite(a: argparse.Namespace) -> dict[str, Any]:
    """``--submissions`` copies of the cifar10-resnet reference on ``--images`` test images:
    the harness's wall time for the batch, beside the bare loop's."""
    started = time.perf_counter()
    data = _torchvision_data(a.work, a.images)
    inputs, labels, batch = _split_paths("cifar10-resnet", data)
    subs = [
        _reference_copy("cifar10-resnet", a.work / "resnets" / f"resnet{i:03d}", i)
        for i in range(a.submissions)
    ]
    env = {**os.environ, "HARNESS_TASKS": str(ROOT / "tasks")}
    setup = Setup(a.work, env, inputs, labels, a.work, batch, 0, subs)
    bare = run_bare(setup, subs)
    extra = ["--data-root", str(data)]
    harness = {
        b: run_harness(setup, subs, b, jobs=a.jobs, tag=f"resnets-{b}", extra=extra)
        for b in a.backends.split(",")
        if b and backend_reason(b) is None
    }
    r = {
        "machine": machine(),
        "suite": "cifar10-resnet",
        "config": {"submissions": len(subs), "images": bare["images"], "jobs": a.jobs},
        "bare": bare,
        "harness": harness,
        "summary": {
            b: {
                "harness_s": h["wall_s"],
                "bare_s": bare["wall_s"],
                "harness_over_bare": _ratio(h["wall_s"], bare["wall_s"]),
                "statuses": h["statuses"],
                "devices": h["devices"],
            }
            for b, h in harness.items()
        },
        "elapsed_s": round(time.perf_counter() - started, 1),
    }
    a.out.write_text(json.dumps(r, indent=2) + "\n")
    print(json.dumps(r["summary"], indent=2))
    return r


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--suite",
        choices=["correlation", "references", "cifar10-resnet", "fashion-mnist", "course"],
        default="correlation",
        help="correlation: the batch of the targets; references: images per second of each "
        "task's reference model; cifar10-resnet: a batch of ResNets (for a GPU machine); "
        "fashion-mnist: the references and 8 students on the real test set; course: many "
        "small submissions, the fixed cost per submission (course_scale.py)",
    )
    p.add_argument("--submissions", type=int, default=8)
    p.add_argument("--images", type=int, default=5000, help="hidden test images")
    p.add_argument("--backends", default="process,bwrap,docker")
    p.add_argument(
        "--jobs", type=int, default=0, help="--jobs of the harness runs (0: the harness default)"
    )
    p.add_argument("--cpus", type=float, default=None, help="override the task's limits.cpus")
    p.add_argument(
        "--extra-jobs",
        default="",
        help="also time the process backend at these --jobs (J, or J:C for a task with "
        "limits.cpus = C), comma-separated",
    )
    p.add_argument("--repeat", type=int, default=1, help="rounds of bare + harness runs")
    p.add_argument(
        "--served",
        action="store_true",
        help="also time each backend with a warm `grade serve` running (its start not "
        "timed; bwrap's and docker's first served command, which opens their sandboxes, "
        "is timed apart; every other row gets none)",
    )
    p.add_argument("--skip-naive", action="store_true")
    p.add_argument("--work", type=Path, default=ROOT / ".cache" / "bench")
    p.add_argument("--out", type=Path, default=HERE / "results.json")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    a = parse(argv)
    if a.suite == "references":
        return references_suite(a)
    if a.suite == "cifar10-resnet":
        return resnet_suite(a)
    if a.suite == "fashion-mnist":
        from real_data import fashion_suite  # real Fashion-MNIST: the references + 8 students

        return fashion_suite(a)
    if a.suite == "course":
        from course_scale import course_suite  # many small submissions: the fixed cost

        return course_suite(a)
    return correlation_suite(a)


def _rounds(
    r: dict[str, Any],
    s: Setup,
    a: argparse.Namespace,
    names: list[str],
    extras: list[str],
    daemon: Daemon | None,
) -> None:
    """The timed rounds, interleaved so that a busy spell hits every contender."""
    for i in range(a.repeat):
        print(f"round {i + 1}: bare loop", file=sys.stderr)
        r["bare"].append(run_bare(s, s.subs))
        print(f"round {i + 1}: bare loop, C heap kept between batches", file=sys.stderr)
        r["bare_kept"].append(run_bare(s, s.subs, keep=True))
        print(f"round {i + 1}: bare loop, heap kept, channels-last", file=sys.stderr)
        r["bare_channels_last"].append(run_bare(s, s.subs, keep=True, channels_last=True))
        for b in names:
            runs = r["harness"][b]
            if (runs and "skipped" in runs[0]) or (i > 0 and b != "process"):
                continue  # the isolated backends: round 1 only (minutes each)
            print(f"round {i + 1}: harness, {b} backend", file=sys.stderr)
            runs.append(run_harness(s, s.subs, b, jobs=a.jobs))
        for b in [b for b in names if daemon is not None and b + SERVED in r["harness"]]:
            assert daemon is not None
            if i == 0 and b != "process":  # its runners are warm from the start; theirs open now
                print(f"round {i + 1}: harness, {b} backend, grade serve opens", file=sys.stderr)
                r["served_first"][b] = run_served(s, daemon, b, a.jobs)
            print(f"round {i + 1}: harness, {b} backend, grade serve warm", file=sys.stderr)
            r["harness"][b + SERVED].append(run_served(s, daemon, b, a.jobs))
        for e in extras:
            r["harness"][f"process -j{e}"].append(run_extra(s, a, e))


def run_served(s: Setup, daemon: Daemon, backend: str, jobs: int) -> dict[str, Any]:
    """``backend``'s command with ``daemon`` answering: its CPU time includes the daemon
    tree's (the runs are the daemon's descendants, not the command's)."""
    before = daemon.cpu_s()
    with_daemon = Setup(**{**s.__dict__, "env": daemon.env})
    result = run_harness(with_daemon, s.subs, backend, jobs=jobs, tag=f"{backend}-served")
    time.sleep(0.3)  # each run's supervisor ends, and is reaped, once the command closed
    return {**result, "cpu_s": round(result["cpu_s"] + daemon.cpu_s() - before, 2)}


def correlation_suite(a: argparse.Namespace) -> dict[str, Any]:
    """The issue's batch: correlation submissions against bare and naive, every backend."""
    started = time.perf_counter()
    r: dict[str, Any] = {"machine": machine()}
    s = make_setup(a.work, a.submissions, a.images, a.cpus)
    r["config"] = {
        "task": "correlation",
        "submissions": len(s.subs),
        "images": s.images,
        "batch_size": s.batch_size,
        "jobs": a.jobs,
        "repeat": a.repeat,
        "variants": [v for v, _ in _variants()],
    }
    names = [b for b in a.backends.split(",") if b]
    s.env["HARNESS_SERVE_DIR"] = str(a.work / "no-serve")  # no `grade serve` answers there
    r["harness"] = {b: [] for b in names}
    r["bare"], r["bare_kept"], r["bare_channels_last"] = [], [], []
    for b in names:
        reason = backend_reason(b)
        if reason:
            print(f"skipping {b}: {reason}", file=sys.stderr)
            r["harness"][b] = [{"skipped": reason}]
    if a.served:
        r["served_first"] = {}  # a backend's first served command: it opens the sandboxes
        for b in [b for b in names if "skipped" not in (r["harness"][b] or [{}])[0]]:
            r["harness"][b + SERVED] = []
    extras = [e for e in a.extra_jobs.split(",") if e]
    for e in extras:
        r["harness"][f"process -j{e}"] = []
    with contextlib.ExitStack() as stack:
        daemon = None
        if a.served:
            daemon = stack.enter_context(grade_serve(a.work / "serve", s.env, ROOT))
        _rounds(r, s, a, names, extras, daemon)
    if not a.skip_naive:
        print("naive grader", file=sys.stderr)
        r["naive"] = run_naive(s, s.subs)
    print("re-grade", file=sys.stderr)
    r["regrade"] = run_regrade(s, s.subs[0])
    if r["harness"].get("process") and "skipped" not in r["harness"]["process"][0]:
        print("memory: 1 and all submissions, sampled", file=sys.stderr)
        one = run_harness(s, s.subs[:1], "process", jobs=a.jobs, tag="memory-1", watch=True)
        many = run_harness(s, s.subs, "process", jobs=a.jobs, tag="memory-n", watch=True)
        r["memory"] = {
            "rss_1_mb": one["peak_rss_mb"],
            "rss_n_mb": many["peak_rss_mb"],
            "rss_ratio": _ratio(many["peak_rss_mb"], one["peak_rss_mb"]),
            "tree_pss_1_mb": one["peak_tree_pss_mb"],
            "tree_pss_n_mb": many["peak_tree_pss_mb"],
        }
    r.update(_agreement(r))
    r["machine"]["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    r["summary"] = summarize(r)
    r["elapsed_s"] = round(time.perf_counter() - started, 1)
    a.out.write_text(json.dumps(r, indent=2) + "\n")
    print_table(r)
    print(f"wrote {a.out} ({r['elapsed_s']} s)")
    return r


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
