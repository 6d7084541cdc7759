"""Check and count the exported program on the host (a zip of JSON and raw bytes; no
torch, no submission code): ``program.check`` refuses what phase B must not run and writes
a clean archive; ``counting`` counts every learned value the program can read;
``program.batch`` tries to prove each image's output depends on that image alone (then
phase B need not predict the split a second time to show it)."""

from __future__ import annotations

import time
from pathlib import Path

from .. import regenerate
from ..counting import (
    apart_flag,
    count_checked,
    over_limit,
    over_message,
    source_values,
    verified_params,
)
from ..jobs import rebuild_job_spec
from ..outputs import read_report
from ..program.batch import independence
from ..program.check import CheckError, Expect, check_program
from ..program.records import Program
from ..results import Flag
from ..verdicts import Failed, interpret_run, verified_flags
from .records import Checked, Ended, Exported


def check(exported: Exported) -> Checked:
    counted = exported.counted
    g, task = counted.grading, counted.grading.task
    g.stage("check")
    t = time.perf_counter()
    expect = Expect(
        input_shape=(exported.batch, *task.input_shape),
        kind=task.kind,
        num_classes=task.num_classes,
        max_bytes=task.limits.output_mb * 2**20,
        extra_ops=task.integrity.operators,
    )
    target = g.workspace.root / "checked.pt2"
    notes = exported.notes
    try:
        checked, _ = check_program(exported.program, target, expect)
    except CheckError as exc:
        if over_limit(counted.count.counted, task.parameter_limit):
            message = over_message(notes.params, task, None, counted.count.counted)
            raise Ended(Failed("over_limit", message, "count"), notes) from None
        message = f"the exported program was refused: {exc.message}"
        raise Ended(Failed("failed", message, "check"), notes) from None
    count = count_checked(checked, task, frozenset(), 0)
    proof = independence(checked, exported.batch)
    timing = {"check_s": round(time.perf_counter() - t, 4)}
    names = regenerate.candidates(count)
    if names:  # buffers that may be structural: does the code alone rebuild them?
        found = _regenerated(exported, checked, names, target, timing)
        if found:
            values = source_values(g.sub.path, regenerate.rebuild_files(g.sub.files))
            count = count_checked(checked, task, found, values)
    file = notes.params
    params = verified_params(file, count, exported.reported, task.parameter_limit)
    flags: list[Flag] = verified_flags(count, file, exported.reported, task.integrity.allowance)
    apart = apart_flag(count)
    flags.extend([apart] if apart else [])
    evidence = {"batch_independent": {"proven": proof.proven, "reason": proof.reason}}
    notes = notes.add(params=params, flags=flags, timing=timing, evidence=evidence)
    if over_limit(params.counted, params.limit):
        message = over_message(params, task, count, counted.count.counted)
        raise Ended(Failed("over_limit", message, "count"), notes)
    return Checked(exported, notes, target, proof.proven)


def _regenerated(
    exported: Exported,
    checked: Program,
    names: list[str],
    program: Path,
    timing: dict[str, float],
) -> frozenset[str]:
    """The rebuild run (the submission's code, no weights file, no inputs): which of
    ``names`` the code alone regenerates bit-identically. A failed run proves nothing."""
    g = exported.counted.grading
    assert g.sub.manifest is not None
    ws = g.workspace
    files = regenerate.rebuild_files(g.sub.files)  # the Python source alone
    sub_dir = ws.stage("rebuild-sub", g.sub.path, files)
    job = ws.job("rebuild-job", rebuild_job_spec(g.task, g.sub.manifest))
    out = ws.output("rebuild-out")
    no_inputs = ws.stage("rebuild-inputs", g.sub.path, [])
    outcome = g.run_code(g.sandbox_job(sub_dir, job, out, code=True, inputs=no_inputs, gpu=False))
    timing["rebuild_s"] = round(outcome.wall_seconds, 4)
    if interpret_run(outcome, "build") is not None:
        return frozenset()
    report = read_report(out) or {}
    return regenerate.regenerated(program, checked, names, report)
