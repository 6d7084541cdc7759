"""Phase A (sandbox, CPU, the submission's code, no test inputs): build, load strictly, one
dry batch, ``torch.export`` with static shapes; the host receives ``program.pt2``."""

from __future__ import annotations

import dataclasses
import functools
from importlib import metadata

from ..counting import over_limit, over_message
from ..jobs import PROGRAM, export_batch, export_job_spec
from ..outputs import read_report
from ..results import Flag
from ..runner.contract import TORCH, torch_mismatch
from ..safefs import NotPlain, plain_file
from ..verdicts import Failed, interpret_run, reported_count
from .records import Counted, Ended, Exported


@functools.cache
def host_torch() -> str:
    """The host's torch release, from its installed metadata: reading it does not import
    torch (seconds of a grading's start; the host itself never runs torch code)."""
    try:
        return metadata.version("torch")
    except metadata.PackageNotFoundError:  # no torch on the host: only the image's, the pin
        return TORCH


def export(counted: Counted) -> Exported | Counted:
    """The exported program; or, where the task allows the eager fallback and the model
    could not be exported, ``counted`` again with a note saying so."""
    g = counted.grading
    assert g.sub.manifest is not None
    g.stage("export")
    ws, task = g.workspace, g.task
    files = [f for f in g.sub.files if f != counted.declared]
    name = counted.staged_name()
    sub_dir = ws.stage("export-sub", g.sub.path, files, extra={name: counted.weights})
    batch = export_batch(task, g.split.count)
    job = ws.job("export-job", export_job_spec(task, g.sub.manifest, name, batch))
    out = ws.output("export-out")
    no_inputs = ws.stage("export-inputs", g.sub.path, [])
    outcome = g.run_code(g.sandbox_job(sub_dir, job, out, code=True, inputs=no_inputs, gpu=False))
    notes = counted.notes.add(timing={"export_s": round(outcome.wall_seconds, 4)})
    verdict = interpret_run(outcome, "export")
    if verdict is None:
        reported = (read_report(outcome.output_dir) or {}).get("torch")
        wrong_torch = torch_mismatch(reported, host_torch())
        if wrong_torch is not None:  # the grader's setup, not the submission: re-graded
            raise Ended(Failed("failed", wrong_torch, "harness"), notes)
        try:
            program = plain_file(out, out / PROGRAM)
        except NotPlain as exc:
            raise Ended(Failed("failed", f"the exported program: {exc}", "export"), notes) from None
        return Exported(counted, notes, program, reported_count(outcome), batch)
    if over_limit(counted.count.counted, task.parameter_limit):
        params = notes.params.model_copy(update={"model_reported": reported_count(outcome)})
        notes = notes.add(params=params)
        message = over_message(params, task, None, counted.count.counted)
        raise Ended(Failed("over_limit", message, "count", verdict.output), notes)
    if verdict.stage == "export" and task.integrity.allow_eager_fallback:
        flag = Flag(code="export_failed", message=verdict.message)
        return dataclasses.replace(counted, notes=notes.add(flags=[flag]))
    raise Ended(verdict.failed(), notes)
