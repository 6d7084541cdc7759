"""How many real architectures the batch-independence proof covers (``program/batch.py``).

For every model in the real-model zoo (``tests/model_zoo.py``): export it with
``torch.export`` at a batch of 4, check it as the host does, run the proof, and for each
proved model test the claim: image 0 alone, and at the last place beside other images,
gives the same outputs within the determinism check's tolerance (a few 1e-8 apart is
rounding that eager PyTorch shows as well). A proved program skips phase B's whole-split re-run.

    python benchmarks/batch_proof.py              # the whole zoo, about 3 minutes here
    python benchmarks/batch_proof.py swin lstm    # the entries whose names contain these
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
import types
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from model_zoo import entries  # noqa: E402

from harness.program.batch import independence  # noqa: E402
from harness.program.check import Expect, check_program  # noqa: E402

B = 4


def one(entry, work: Path) -> dict[str, object]:  # type: ignore[no-untyped-def]
    module = types.ModuleType(f"zoo_{entry.name}")
    exec(entry.source, module.__dict__)
    torch.manual_seed(0)
    model = module.build_model().eval()
    shape = (B, 3, 32, 32) if entry.shape == "cifar" else (B, 1, 28, 28)
    x = torch.rand(shape)
    with torch.no_grad():
        model(x)  # lazy modules take their shapes here, as in phase A's dry batch
        exported = torch.export.export(model, (x,), strict=False)
    torch.export.save(exported, str(work / "p.pt2"))
    checked, _ = check_program(
        work / "p.pt2", work / "c.pt2", Expect(shape, "classification", 10, 2**30)
    )
    proof = independence(checked, B)
    row: dict[str, object] = {"proven": proof.proven, "reason": proof.reason}
    if proof.proven:
        run = exported.module()
        with torch.no_grad():
            alone = run(x)[0]
            y = torch.rand(shape)
            y[B - 1] = x[0]
            diff = float((alone - run(y)[B - 1]).abs().max())
            row["max_abs_diff"] = diff  # kernels round a row by its place (eager too)
            row["claim_holds"] = diff <= 1e-4 * (1 + float(alone.abs().max()))
    return row


def main() -> None:
    wanted = sys.argv[1:]
    rows: dict[str, dict[str, object]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for entry in entries():
            if wanted and not any(w in entry.name for w in wanted):
                continue
            t0 = time.perf_counter()
            try:
                row = one(entry, Path(tmp))
            except Exception as exc:  # noqa: BLE001 - a model that does not export here
                row = {"proven": None, "reason": f"{type(exc).__name__}: {str(exc)[:120]}"}
            rows[entry.name] = row
            mark = {True: "proved", False: "no", None: "error"}[row["proven"]]  # type: ignore[index]
            extra = "" if row["proven"] else f"  {row['reason']}"
            if row.get("claim_holds") is False:
                extra = "  CLAIM FAILS: outputs changed with the batch"
            print(f"{entry.name:34s} {mark:7s}{extra} ({time.perf_counter() - t0:.1f} s)")
    proved = sum(r["proven"] is True for r in rows.values())
    broken = [n for n, r in rows.items() if r.get("claim_holds") is False]
    print(f"{proved} of {len(rows)} proved; claim failed for {len(broken)}: {broken}")
    if not wanted:
        out = ROOT / "benchmarks" / "batch_proof.json"
        out.write_text(json.dumps({"torch": torch.__version__, "rows": rows}, indent=1))
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
