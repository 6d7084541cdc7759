"""The course-scale case of the grading-speed benchmark: ``--suite course``.

    python benchmarks/grading_speed.py --suite course                       # 100 x 200
    python benchmarks/grading_speed.py --suite course --submissions 20 --backends docker

Many small submissions (a ~4 k-parameter model each: pooling and two linear layers on the
correlation task, seeded random weights) on a small hidden split, so inference is almost
nothing and what is left is the harness's fixed cost per submission: sandbox starts,
export, check, the determinism and probe re-runs, scoring, the documents. Per backend:
``(harness wall - bare wall) / submissions``, target under 1 s on docker. Writes ``--out``
(default ``benchmarks/results-course.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from grading_speed import (
    HISTORY,
    TRAINING,
    _ratio,
    backend_reason,
    machine,
    make_setup,
    run_bare,
    run_harness,
)
from kit import save_weights, write_manifest

TINY = '''"""A small model: 16 x 16 average pooling, two linear layers."""
from torch import nn


def build_model() -> nn.Module:
    return nn.Sequential(
        nn.AdaptiveAvgPool2d(16), nn.Flatten(), nn.Linear(256, 16), nn.ReLU(), nn.Linear(16, 1)
    )
'''
TARGET_FIXED_S = 1.0  # docker, per submission


def course_suite(a: argparse.Namespace) -> dict[str, Any]:
    started = time.perf_counter()
    count = a.submissions if a.submissions != 8 else 100  # 8: grading_speed's own default
    images = a.images if a.images != 5000 else 200
    work = a.work / "course"
    s = make_setup(work, count, images, write=_write, layout=False)
    r: dict[str, Any] = {
        "machine": machine(),
        "config": {"task": "correlation", "submissions": count, "images": s.images},
    }
    print("bare loop", file=sys.stderr)
    r["bare"] = run_bare(s, s.subs)
    r["harness"] = {}
    for b in [b for b in a.backends.split(",") if b]:
        reason = backend_reason(b)
        if reason:
            r["harness"][b] = {"skipped": reason}
            continue
        print(f"harness, {b} backend, {count} submissions", file=sys.stderr)
        r["harness"][b] = run_harness(s, s.subs, b, jobs=a.jobs, tag=f"course-{b}")
    r["summary"] = _summary(r, count)
    r["machine"]["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    r["elapsed_s"] = round(time.perf_counter() - started, 1)
    out = a.out if a.out.name != "results.json" else a.out.with_name("results-course.json")
    out.write_text(json.dumps(r, indent=2) + "\n")
    _print(r)
    print(f"wrote {out} ({r['elapsed_s']} s)")
    return r


def _write(root: Path, i: int) -> Path:
    folder = root / f"student{i + 1:03d}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    (folder / "model.py").write_text(TINY)
    notes = f"benchmark: a small model, random weights (seed {i})"
    training = TRAINING | {"notes": notes}
    write_manifest(folder, task="correlation", members=["benchmark"], training=training)
    (folder / "history.csv").write_text(HISTORY)
    save_weights(TINY, folder, seed=i)
    return folder


def _summary(r: dict[str, Any], count: int) -> dict[str, Any]:
    bare = r["bare"]["wall_s"]
    rows: dict[str, Any] = {}
    for name, h in r["harness"].items():
        if "skipped" in h:
            rows[name] = {"skipped": h["skipped"]}
            continue
        fixed = (h["wall_s"] - bare) / count
        rows[name] = {
            "harness_s": h["wall_s"],
            "bare_s": bare,
            "harness_over_bare": _ratio(h["wall_s"], bare),
            "fixed_s_per_submission": round(fixed, 3),
            "statuses": h["statuses"],
            "jobs": h["jobs"],
        }
    docker = rows.get("docker", {})
    met = (
        None
        if "fixed_s_per_submission" not in docker
        else (docker["fixed_s_per_submission"] < TARGET_FIXED_S)
    )
    return {"backends": rows, "target_docker_fixed_s": TARGET_FIXED_S, "docker_met": met}


def _print(r: dict[str, Any]) -> None:
    c = r["config"]
    print(f"{c['submissions']} submissions x {c['images']} images; bare {r['bare']['wall_s']} s")
    for name, row in r["summary"]["backends"].items():
        if "skipped" in row:
            print(f"  {name}: skipped ({row['skipped']})")
            continue
        print(
            f"  {name}: {row['harness_s']} s, {row['harness_over_bare']}x bare, "
            f"fixed cost {row['fixed_s_per_submission']} s per submission, {row['statuses']}"
        )
    print(f"  target: docker fixed cost < {TARGET_FIXED_S} s: {r['summary']['docker_met']}")
