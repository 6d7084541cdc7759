"""Phase A's export and save in a forked run, from a cold or a warm parent, side by side.

A pre-imported runner (the process backend's fork server, a bwrap or docker zygote)
forks each submission's export. Three parents, each a fresh interpreter that imports the
runner's stack (``forkserver.PRELOAD``, torchvision and timm) and forks one child per
model; the child builds the model (random weights) and times ``torch.export.export``
and the save:

- ``cold``: the parents as before: no export in the parent, ``torch.export.save``;
- ``warm``: the parent ran ``phase_a.warm_up()`` first (a tiny model exported in memory);
- ``warm+save``: that, and phase A's save (``phase_a.save``: without torch's test of the
  canonical form, which the archive does not depend on).

The parents run in turn, ``--rounds`` times; each model's median is kept.

    python benchmarks/export_warm_up.py                  # six zoo models, 2 rounds, ~2 min
    python benchmarks/export_warm_up.py --all --rounds 1 # the whole zoo
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = [
    "tv_resnet18",
    "tv_googlenet",
    "timm_ghostnet_050",
    "timm_mixnet_s",
    "timm_efficientformerv2_s0",
    "timm_levit_128s",
]
ROLES = ("cold", "warm", "warm+save")


def parent(role: str, names: list[str]) -> dict[str, list[float]]:
    """One parent: import the runner's stack, maybe warm up, fork a child per model."""
    sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
    from harness.sandbox.forkserver import PRELOAD

    for name in (*PRELOAD, "torchvision", "timm"):
        __import__(name)
    import torch
    from model_zoo import entries

    from harness.runner import phase_a

    torch.set_num_threads(1)
    if role != "cold":
        phase_a.warm_up()
    sources = {e.name: e for e in entries()}
    out: dict[str, list[float]] = {}
    for name in names:
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the run: build, export, save
            os.close(read)
            try:
                took = _export_once(sources[name], role, torch, phase_a)
            except Exception as exc:  # a model this torch cannot export: named, skipped
                took = f"{type(exc).__name__}: {str(exc)[:200]}"
            os.write(write, json.dumps(took).encode())
            os._exit(0)
        os.close(write)
        with os.fdopen(read) as fh:
            took = json.loads(fh.read() or '"the run died"')
        os.waitpid(pid, 0)
        if isinstance(took, list):
            out[name] = took
        else:
            print(f"skipped {name}: {took}", file=sys.stderr)
    return out


def _export_once(entry: Any, role: str, torch: Any, phase_a: Any) -> list[float]:
    """In the forked run: the model built (a training-mode batch builds lazy modules, as
    the zoo's tests do), then exported and saved; seconds for the export, the save, both."""
    namespace: dict[str, object] = {}
    exec(compile(entry.source, f"<{entry.name}>", "exec"), namespace)
    torch.manual_seed(0)
    model = namespace["build_model"]()  # type: ignore[operator]
    shape = (3, 32, 32) if entry.shape == "cifar" else (1, 28, 28)
    with torch.no_grad():
        model.train()
        model(torch.rand(8, *shape))
    model.eval()
    x = torch.rand(4, *shape)
    target = Path(f"/tmp/export-warm-up-{os.getpid()}.pt2")
    t = time.perf_counter()
    try:
        if role == "warm+save":
            phase_a.save(model, x, target)
            t1 = t2 = time.perf_counter()
        else:
            with torch.no_grad():
                program = torch.export.export(model, (x,), strict=False)
            t1 = time.perf_counter()
            torch.export.save(program, str(target))
            t2 = time.perf_counter()
    finally:
        target.unlink(missing_ok=True)
    return [t1 - t, t2 - t1, t2 - t]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--all", action="store_true", help="every model of tests/model_zoo.py")
    ap.add_argument("--rounds", type=int, default=2, help="the three parents, in turn, N times")
    ap.add_argument(
        "--out",
        type=Path,
        default=ROOT / "benchmarks" / "export_warm_up.json",
        help="the medians as JSON (default: benchmarks/export_warm_up.json)",
    )
    ap.add_argument("--role", choices=ROLES, help=argparse.SUPPRESS)  # a parent, internal
    ap.add_argument("names", nargs="*", help="zoo entries by name (default: six of them)")
    a = ap.parse_args()
    if a.all:
        sys.path[:0] = [str(ROOT / "tests")]
        from model_zoo import entries

        a.names = [e.name for e in entries()]
    names = a.names or DEFAULT
    if a.role:
        print(json.dumps(parent(a.role, names)))
        return
    totals: dict[str, dict[str, list[float]]] = {r: {n: [] for n in names} for r in ROLES}
    for rnd in range(a.rounds):
        for role in ROLES:
            done = subprocess.run(
                [sys.executable, __file__, "--role", role, *names],
                capture_output=True,
                text=True,
            )
            if done.returncode:
                sys.exit(f"the {role} parent failed:\n{done.stderr[-3000:]}")
            for name, (_, _, total) in json.loads(done.stdout.splitlines()[-1]).items():
                totals[role][name].append(total)
            skipped = [line for line in done.stderr.splitlines() if line.startswith("skipped ")]
            sys.stderr.write("".join(f"{line}\n" for line in skipped))
            print(f"round {rnd + 1}: {role} done", flush=True)
    rows: dict[str, Any] = {}
    print(f"\n{'model':32} " + " ".join(f"{r:>10}" for r in ROLES) + "  (s, median)")
    names = [n for n in names if all(totals[r][n] for r in ROLES)]  # exported in every role
    for name in names:
        med = {r: statistics.median(totals[r][name]) for r in ROLES}
        rows[name] = med
        print(f"{name:32} " + " ".join(f"{med[r]:10.3f}" for r in ROLES))
    sums = {r: sum(rows[n][r] for n in names) for r in ROLES}
    print(f"{'sum':32} " + " ".join(f"{sums[r]:10.3f}" for r in ROLES))
    ratios = {r: round(sums[r] / sums["cold"], 3) for r in ROLES}
    print("ratio to cold: " + ", ".join(f"{r} {v}" for r, v in ratios.items()))
    a.out.write_text(
        json.dumps({"models": rows, "sums": sums, "ratios": ratios, "rounds": a.rounds}, indent=1)
        + "\n"
    )
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
