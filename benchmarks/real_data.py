"""The real-data case of the grading-speed benchmark: ``--suite fashion-mnist``.

    python benchmarks/grading_speed.py --suite fashion-mnist [--backends process,docker]

The fashion-mnist task's trained references (their committed weights) and 8 student-style
models (MLPs, LeNet, small CNNs, a small ResNet; seeded random weights: timing needs no
training) graded on the 10,000 real test images of Fashion-MNIST (Debian's
``dataset-fashion-mnist``, copied into ``--work``'s data root by the provider), by the
harness on each backend against the bare loop over the same prepared array. Writes
``--out`` (default ``benchmarks/results-fashion-mnist.json``).
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
    PY,
    ROOT,
    Setup,
    _ratio,
    backend_reason,
    machine,
    run_bare,
    run_harness,
)
from kit import save_weights, write_manifest  # tests/ is on the path: grading_speed puts it there

_HEAD = "import torch\nfrom torch import nn\n\n\n"
STUDENT_MODELS = {
    "mlp": "def build_model():\n    return nn.Sequential(nn.Flatten(), nn.Linear(784, 256), "
    "nn.ReLU(), nn.Linear(256, 10))\n",
    "mlp-deep": "def build_model():\n    return nn.Sequential(nn.Flatten(), nn.Linear(784, 256), "
    "nn.ReLU(), nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), "
    "nn.Linear(64, 10))\n",
    "lenet": "def build_model():\n    return nn.Sequential(nn.Conv2d(1, 6, 5), nn.ReLU(), "
    "nn.MaxPool2d(2), nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), "
    "nn.Linear(256, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10))\n",
    "cnn-small": "def build_model():\n    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), "
    "nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), "
    "nn.Flatten(), nn.Linear(784, 10))\n",
    "cnn-gap": "def build_model():\n    return nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), "
    "nn.BatchNorm2d(32), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1), nn.BatchNorm2d(32), "
    "nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), "
    "nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10))\n",
    "cnn-dropout": "def build_model():\n    return nn.Sequential(nn.Conv2d(1, 16, 3), nn.ReLU(), "
    "nn.Conv2d(16, 32, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Dropout(0.25), nn.Flatten(), "
    "nn.Linear(32 * 12 * 12, 64), nn.ReLU(), nn.Dropout(0.5), nn.Linear(64, 10))\n",
    "resnet-tiny": """class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c),
                               nn.ReLU(), nn.Conv2d(c, c, 3, padding=1, bias=False),
                               nn.BatchNorm2d(c))

    def forward(self, x):
        return torch.relu(x + self.a(x))


def build_model():
    return nn.Sequential(nn.Conv2d(1, 24, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         Block(24), nn.MaxPool2d(2), Block(24), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(24, 10))
""",
    "logistic": "def build_model():\n    return nn.Sequential(nn.Flatten(), nn.Linear(784, 10))\n",
}
TRAINING = {"optimizer": "Adam", "learning_rate": 0.001, "epochs": 2, "history": "history.csv"}


def student(folder: Path, variant: str, seed: int) -> Path:
    """A submission folder for one student-style model with seeded random weights."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    source = _HEAD + STUDENT_MODELS[variant]
    (folder / "model.py").write_text(source)
    notes = f"benchmark: {variant}, random weights (seed {seed})"
    write_manifest(folder, task="fashion-mnist", members=None, training=TRAINING | {"notes": notes})
    (folder / "history.csv").write_text(HISTORY)
    save_weights(source, folder, seed=seed)
    return folder


def fashion_suite(a: argparse.Namespace) -> dict[str, Any]:
    """References + 8 students on the 10,000 real test images: harness against bare."""
    from harness.data import prepare_split
    from harness.tasks import load_task

    started = time.perf_counter()
    data_root = a.work / "data"
    task = load_task("fashion-mnist")
    split = prepare_split(task, task.splits.hidden, data_root=data_root)
    references = [ROOT / ref.path for ref in task.references]
    missing = [r for r in references if not (r / "weights.safetensors").is_file()]
    if missing:
        raise SystemExit(f"{missing[0]}: no trained weights (train.py writes them)")
    students = [
        student(a.work / "fashion-students" / f"student-{v}", v, i)
        for i, v in enumerate(STUDENT_MODELS)
    ]
    subs = references + students
    env = {**os.environ, "HARNESS_TASKS": str(ROOT / "tasks")}
    setup = Setup(
        a.work,
        env,
        split.inputs_path,
        split.folder / "labels.npy",
        a.work,
        task.batch_size,
        split.count,
        subs,
    )
    print(f"bare loop: {len(subs)} models on {split.count} images", file=sys.stderr)
    bare = run_bare(setup, subs)
    extra = ["--data-root", str(data_root)]
    harness: dict[str, Any] = {}
    for b in [b for b in a.backends.split(",") if b]:
        reason = backend_reason(b)
        if reason:
            harness[b] = {"skipped": reason}
            continue
        print(f"harness, {b} backend", file=sys.stderr)
        harness[b] = run_harness(setup, subs, b, jobs=a.jobs, tag=f"fashion-{b}", extra=extra)
    bare_acc = {Path(m["path"]).name: m.get("accuracy") for m in bare["models"]}
    r = {
        "machine": machine(),
        "suite": "fashion-mnist",
        "config": {
            "images": split.count,
            "references": [str(p.relative_to(ROOT)) for p in references],
            "students": list(STUDENT_MODELS),
            "jobs": a.jobs,
            "command": " ".join([Path(PY).name, *sys.argv]),
        },
        "bare": bare,
        "harness": harness,
        "summary": {
            b: {
                "harness_s": h["wall_s"],
                "bare_s": bare["wall_s"],
                "harness_over_bare": _ratio(h["wall_s"], bare["wall_s"]),
                "statuses": h["statuses"],
            }
            for b, h in harness.items()
            if "skipped" not in h
        },
        "reference_accuracy_bare": {p.name: bare_acc.get(p.name) for p in references},
        "elapsed_s": round(time.perf_counter() - started, 1),
    }
    r["machine"]["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    out = a.out if a.out.name != "results.json" else a.out.with_name("results-fashion-mnist.json")
    out.write_text(json.dumps(r, indent=2) + "\n")
    print(json.dumps(r["summary"], indent=2))
    return r
