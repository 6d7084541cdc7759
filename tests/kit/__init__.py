"""The one test kit: tiny tasks, the small test network and submission folders.

Every corpus builder (``tests/hostile``, ``tests/cheats``, ``tests/trust``), the test
modules and the benchmarks build their submissions with these functions, so a change to
the public format (``shared/SUBMISSION_FORMAT.md``) is made here once.

- ``write_task``: a tiny regression task (``task.toml``) on generated correlation plots.
- ``TINY_MODEL``: the source of the 305-parameter network; ``honest_state`` its seeded
  weights without running any submission code; ``save_weights`` builds any model source in
  this (trusted) process and saves its weights; ``save_state`` writes a state dict.
- ``write_manifest`` / ``make_submission``: a submission folder in the public layout.
"""

from kit.folders import make_submission, write_manifest
from kit.model import TINY_MODEL, TINY_PARAMS, honest_state, save_state, save_weights
from kit.tasks import task_toml, write_task

__all__ = [
    "TINY_MODEL",
    "TINY_PARAMS",
    "honest_state",
    "make_submission",
    "save_state",
    "save_weights",
    "task_toml",
    "write_manifest",
    "write_task",
]
