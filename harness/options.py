"""What a grading run is asked to do: the options every stage and executor reads. A frozen
record, imported by the stages below the API (no stage imports the API)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Mode = Literal["grade", "check"]
OnStage = Callable[[str, str, str], None]  # (task, team, stage): see harness/progress.py


@dataclass(frozen=True)
class GradeOptions:
    sandbox: str | None = None  # None: docker when usable here, else bwrap, else refuse
    data_root: Path | None = None
    results_dir: Path = Path("results")
    tasks_dir: Path | None = None
    force: bool = False  # re-grade even when an identical grading is stored
    jobs: int = 0  # submissions graded at once; 0: one per CPU core (executors.jobs_for)
    reports: bool = True
    gpu: bool | None = None  # None: use a GPU when the task allows and one is present
    executor: str = "local"  # where gradings run: "local" (this machine) or "ray"
    address: str | None = None  # the Ray cluster; None starts a local Ray instance
    task: str | None = None  # `--task`: the one task this batch grades (manifests must agree)
    roster: Path | None = None  # `--roster`: folder,team,members; else team = folder name
