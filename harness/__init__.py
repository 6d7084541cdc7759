"""harness: grade students' PyTorch models, sandboxed, parameter-verified, ranked.

Public names are imported lazily so that ``harness.runner``, which runs inside the
sandbox, never pulls in the host-side dependencies.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["GradeOptions", "ResultDocument", "UserError", "check", "grade", "load_task"]

if TYPE_CHECKING:
    from .api import GradeOptions, check, grade
    from .errors import UserError
    from .results import ResultDocument
    from .tasks import load_task

_WHERE = {
    "GradeOptions": "api",
    "check": "api",
    "grade": "api",
    "ResultDocument": "results",
    "UserError": "errors",
    "load_task": "tasks",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module 'harness' has no attribute {name!r}")
